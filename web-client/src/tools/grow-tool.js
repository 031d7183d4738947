// Grow a named structure from a seed (structure.grow, docs/structures.md): the point tool's gesture (a click or
// the trigger on a tissue or a slice plane's image), with the seed sent instead of a point. The server takes
// the connected region of the tissue band under the seed as a job (its progress goes to the whole room), then
// every participant loads the new structure. The name is what the Label box holds, else "Structure N".
import { PointTool } from './point-tool.js';

export class GrowTool extends PointTool {
	constructor(context) {
		super(context);
		this.id = 'grow';
		this.title = 'Grow';
		this.kind = 'structure.grow';
		this.hint = 'Click (or pull the trigger) on a tissue or a slice image: the server outlines the connected structure there, named from the Label box.';
		this.missed = 'Aim at the anatomy or a slice image to grow a structure';
	}

	/** Ask the server to grow a structure from `seed` (LPS mm); true: asked. */
	place(seed) {
		this.grow(seed);
		return true;
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
