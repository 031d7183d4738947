// Place a labelled point on the anatomy (annotation.create, type point, position in LPS mm).
import { Hit } from '../picker.js';

export class PointTool {
	constructor(context) {
		this.context = context;
		this.id = 'point';
		this.title = 'Point';
		this.kind = 'annotation.create';
		this.hint = 'Click (or pull the trigger) on the anatomy to place a labelled point.';
		this.hit = new Hit();
	}

	press(input) {
		const c = this.context;
		if (!c.pick(input.ray, this.hit)) {
			c.notify('Aim at the anatomy to place a point', 'warn');
			return false;
		}
		const position = c.patient().lpsOf(this.hit.modelPoint);
		c.send('annotation.create', { type: 'point', position, label: c.nextLabel('point') });
		return true;
	}
}
