// My pose for the others' avatars: the head, and the controllers in a headset, in model space, at most 20
// times a second, and only what moved (an unchanged pose now and then, so that my avatar does not expire).
import { Matrix4, Quaternion, Vector3 } from 'three';

const POSE_INTERVAL_MS = 50; // 20 Hz, under the protocol's 30 Hz
const POSE_KEEPALIVE_MS = 2000; // an unchanged pose is still sent now and then (avatars expire after 10 s)
const PARTS = ['head', 'left', 'right'];

export class PoseSender {
	constructor(stage, room, xr) {
		this.stage = stage;
		this.room = room;
		this.xr = xr;
		this.last = 0;
		this.lastSent = 0;
		this.inverse = new Matrix4();
		this.modelQ = new Quaternion();
		this.p = new Vector3();
		this.q = new Quaternion();
		this.s = new Vector3();
		this.previous = new Float64Array(PARTS.length * 7).fill(NaN);
		this.parts = { head: part(), left: part(), right: part() };
		this.message = { head: this.parts.head };
	}

	update(time) {
		if (time - this.last < POSE_INTERVAL_MS || this.room.status !== 'live' || this.stage.bounds.isEmpty()) return;
		this.last = time;
		const stage = this.stage;
		this.inverse.copy(stage.modelFrame.matrixWorld).invert();
		stage.modelWorldQuaternion(this.modelQ).invert();
		const message = this.message;
		this.write(this.parts.head, stage.camera.matrixWorld);
		delete message.left;
		delete message.right;
		if (this.xr.presenting) {
			const hands = this.xr.hands;
			for (let i = 0; i < hands.length; i++) {
				const h = hands[i];
				if (!h.inputSource || (h.handedness !== 'left' && h.handedness !== 'right')) continue;
				this.write(this.parts[h.handedness], h.controller.matrixWorld);
				message[h.handedness] = this.parts[h.handedness];
			}
		}
		// Send what moved (more than 0.1 mm or 1e-4 of a quaternion), and now and then the same again.
		let moved = false;
		let k = 0;
		for (let p = 0; p < PARTS.length; p++) {
			const part = message[PARTS[p]];
			for (let i = 0; i < 7; i++) {
				const value = part ? (i < 3 ? part.position[i] : part.quaternion[i - 3]) : NaN;
				const previous = this.previous[k];
				const same = Number.isNaN(value) ? Number.isNaN(previous) : Math.abs(value - previous) <= 1e-4;
				if (!same) moved = true;
				this.previous[k++] = value;
			}
		}
		if (!moved && time - this.lastSent < POSE_KEEPALIVE_MS) return;
		this.lastSent = time;
		this.room.sendPose(message); // encoded at once, so the arrays can be reused
	}

	write(target, worldMatrix) {
		worldMatrix.decompose(this.p, this.q, this.s);
		this.p.applyMatrix4(this.inverse);
		this.q.premultiply(this.modelQ).normalize();
		target.position[0] = clamp(this.p.x);
		target.position[1] = clamp(this.p.y);
		target.position[2] = clamp(this.p.z);
		target.quaternion[0] = this.q.x;
		target.quaternion[1] = this.q.y;
		target.quaternion[2] = this.q.z;
		target.quaternion[3] = this.q.w;
	}
}

function clamp(v) {
	return Math.max(-99, Math.min(99, Math.round(v * 1e4) / 1e4)); // the hub's bound is ±100 m
}

function part() {
	return { position: [0, 0, 0], quaternion: [0, 0, 0, 1] };
}
