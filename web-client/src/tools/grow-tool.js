// Grow a named structure from a seed (structure.grow, docs/structures.md): click the anatomy or a slice
// plane's image where the structure is; the server takes the connected region of the tissue band under the
// seed as a job (its progress goes to the whole room), then every participant loads the new structure. The
// name is what the Label box holds, else "Structure N".
import { Hit } from '../scene/hit.js';

export class GrowTool {
	constructor(context) {
		this.context = context;
		this.id = 'grow';
		this.title = 'Grow';
		this.kind = 'structure.grow';
		this.hint = 'Click (or pull the trigger) on a tissue or a slice image: the server outlines the connected structure there, named from the Label box.';
		this.hit = new Hit();
	}

	press(input) {
		const c = this.context;
		if (!c.pick(input.ray, this.hit)) {
			c.notify('Aim at the anatomy or a slice image to grow a structure', 'warn');
			return false;
		}
		return this.grow(c.patient().lpsOf(this.hit.modelPoint));
	}

	/** Ask the server to grow a structure from `seed` (LPS mm); resolves to the ack, or null if refused. */
	grow(seed, fields = {}) {
		const c = this.context;
		const state = c.state();
		const name = fields.name ?? (c.label.take('structure', state) || `Structure ${(state?.structures.size ?? 0) + (state?.growing.size ?? 0) + 1}`);
		return c.send('structure.grow', { seed, name, ...fields }).then((ack) => {
			if (ack) c.notify(`Growing "${name}"…`, 'info');
			return ack;
		});
	}
}
