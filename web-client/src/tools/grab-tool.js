// Grab, rotate and scale the model (model.transform), where the role allows it and the model is not locked.
// Desktop: drag to rotate, Shift+drag to move, the wheel to scale. Headset: squeeze (or the trigger with
// this tool) to hold the model with a controller; with both controllers, pull apart to scale.
// The model moves locally at once; the room gets the transform at most 10 times a second, and the last one.
import { Matrix4, Quaternion, Vector3 } from 'three';

import { round6 } from './round6.js';
import { Throttle } from './throttle.js';

const SEND_INTERVAL_MS = 100;
const MIN_SCALE = 0.1;
const MAX_SCALE = 10;
const _m = new Matrix4();
const _inverse = new Matrix4();
const _axis = new Vector3();
const _q = new Quaternion();
const _p = new Vector3();
const _s = new Vector3();

export class GrabTool {
	constructor(context) {
		this.context = context;
		this.id = 'grab';
		this.title = 'Grab';
		this.kind = 'model.transform';
		this.hint = 'Drag to rotate the model, Shift+drag to move it, the wheel to scale it.';
		this.holds = new Map(); // source -> {controller, offset: Matrix4} while held by a controller
		this.mouse = null;
		this.twoHands = null;
		this.throttle = new Throttle(SEND_INTERVAL_MS, (fields) => this.send(fields));
	}

	/** Send a transform; refused, the model goes back to where the room has it. */
	async send(fields) {
		const ack = await this.context.send('model.transform', fields);
		const state = this.context.state();
		if (!ack && state) this.context.stage.setModelTransform(state.model);
	}

	/** Whether someone here is moving the model (then the room's echoes must not fight the hand). */
	get active() {
		return this.holds.size > 0 || this.mouse !== null;
	}

	/** Place the model where the room has it, unless it is being moved here. */
	render(state) {
		if (!this.active) this.context.stage.setModelTransform(state.model);
	}

	press(input) {
		const root = this.context.stage.modelRoot;
		if (input.controller) {
			const offset = new Matrix4().copy(input.controller.matrixWorld).invert().multiply(root.matrixWorld);
			this.holds.set(input.source, { controller: input.controller, offset });
			if (this.holds.size === 2) {
				const [a, b] = [...this.holds.values()];
				this.twoHands = { distance: distance(a.controller, b.controller), scale: root.scale.x };
			}
			return true;
		}
		this.mouse = { x: input.event.clientX, y: input.event.clientY, shift: input.event.shiftKey };
		return true;
	}

	move(input) {
		const stage = this.context.stage;
		const root = stage.modelRoot;
		if (input.controller) {
			const hold = this.holds.get(input.source);
			if (!hold) return;
			if (this.twoHands && this.holds.size === 2) {
				const [a, b] = [...this.holds.values()];
				const ratio = distance(a.controller, b.controller) / Math.max(1e-3, this.twoHands.distance);
				root.scale.setScalar(clamp(this.twoHands.scale * ratio, MIN_SCALE, MAX_SCALE));
			} else {
				// world = controller * offset; the model's parent (the table) has no rotation or scale.
				_m.multiplyMatrices(hold.controller.matrixWorld, hold.offset);
				_inverse.copy(root.parent.matrixWorld).invert();
				_m.premultiply(_inverse).decompose(_p, _q, _s);
				root.position.copy(_p);
				root.quaternion.copy(_q);
			}
			root.updateMatrixWorld(true);
			this.push();
			return;
		}
		if (!this.mouse) return;
		const dx = input.event.clientX - this.mouse.x;
		const dy = input.event.clientY - this.mouse.y;
		this.mouse.x = input.event.clientX;
		this.mouse.y = input.event.clientY;
		const camera = stage.camera;
		if (this.mouse.shift || input.event.shiftKey) {
			const k = camera.position.distanceTo(stage.patientCentre(_p)) * 0.0015;
			_axis.set(1, 0, 0).applyQuaternion(camera.quaternion).multiplyScalar(dx * k);
			root.position.add(_axis);
			_axis.set(0, 1, 0).applyQuaternion(camera.quaternion).multiplyScalar(-dy * k);
			root.position.add(_axis);
		} else {
			root.quaternion.premultiply(_q.setFromAxisAngle(_axis.set(0, 1, 0), dx * 0.01));
			_axis.set(1, 0, 0).applyQuaternion(camera.quaternion);
			root.quaternion.premultiply(_q.setFromAxisAngle(_axis, dy * 0.01));
		}
		root.updateMatrixWorld(true);
		this.push();
	}

	release(input) {
		if (input.controller) {
			this.holds.delete(input.source);
			this.twoHands = null;
			if (this.holds.size === 1) {
				// The other hand keeps holding: re-anchor it where the model is now.
				const hold = [...this.holds.values()][0];
				hold.offset.copy(hold.controller.matrixWorld).invert().multiply(this.context.stage.modelRoot.matrixWorld);
			}
		} else {
			this.mouse = null;
		}
		this.throttle.flush();
	}

	/** Scale by a wheel step (desktop). */
	wheel(deltaY) {
		const root = this.context.stage.modelRoot;
		root.scale.setScalar(clamp(root.scale.x * Math.exp(-deltaY * 0.001), MIN_SCALE, MAX_SCALE));
		root.updateMatrixWorld(true);
		this.push();
		this.throttle.flush();
	}

	/** Set the scale (the panel's slider). */
	setScale(scale) {
		const root = this.context.stage.modelRoot;
		root.scale.setScalar(clamp(scale, MIN_SCALE, MAX_SCALE));
		root.updateMatrixWorld(true);
		this.push();
	}

	push() {
		this.context.stage.invalidate();
		const root = this.context.stage.modelRoot;
		const q = root.quaternion.normalize();
		this.throttle.push({
			position: [round6(root.position.x), round6(root.position.y), round6(root.position.z)],
			quaternion: [round6(q.x), round6(q.y), round6(q.z), round6(q.w)],
			scale: round6(root.scale.x),
		});
	}

	cancel() {
		this.holds.clear();
		this.mouse = null;
		this.twoHands = null;
	}
}

function distance(a, b) {
	_p.setFromMatrixPosition(a.matrixWorld);
	return _p.distanceTo(_s.setFromMatrixPosition(b.matrixWorld));
}

function clamp(x, low, high) {
	return Math.max(low, Math.min(high, x));
}
