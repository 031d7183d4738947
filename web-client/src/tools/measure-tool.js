// Measure a distance between two surface points. The client sends both ends in LPS mm; the length shown
// everywhere is the server's `length_mm`, computed in patient space, never a client-side number.
import { Vector3 } from 'three';

import { Hit } from '../scene/hit.js';

export class MeasureTool {
	constructor(context) {
		this.context = context;
		this.id = 'measure';
		this.title = 'Measure';
		this.kind = 'annotation.create';
		this.hint = 'Pick two points on the anatomy; the server measures the distance in patient millimetres.';
		this.hit = new Hit();
		this.first = null; // LPS of the first end
		this.firstModel = new Vector3();
	}

	press(input) {
		const c = this.context;
		if (!c.pick(input.ray, this.hit)) {
			c.notify('Aim at the anatomy to measure', 'warn');
			return false;
		}
		const lps = c.patient().lpsOf(this.hit.modelPoint);
		if (this.first === null) {
			this.first = lps;
			this.firstModel.copy(this.hit.modelPoint);
			c.preview.showMarker(this.firstModel);
			c.notify('First end set: pick the second', 'info');
			return true;
		}
		const fields = { type: 'measurement', a: this.first, b: lps };
		const label = c.nextLabel('measurement');
		if (label) fields.label = label;
		c.send('annotation.create', fields);
		this.cancel();
		return true;
	}

	cancel() {
		this.first = null;
		this.context.preview.hideMarker();
	}
}
