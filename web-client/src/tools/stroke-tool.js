// Draw a 3D stroke. With the mouse, the stroke follows the anatomy's surface; with a controller, it follows
// the controller's tip through the air. Sent once, when the stroke ends (from 2 points to the room limits' max_stroke_points, LPS mm).
import { Vector3 } from 'three';

import { Hit } from '../scene/hit.js';

const MIN_STEP_M = 0.002; // skip samples closer than 2 mm to the last one
const MOUSE_PICK_INTERVAL_MS = 40; // a surface pick of a full mesh is costly: at most 25 a second
const TIP = new Vector3(0, 0, -0.05); // 5 cm ahead of the controller

const _tip = new Vector3();

export class StrokeTool {
	constructor(context) {
		this.context = context;
		this.id = 'stroke';
		this.title = 'Stroke';
		this.kind = 'annotation.create';
		this.hint = 'Drag on the anatomy (or hold the trigger and move the controller) to draw a 3D stroke.';
		this.hit = new Hit();
		this.points = []; // model space
		this.drawing = false;
		this.lastPick = 0;
	}

	sample(input) {
		const c = this.context;
		if (input.controller) {
			_tip.copy(TIP).applyMatrix4(input.controller.matrixWorld);
			return c.toModel(_tip, this.hit.modelPoint);
		}
		const now = performance.now();
		if (this.drawing && now - this.lastPick < MOUSE_PICK_INTERVAL_MS) return null;
		this.lastPick = now;
		return c.pick(input.ray, this.hit) ? this.hit.modelPoint : null;
	}

	press(input) {
		const point = this.sample(input);
		if (!point) {
			this.context.notify('Start the stroke on the anatomy', 'warn');
			return false;
		}
		this.drawing = true;
		this.points = [point.clone()];
		this.context.preview.startLine(point);
		return true;
	}

	move(input) {
		if (!this.drawing || this.points.length >= this.context.limits.max_stroke_points) return;
		const point = this.sample(input);
		if (!point || point.distanceTo(this.points[this.points.length - 1]) < MIN_STEP_M) return;
		this.points.push(point.clone());
		this.context.preview.addPoint(point);
	}

	release() {
		if (!this.drawing) return;
		const c = this.context;
		this.drawing = false;
		const points = this.points;
		this.points = [];
		c.preview.clearLine();
		if (points.length < 2) {
			c.notify('A stroke needs some length: drag while drawing', 'warn');
			return;
		}
		const patient = c.patient();
		const fields = { type: 'stroke', points: points.map((p) => patient.lpsOf(p)) };
		const label = c.nextLabel('stroke');
		if (label) fields.label = label;
		c.send('annotation.create', fields);
	}

	cancel() {
		this.drawing = false;
		this.points = [];
		this.context.preview.clearLine();
	}
}
