// Slice planes through the patient's own images, for everyone in the room (slice.set / slice.clear, planes in
// patient LPS mm). Instructors and surgeons move them; everyone sees them.
// Desktop: the panel's Axial / Coronal / Sagittal buttons put a plane through the series (or turn the selected
// one), its slider sets the depth and its presets the window. With this tool in hand: drag the plane to move
// it along its normal, drag one of the handles on its edges to tilt it, Shift+drag for window (left/right)
// and level (up/down). Headset: hold the trigger on a plane to carry it with the controller, with both hands
// to turn it between them; the thumbstick moves the selected plane along its normal (up/down) and steps
// through the presets (left/right); the trigger on a tile of the palette above the plane picks its preset.
// The plane moves here at once (SliceView.preview); the room gets it at most 10 times a second, and the last.
import { Matrix4, Quaternion, Raycaster, Vector3 } from 'three';

import { SliceFrame } from '../scene/slice-frame.js';
import { round6 } from './round6.js';
import { Throttle } from './throttle.js';

const SEND_INTERVAL_MS = 100;
export const ORIENTATIONS = {
	axial: { title: 'Axial', u: [1, 0, 0], v: [0, 1, 0] }, // seen from above: the patient's left to the right
	coronal: { title: 'Coronal', u: [1, 0, 0], v: [0, 0, -1] },
	sagittal: { title: 'Sagittal', u: [0, 1, 0], v: [0, 0, -1] },
};
const MARGIN = 1.1; // a new plane covers the series' extent and a tenth more
const STICK_MM_PER_S = 40;
const DEAD_ZONE = 0.2;
const _m = new Matrix4();
const _inverse = new Matrix4();
const _q = new Quaternion();
const _a = new Vector3();
const _b = new Vector3();
const _c = new Vector3();
const _d = new Vector3();
const _e = new Vector3();

export class SliceTool {
	constructor(context, view, palette) {
		this.context = context;
		this.view = view;
		this.palette = palette;
		this.id = 'slice';
		this.title = 'Slice';
		this.kind = 'slice.set';
		this.hint = 'Drag a slice plane to move it, drag a handle to tilt it, Shift+drag for window/level; the panel adds planes.';
		this.series = null; // GET /api/rooms/{id}/volume: bounds, centre, windows
		this.drag = null; // the mouse's: {id, mode: 'depth' | 'tilt' | 'window', ...}
		this.holds = new Map(); // controller source -> {id, controller, offset}
		this.twoHands = null;
		this.stick = null; // {id} while the thumbstick moves a plane
		this.creating = null; // a plane being created: its send, so that the next op names its id
		this.raycaster = new Raycaster();
		this.throttle = new Throttle(SEND_INTERVAL_MS, ({ id, fields }) => this.send(id, fields));
		this.lastSend = Promise.resolve();
	}

	setSeries(series) {
		this.series = series;
		this.palette?.setPresets(series.windows.map((w) => w.name));
	}

	presets() {
		return this.series?.windows ?? [];
	}

	send(id, fields) {
		this.lastSend = this.context.send('slice.set', { id, ...fields });
		return this.lastSend;
	}

	/** Move plane `id` to `fields` here at once, and in the room soon. */
	push(id, fields) {
		this.view.preview(id, fields);
		this.throttle.push({ id, fields });
	}

	/** Done moving `id`: the last value goes, and the room's plane is drawn again once its event is in. */
	settle(id) {
		this.throttle.flush();
		this.lastSend.then(() => this.view.release(id));
	}

	/** A plane of `orientation` through the series: the selected plane turned, or a new one. */
	async orient(orientation) {
		const o = ORIENTATIONS[orientation];
		if (!o || !this.series) return null;
		const size = this.sizeFor(o.u, o.v);
		const current = this.view.current();
		if (current) {
			await this.send(current.id, { u: o.u, v: o.v, ...size });
			return current.id;
		}
		const [preset] = this.presets();
		const ack = await this.context.send('slice.set', {
			origin: this.series.centre_lps_mm, u: o.u, v: o.v, ...size, window: preset.window, level: preset.level,
		});
		if (ack) this.view.select(`s${ack.seq}`);
		return ack ? `s${ack.seq}` : null;
	}

	/** {width_mm, height_mm} covering the series along u and v. */
	sizeFor(u, v) {
		const [low, high] = this.series.bounds_lps_mm;
		const along = (d) => Math.abs(d[0]) * (high[0] - low[0]) + Math.abs(d[1]) * (high[1] - low[1]) + Math.abs(d[2]) * (high[2] - low[2]);
		const round = (x) => Math.round(x * MARGIN * 10) / 10;
		return { width_mm: round(along(u)), height_mm: round(along(v)) };
	}

	/** The plane's normal u × v (LPS), into `target`. */
	normalOf(plane, target = new Vector3()) {
		return target.fromArray(plane.u).cross(_e.fromArray(plane.v)).normalize();
	}

	/** How far (mm) the plane's origin is from the series' centre along its normal. */
	depthOf(plane) {
		return this.normalOf(plane, _a).dot(_b.fromArray(plane.origin).sub(_c.fromArray(this.series.centre_lps_mm)));
	}

	/** Half the series' extent along the plane's normal (the depth slider's range), mm. */
	extentOf(plane) {
		const n = this.normalOf(plane, _a);
		const [low, high] = this.series.bounds_lps_mm;
		return (Math.abs(n.x) * (high[0] - low[0]) + Math.abs(n.y) * (high[1] - low[1]) + Math.abs(n.z) * (high[2] - low[2])) / 2;
	}

	/** Put the selected plane `depth` mm from the series' centre along its normal (the slider). */
	setDepth(depth) {
		const plane = this.view.current();
		if (!plane || !this.series) return;
		const fields = this.view.fieldsOf(plane.id);
		const n = this.normalOf(fields, _a);
		const shift = depth - this.depthOf(fields);
		this.push(plane.id, { origin: _b.fromArray(fields.origin).addScaledVector(n, shift).toArray().map(round3) });
	}

	setWindow(name) {
		const plane = this.view.current();
		const preset = this.presets().find((w) => w.name === name);
		if (plane && preset) this.send(plane.id, { window: preset.window, level: preset.level });
	}

	clear(id) {
		if (id) this.context.send('slice.clear', { id });
	}

	// -- the mouse ---------------------------------------------------------------------------------------------
	/** The slice quad or handle the ray meets first: {id, handle (index or null), point (world)}, or null. */
	hitOf(ray) {
		this.raycaster.ray.copy(ray);
		const targets = [];
		for (const visual of this.view.visuals.values()) {
			targets.push(visual.quad);
			if (this.view.showHandles) targets.push(...visual.handles);
		}
		const hit = this.raycaster.intersectObjects(targets, false)
			.sort((x, y) => (y.object.userData.handle !== undefined) - (x.object.userData.handle !== undefined) || x.distance - y.distance)[0];
		return hit ? { id: hit.object.userData.sliceId, handle: hit.object.userData.handle ?? null, point: hit.point } : null;
	}

	press(input) {
		if (input.controller) return this.grab(input);
		const hit = this.hitOf(input.ray);
		if (!hit) {
			this.context.notify('Press on a slice plane (the panel adds one)', 'warn');
			return false;
		}
		this.view.select(hit.id);
		const plane = this.view.fieldsOf(hit.id);
		const event = input.event;
		this.drag = { id: hit.id, x: event.clientX, y: event.clientY, handle: hit.handle,
			mode: hit.handle !== null ? 'tilt' : event.shiftKey ? 'window' : 'depth', window: plane.window, level: plane.level };
		return true;
	}

	move(input) {
		if (input.controller) {
			this.carry();
			return;
		}
		const drag = this.drag;
		if (!drag || !input.event) return;
		const plane = this.view.fieldsOf(drag.id);
		if (!plane) return;
		const dx = input.event.clientX - drag.x;
		const dy = input.event.clientY - drag.y;
		if (drag.mode === 'window') {
			const window = Math.max(1, Math.round(drag.window * Math.exp(dx * 0.01)));
			this.push(drag.id, { window, level: Math.round(drag.level - dy * drag.window / 400) });
		} else if (drag.mode === 'depth') {
			drag.x = input.event.clientX;
			drag.y = input.event.clientY;
			const mm = -dy * 0.5 / this.context.stage.modelRoot.scale.x;
			const n = this.normalOf(plane, _a);
			this.push(drag.id, { origin: _b.fromArray(plane.origin).addScaledVector(n, mm).toArray().map(round3) });
		} else {
			this.tilt(drag, plane, input.ray);
		}
	}

	/** Turn the plane about the axis through its centre along the dragged handle's edge, so that the handle
	 * follows the pointer (where the ray meets the plane of the turn). */
	tilt(drag, plane, ray) {
		const lps = this.rayInLps(ray);
		if (!lps) return;
		const vertical = drag.handle < 2; // top/bottom handles turn about u, left/right ones about v
		const axis = _a.fromArray(vertical ? plane.u : plane.v);
		const centre = _b.fromArray(plane.origin);
		const denominator = axis.dot(lps.direction);
		if (Math.abs(denominator) < 1e-6) return;
		const t = axis.dot(_c.copy(centre).sub(lps.origin)) / denominator;
		const towards = _d.copy(lps.origin).addScaledVector(lps.direction, t).sub(centre);
		if (towards.lengthSq() < 1e-6) return;
		towards.normalize();
		// The handle's direction from the centre: top = −v, bottom = +v, left = −u, right = +u.
		const sign = drag.handle === 0 || drag.handle === 2 ? -1 : 1;
		const turned = towards.multiplyScalar(sign).toArray().map(round6);
		this.push(drag.id, vertical ? { u: plane.u, v: turned } : { u: turned, v: plane.v });
	}

	/** A world ray in LPS mm: {origin, direction (unit)}, or null before the meshes are in. */
	rayInLps(ray) {
		const patient = this.context.patient();
		if (!patient) return null;
		_inverse.copy(this.context.stage.modelFrame.matrixWorld).invert();
		_m.multiplyMatrices(patient.toLps, _inverse); // world -> LPS
		const origin = ray.origin.clone().applyMatrix4(_m);
		const direction = ray.origin.clone().add(ray.direction).applyMatrix4(_m).sub(origin).normalize();
		return { origin, direction };
	}

	release(input) {
		if (input.controller) {
			const hold = this.holds.get(input.source);
			this.holds.delete(input.source);
			this.twoHands = null;
			if (hold && ![...this.holds.values()].some((h) => h.id === hold.id)) this.settle(hold.id);
			else this.reanchor();
			return;
		}
		if (this.drag) this.settle(this.drag.id);
		this.drag = null;
	}

	cancel() {
		for (const id of new Set([this.drag?.id, ...[...this.holds.values()].map((h) => h.id)])) if (id) this.view.release(id);
		this.drag = null;
		this.holds.clear();
		this.twoHands = null;
	}

	// -- the headset -------------------------------------------------------------------------------------------
	/** Per frame: the preset palette above the selected plane, while `visible` (in VR, this tool in hand). */
	showPalette(visible) {
		const plane = visible ? this.view.current() : null;
		this.palette?.place(plane ? this.view.fieldsOf(plane.id) : null, this.context.patient(), this.context.stage.modelRoot.scale.x);
		if (plane) this.palette.setActive(this.presets().find((w) => w.window === plane.window && w.level === plane.level)?.name);
	}

	grab(input) {
		this.raycaster.ray.copy(input.ray);
		const preset = this.palette?.pick(this.raycaster);
		if (preset) {
			this.setWindow(preset);
			return false;
		}
		const hit = this.hitOf(input.ray);
		if (!hit) {
			this.context.notify('Point at a slice plane and hold the trigger to move it', 'warn');
			return false;
		}
		this.view.select(hit.id);
		const group = this.view.visuals.get(hit.id).group;
		group.updateWorldMatrix(true, false);
		const offset = new Matrix4().copy(input.controller.matrixWorld).invert().multiply(group.matrixWorld);
		this.holds.set(input.source, { id: hit.id, controller: input.controller, offset });
		this.reanchor();
		return true;
	}

	/** With both hands on one plane, remember where the hands and the plane were (the turn starts there). */
	reanchor() {
		const holds = [...this.holds.values()];
		for (const hold of holds) {
			const group = this.view.visuals.get(hold.id)?.group;
			if (group) hold.offset.copy(hold.controller.matrixWorld).invert().multiply(group.matrixWorld);
		}
		if (holds.length === 2 && holds[0].id === holds[1].id) {
			const [a, b] = holds.map((h) => new Vector3().setFromMatrixPosition(h.controller.matrixWorld));
			const group = this.view.visuals.get(holds[0].id).group;
			this.twoHands = { id: holds[0].id, mid: a.clone().add(b).multiplyScalar(0.5), dir: b.sub(a).normalize(), world: group.matrixWorld.clone() };
		} else {
			this.twoHands = null;
		}
	}

	/** Carry the held plane: with one hand rigidly, with two turned and moved as the line between the hands. */
	carry() {
		const holds = [...this.holds.values()];
		if (!holds.length) return;
		const id = holds[0].id;
		const world = new Matrix4();
		if (this.twoHands && holds.length === 2) {
			const [a, b] = holds.map((h) => new Vector3().setFromMatrixPosition(h.controller.matrixWorld));
			const mid = a.clone().add(b).multiplyScalar(0.5);
			_q.setFromUnitVectors(this.twoHands.dir, b.sub(a).normalize());
			world.makeTranslation(-this.twoHands.mid.x, -this.twoHands.mid.y, -this.twoHands.mid.z)
				.premultiply(_m.makeRotationFromQuaternion(_q))
				.premultiply(_m.makeTranslation(mid.x, mid.y, mid.z))
				.multiply(this.twoHands.world);
		} else {
			world.multiplyMatrices(holds[0].controller.matrixWorld, holds[0].offset);
		}
		const model = _inverse.copy(this.context.stage.modelFrame.matrixWorld).invert().multiply(world);
		this.push(id, SliceFrame.planeOf(model, this.context.patient()));
	}

	/** Per XR frame with this tool in hand: the stick's y moves the selected plane along its normal, a flick
	 * of x steps through the presets. */
	thumbstick(hand, x, y, dt) {
		const plane = this.view.current();
		if (!plane) return;
		if (Math.abs(x) > 0.8 && !hand.flicked) {
			const presets = this.presets();
			const index = presets.findIndex((w) => w.window === plane.window && w.level === plane.level);
			this.setWindow(presets[(index + (x > 0 ? 1 : presets.length - 1) + presets.length) % presets.length].name);
		}
		hand.flicked = Math.abs(x) > 0.5;
		if (Math.abs(y) < DEAD_ZONE) {
			if (this.stick) this.settle(this.stick.id);
			this.stick = null;
			return;
		}
		this.stick = { id: plane.id };
		const fields = this.view.fieldsOf(plane.id);
		const n = this.normalOf(fields, _a);
		const mm = -y * STICK_MM_PER_S * dt;
		this.push(plane.id, { origin: _b.fromArray(fields.origin).addScaledVector(n, mm).toArray().map(round3) });
	}
}

function round3(x) {
	return Math.round(x * 1000) / 1000;
}
