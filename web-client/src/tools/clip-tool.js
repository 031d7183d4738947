// Move a clipping plane through the anatomy, for everyone (clip.set / clip.clear, planes in model space).
// Desktop: pick an anatomical axis, then click the anatomy to put the plane there, drag up and down (or use
// the slider) to move it. Headset: hold the trigger; the plane goes through the controller's tip, facing
// where it points (what lies ahead is kept). The plane being moved is the last one I set.
import { Vector3 } from 'three';

import { Hit } from '../scene/hit.js';
import { round6 } from './round6.js';
import { Throttle } from './throttle.js';

// Normals in model space (glTF: +X left, +Y superior, +Z anterior). The kept side is where the normal points.
export const AXES = {
	axial: { title: 'Axial', normal: [0, -1, 0] }, // cuts the top off
	coronal: { title: 'Coronal', normal: [0, 0, -1] }, // cuts the front off
	sagittal: { title: 'Sagittal', normal: [-1, 0, 0] }, // cuts the left side off
};
const SEND_INTERVAL_MS = 100;
const TIP = new Vector3(0, 0, -0.05);
const _n = new Vector3();
const _p = new Vector3();
const _tip = new Vector3();
const _centre = new Vector3();

export class ClipTool {
	constructor(context) {
		this.context = context;
		this.id = 'clip';
		this.title = 'Clip';
		this.kind = 'clip.set';
		this.hint = 'Choose an axis, click the anatomy and drag up/down (or hold the trigger) to move a clip plane.';
		this.axis = 'axial';
		this.planeId = null; // the plane I move
		this.creating = false;
		this.pending = null;
		this.offset = 0; // m from the patient's centre along the axis normal
		this.hit = new Hit();
		this.dragY = null;
		this.throttle = new Throttle(SEND_INTERVAL_MS, (plane) => this.send(plane));
	}

	/** The plane I move, if it still exists in the room. */
	myPlane() {
		const state = this.context.state();
		return this.planeId && state?.clips.has(this.planeId) ? state.clips.get(this.planeId) : null;
	}

	async send(plane) {
		if (this.creating) {
			this.pending = plane; // sent once the new plane has its id
			return;
		}
		const fields = { plane };
		if (this.myPlane()) fields.id = this.planeId;
		else this.creating = true;
		const ack = await this.context.send('clip.set', fields);
		if (fields.id === undefined) {
			this.creating = false;
			if (ack) this.planeId = `c${ack.seq}`;
			const pending = this.pending;
			this.pending = null;
			if (pending && ack) this.send(pending);
		}
	}

	/** The half extent of the patient along the current axis (for the slider), in m. */
	extent() {
		const size = this.context.stage.bounds.getSize(_p);
		const n = AXES[this.axis].normal;
		return Math.abs(n[0]) * size.x / 2 + Math.abs(n[1]) * size.y / 2 + Math.abs(n[2]) * size.z / 2;
	}

	/** Put the plane at `offset` m from the patient's centre along the axis (the slider). */
	setOffset(offset) {
		this.offset = offset;
		const n = _n.fromArray(AXES[this.axis].normal);
		this.context.stage.bounds.getCenter(_centre);
		_p.copy(_centre).addScaledVector(n, offset);
		this.throttle.push({ normal: AXES[this.axis].normal, constant: round6(-n.dot(_p)) });
	}

	setAxis(axis) {
		if (!AXES[axis]) return;
		this.axis = axis;
		this.planeId = null; // a new axis starts a new plane
	}

	press(input) {
		const c = this.context;
		if (input.controller) {
			this.follow(input.controller);
			return true;
		}
		if (!c.pick(input.ray, this.hit)) {
			c.notify('Click the anatomy where the plane should go', 'warn');
			return false;
		}
		const n = _n.fromArray(AXES[this.axis].normal);
		this.offset = n.dot(this.hit.modelPoint) - n.dot(c.stage.bounds.getCenter(_centre));
		this.setOffset(this.offset);
		this.dragY = input.event?.clientY ?? null;
		return true;
	}

	move(input) {
		if (input.controller) {
			this.follow(input.controller);
			return;
		}
		if (this.dragY === null || input.event == null) return;
		const dy = input.event.clientY - this.dragY;
		this.dragY = input.event.clientY;
		const extent = this.extent();
		this.setOffset(Math.max(-extent, Math.min(extent, this.offset + dy * 0.0005)));
	}

	release() {
		this.dragY = null;
		this.throttle.flush();
	}

	/** Plane through the controller's tip, facing where the controller points (model space). */
	follow(controller) {
		const c = this.context;
		_tip.copy(TIP).applyMatrix4(controller.matrixWorld);
		c.toModel(_tip, _p);
		controller.getWorldDirection(_n).negate(); // a controller points along its -Z
		c.directionToModel(_n);
		this.throttle.push({ point: [round6(_p.x), round6(_p.y), round6(_p.z)], normal: [round6(_n.x), round6(_n.y), round6(_n.z)] });
	}

	clearAll() {
		this.planeId = null;
		this.context.send('clip.clear', {});
	}
}
