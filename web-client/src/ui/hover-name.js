// The name of the structure under the mouse, beside the pointer (a headset shows it at the controller's
// reticle: input/immersive-session.js). Picked on the coarse meshes, at most ten times a second.
import { Hit } from '../scene/hit.js';
import { h } from './dom.js';

const EVERY_MS = 100;

export class HoverName {
	/** `desktop`: the DesktopInput (its rays); `picker`: the Picker; `structures`: the StructureView. */
	constructor(viewport, { desktop, picker, structures }) {
		this.desktop = desktop;
		this.picker = picker;
		this.structures = structures;
		this.hit = new Hit();
		this.last = 0;
		this.timer = null;
		this.event = null;
		this.element = h('div', { id: 'hover-name', class: 'hover-name', role: 'status', hidden: true });
		viewport.append(this.element);
		const canvas = desktop.canvas;
		canvas.addEventListener('pointermove', (e) => this.onMove(e));
		canvas.addEventListener('pointerleave', () => {
			clearTimeout(this.timer);
			this.timer = null;
			this.show(null);
		});
	}

	/** Pick at most every EVERY_MS, and always once more where the mouse came to rest. */
	onMove(event) {
		if (!this.structures.state?.structures.size) return; // a room without named structures: nothing to name
		this.event = { clientX: event.clientX, clientY: event.clientY };
		if (this.timer) return;
		const wait = Math.max(0, this.last + EVERY_MS - performance.now());
		this.timer = setTimeout(() => {
			this.timer = null;
			this.last = performance.now();
			this.pick(this.event);
		}, wait);
	}

	pick(event) {
		if (this.desktop.down || this.desktop.stage.renderer.xr.isPresenting) return this.show(null);
		const ray = this.desktop.rayAt(event).ray;
		const structure = this.picker.pick(ray, this.hit, { coarse: true }) ? this.structures.structureAt(this.hit) : null;
		const rect = this.desktop.canvas.getBoundingClientRect();
		this.show(structure, event.clientX - rect.left, event.clientY - rect.top);
	}

	show(structure, x = 0, y = 0) {
		this.element.hidden = !structure;
		if (!structure) return;
		this.element.textContent = structure.name;
		this.element.style.borderColor = structure.color;
		this.element.style.left = `${x + 14}px`;
		this.element.style.top = `${y + 10}px`;
	}
}
