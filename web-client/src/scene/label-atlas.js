// The shared canvas of every text label in 3D: one slot per label, each drawn once when its text changes, so
// that a LabelLayer draws all of its labels from one texture in one draw call.
import { CanvasTexture, LinearFilter } from 'three';

const ATLAS = 2048;
const SLOT_W = 512;
const SLOT_H = 48;
const COLUMNS = ATLAS / SLOT_W;
const SLOTS = COLUMNS * Math.floor(ATLAS / SLOT_H); // 168 labels

export class LabelAtlas {
	constructor() {
		this.canvas = document.createElement('canvas');
		this.canvas.width = ATLAS;
		this.canvas.height = ATLAS;
		this.context = this.canvas.getContext('2d');
		this.texture = new CanvasTexture(this.canvas);
		this.texture.minFilter = LinearFilter;
		this.texture.generateMipmaps = false;
		this.slotHeight = SLOT_H; // px: a label's aspect is its width over this
		this.free = [];
		for (let i = SLOTS - 1; i >= 0; i--) this.free.push(i);
	}

	alloc() {
		return this.free.length ? this.free.pop() : -1;
	}

	release(slot) {
		if (slot >= 0) this.free.push(slot);
	}

	/** Draw `text` in `slot` on a dark pill with a coloured edge; returns its width in px. */
	draw(slot, text, color) {
		const ctx = this.context;
		const x = (slot % COLUMNS) * SLOT_W;
		const y = Math.floor(slot / COLUMNS) * SLOT_H;
		ctx.clearRect(x, y, SLOT_W, SLOT_H);
		ctx.font = '600 28px system-ui, "DejaVu Sans", sans-serif';
		let shown = text;
		while (shown.length > 1 && ctx.measureText(shown).width > SLOT_W - 32) shown = `${shown.slice(0, -2)}…`;
		const width = Math.min(SLOT_W, Math.ceil(ctx.measureText(shown).width) + 28);
		ctx.fillStyle = 'rgba(18, 22, 28, 0.86)';
		ctx.strokeStyle = color;
		ctx.lineWidth = 3;
		ctx.beginPath();
		ctx.roundRect(x + 2, y + 3, width - 4, SLOT_H - 6, 12);
		ctx.fill();
		ctx.stroke();
		ctx.fillStyle = '#ffffff';
		ctx.textBaseline = 'middle';
		ctx.fillText(shown, x + 14, y + SLOT_H / 2 + 1);
		this.texture.needsUpdate = true;
		return width;
	}

	/** [u, v, du, dv] of `width` px of `slot` (the texture is flipped: v grows upward). */
	rect(slot, width) {
		const x = (slot % COLUMNS) * SLOT_W;
		const y = Math.floor(slot / COLUMNS) * SLOT_H;
		return [x / ATLAS, 1 - (y + SLOT_H) / ATLAS, width / ATLAS, SLOT_H / ATLAS];
	}
}
