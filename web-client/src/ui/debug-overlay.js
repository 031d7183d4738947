// ?debug=1: an overlay with the renderer's draw calls and triangles, the frame time (CPU time of our frame,
// smoothed) and the frames drawn per second. The numbers are read every frame but the text is written 4 times a second.
import { h } from './dom.js';

const WRITE_EVERY_MS = 250;

export class DebugOverlay {
	constructor(parent, stage) {
		this.stage = stage;
		this.element = h('pre', { id: 'debug-overlay', class: 'debug' });
		parent.append(this.element);
		this.calls = 0;
		this.triangles = 0;
		this.renders = stage.renders;
		this.since = performance.now();
		stage.renderer.info.autoReset = true;
		stage.onFrame(() => this.sample());
	}

	sample() {
		// renderer.info holds the previous frame's numbers (it resets at the start of each render).
		const info = this.stage.renderer.info;
		this.calls = info.render.calls;
		this.triangles = info.render.triangles;
		const now = performance.now();
		if (now - this.since < WRITE_EVERY_MS) return;
		const fps = ((this.stage.renders - this.renders) * 1000) / (now - this.since);
		this.renders = this.stage.renders;
		this.since = now;
		const memory = info.memory;
		this.element.textContent = `draw calls ${this.calls}\ntriangles  ${this.triangles}\nframe      ${this.stage.frameMs.toFixed(2)} ms\n`
			+ `fps        ${fps.toFixed(0)}\ngeometries ${memory.geometries}  textures ${memory.textures}`
			+ `${this.stage.renderer.xr.isPresenting ? '\nXR         presenting' : ''}`;
		this.element.dataset.calls = String(this.calls);
		this.element.dataset.triangles = String(this.triangles);
	}
}
