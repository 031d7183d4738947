// The laser pointer: a deliberate "look here" (pointer.highlight, logged). Everyone sees a pulse at the spot
// for a few seconds, in the author's role colour (scene/highlights.js). The continuous laser of each
// controller is part of the avatars, from the pose stream.
import { Hit } from '../scene/hit.js';
import { round6 } from './round6.js';

export class PointerTool {
	constructor(context) {
		this.context = context;
		this.id = 'pointer';
		this.title = 'Pointer';
		this.kind = 'pointer.highlight';
		this.hint = 'Click (or pull the trigger) to make everyone look at a spot.';
		this.hit = new Hit();
	}

	press(input) {
		const c = this.context;
		if (!c.pick(input.ray, this.hit)) {
			c.notify('Aim at the anatomy to highlight it', 'warn');
			return false;
		}
		const p = this.hit.modelPoint;
		const fields = { position: [round6(p.x), round6(p.y), round6(p.z)] };
		if (this.hit.meshId) fields.target = this.hit.meshId;
		c.send('pointer.highlight', fields);
		return true;
	}
}
