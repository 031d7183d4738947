// Avatars: every other participant as a head and controllers with a ray, a name tag and their role colour,
// interpolated between the server's pose ticks (~20 Hz). Poses arrive in model space and are placed through
// the model's current transform, so they line up on every client. All avatars share five draw calls (heads,
// visors, hands, rays, name tags); a frame writes into preallocated buffers and allocates nothing.
import {
	BoxGeometry, BufferAttribute, BufferGeometry, Color, DynamicDrawUsage, LineBasicMaterial, LineSegments, Matrix4,
	MeshStandardMaterial, Quaternion, SphereGeometry, Vector3,
} from 'three';

import { coloredInstances } from './instancing.js';
import { LabelLayer } from './labels.js';
import { ROLE_COLORS } from './roles.js';

const CAPACITY = 64; // participants present at once (RoomLimits.max_participants)
const PARTS = ['head', 'left', 'right'];
const BLEND_S = 0.07; // a little more than one pose tick
const RAY_LENGTH = 0.6;

class Part {
	constructor() {
		this.has = false;
		this.fromP = new Vector3();
		this.fromQ = new Quaternion();
		this.toP = new Vector3();
		this.toQ = new Quaternion();
		this.p = new Vector3();
		this.q = new Quaternion();
	}
}

class Avatar {
	constructor(pid) {
		this.pid = pid;
		this.parts = { head: new Part(), left: new Part(), right: new Part() };
		this.since = 0;
		this.color = new Color();
		this.tag = '';
	}
}

const _m = new Matrix4();
const _p = new Vector3();
const _q = new Quaternion();
const _modelQ = new Quaternion();
const _one = new Vector3(1, 1, 1);
const _visorOffset = new Vector3(0, 0.01, -0.085);
const _forward = new Vector3();

export class Avatars {
	constructor(stage, atlas) {
		this.stage = stage;
		this.avatars = new Map();
		this.list = []; // the same avatars, for an iteration that allocates nothing
		this.me = null;
		this.now = 0;
		const standard = (color) => new MeshStandardMaterial({ color, roughness: 0.6 });
		this.heads = coloredInstances(new SphereGeometry(0.1, 20, 14).scale(0.85, 1.05, 1), standard(0xffffff), CAPACITY);
		this.visors = coloredInstances(new BoxGeometry(0.15, 0.05, 0.05), standard(0x15181d), CAPACITY);
		this.hands = coloredInstances(new BoxGeometry(0.035, 0.03, 0.11), standard(0xffffff), CAPACITY * 2);
		const rayGeometry = new BufferGeometry();
		rayGeometry.setAttribute('position', new BufferAttribute(new Float32Array(CAPACITY * 2 * 2 * 3), 3).setUsage(DynamicDrawUsage));
		rayGeometry.setAttribute('color', new BufferAttribute(new Float32Array(CAPACITY * 2 * 2 * 3), 3).setUsage(DynamicDrawUsage));
		this.rays = new LineSegments(rayGeometry, new LineBasicMaterial({ vertexColors: true, transparent: true, opacity: 0.7 }));
		this.tags = new LabelLayer(atlas, CAPACITY, { height: 0.035, lift: 0.13 });
		this.rays.frustumCulled = false;
		stage.scene.add(this.heads, this.visors, this.hands, this.rays, this.tags);
	}

	/** Apply a `poses` frame {poses: {pid: pose}, gone: [pid]}; my own pseudonym is ignored. */
	receive(frame, state) {
		let changed = false;
		for (const [pid, pose] of Object.entries(frame.poses || {})) {
			if (pid === this.me) continue;
			let avatar = this.avatars.get(pid);
			if (!avatar) {
				avatar = new Avatar(pid);
				this.avatars.set(pid, avatar);
				this.list.push(avatar);
				this.describe(avatar, state);
			}
			for (const name of PARTS) {
				const part = avatar.parts[name];
				const value = pose[name];
				if (!value) {
					part.has = false;
					continue;
				}
				part.fromP.copy(part.has ? part.p : _p.fromArray(value.position));
				part.fromQ.copy(part.has ? part.q : _q.fromArray(value.quaternion));
				part.toP.fromArray(value.position);
				part.toQ.fromArray(value.quaternion);
				part.has = true;
			}
			avatar.since = this.now;
			changed = true;
		}
		for (const pid of frame.gone || []) this.remove(pid);
		if (changed) this.stage.invalidate();
	}

	/** Refresh names and role colours (after a join, a role change ...). */
	refresh(state) {
		for (const avatar of this.avatars.values()) {
			const participant = state.participants.get(avatar.pid);
			if (!participant || !participant.present) this.remove(avatar.pid);
			else this.describe(avatar, state);
		}
	}

	describe(avatar, state) {
		const participant = state.participants.get(avatar.pid);
		const role = participant?.role ?? 'observer';
		avatar.color.set(ROLE_COLORS[role]);
		avatar.tag = participant ? `${participant.name} · ${role}` : avatar.pid;
		avatar.tagColor = ROLE_COLORS[role];
	}

	remove(pid) {
		const avatar = this.avatars.get(pid);
		if (!avatar) return;
		this.avatars.delete(pid);
		this.list.splice(this.list.indexOf(avatar), 1);
		this.tags.remove(pid);
		this.stage.invalidate();
	}

	/** The leader's interpolated head in world space (for follow-me); false if not known. */
	headWorld(pid, position, quaternion) {
		const avatar = this.avatars.get(pid);
		if (!avatar || !avatar.parts.head.has) return false;
		const head = avatar.parts.head;
		position.copy(head.p).applyMatrix4(this.stage.modelFrame.matrixWorld);
		quaternion.copy(this.stage.modelWorldQuaternion(_modelQ)).multiply(head.q);
		return true;
	}

	/** Per frame: interpolate and write the instance buffers. */
	update(timeMs) {
		this.now = timeMs / 1000;
		const modelMatrix = this.stage.modelFrame.matrixWorld;
		this.stage.modelWorldQuaternion(_modelQ);
		const positions = this.rays.geometry.attributes.position;
		const colors = this.rays.geometry.attributes.color;
		let heads = 0;
		let hands = 0;
		let rayVertex = 0;
		const list = this.list;
		if (list.length === 0 && this.heads.count === 0) return;
		for (let k = 0; k < list.length; k++) {
			const avatar = list[k];
			const t = Math.min(1, (this.now - avatar.since) / BLEND_S);
			if (t < 1) this.stage.invalidate(); // still gliding toward the last pose
			for (let i = 0; i < PARTS.length; i++) {
				const part = avatar.parts[PARTS[i]];
				if (!part.has) continue;
				part.p.lerpVectors(part.fromP, part.toP, t);
				part.q.slerpQuaternions(part.fromQ, part.toQ, t);
				_p.copy(part.p).applyMatrix4(modelMatrix);
				_q.copy(_modelQ).multiply(part.q);
				_m.compose(_p, _q, _one);
				if (i === 0) {
					this.heads.setMatrixAt(heads, _m);
					this.heads.setColorAt(heads, avatar.color);
					_forward.copy(_visorOffset).applyQuaternion(_q).add(_p);
					_m.compose(_forward, _q, _one);
					this.visors.setMatrixAt(heads, _m);
					heads += 1;
					this.tags.set(avatar.pid, avatar.tag, avatar.tagColor, _p.x, _p.y, _p.z);
				} else {
					this.hands.setMatrixAt(hands, _m);
					this.hands.setColorAt(hands, avatar.color);
					hands += 1;
					_forward.set(0, 0, -RAY_LENGTH).applyQuaternion(_q).add(_p);
					positions.setXYZ(rayVertex, _p.x, _p.y, _p.z);
					positions.setXYZ(rayVertex + 1, _forward.x, _forward.y, _forward.z);
					colors.setXYZ(rayVertex, avatar.color.r, avatar.color.g, avatar.color.b);
					colors.setXYZ(rayVertex + 1, avatar.color.r * 0.2, avatar.color.g * 0.2, avatar.color.b * 0.2);
					rayVertex += 2;
				}
			}
		}
		this.heads.count = heads;
		this.visors.count = heads;
		this.hands.count = hands;
		this.rays.geometry.setDrawRange(0, rayVertex);
		touch(this.heads);
		touch(this.visors);
		touch(this.hands);
		positions.needsUpdate = true;
		colors.needsUpdate = true;
	}
}

function touch(mesh) {
	mesh.instanceMatrix.needsUpdate = true;
	mesh.instanceColor.needsUpdate = true;
}
