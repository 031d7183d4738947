// Place a labelled point on the anatomy (annotation.create, type point, position in LPS mm). The note tool
// (note-tool.js) is the same gesture with another payload.
import { Hit } from '../scene/hit.js';

export class PointTool {
	constructor(context) {
		this.context = context;
		this.id = 'point';
		this.title = 'Point';
		this.kind = 'annotation.create';
		this.hint = 'Click (or pull the trigger) on the anatomy to place a labelled point.';
		this.missed = 'Aim at the anatomy to place a point';
		this.hit = new Hit();
	}

	press(input) {
		const c = this.context;
		if (!c.pick(input.ray, this.hit)) {
			c.notify(this.missed, 'warn');
			return false;
		}
		return this.place(c.patient().lpsOf(this.hit.modelPoint));
	}

	/** Send what goes at `position` (LPS mm); false if nothing was sent. */
	place(position) {
		const c = this.context;
		c.send('annotation.create', { type: 'point', position, label: c.nextLabel('point') });
		return true;
	}
}
