// Text labels in 3D for a headset: every label is a slot of one shared canvas atlas, and a LabelLayer draws
// all of its labels in one instanced draw call as camera-facing quads of a constant size in metres. Labels
// are redrawn only when their text changes; moving one writes one instance matrix.
import {
	CanvasTexture, DynamicDrawUsage, InstancedBufferAttribute, InstancedMesh, LinearFilter, Matrix4, PlaneGeometry,
	ShaderMaterial,
} from 'three';

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

const vertexShader = /* glsl */ `
uniform float height;
uniform float lift;
attribute vec4 uvRect;
attribute float aspect;
varying vec2 vUv;
void main() {
	vec4 anchor = modelViewMatrix * instanceMatrix * vec4(0.0, 0.0, 0.0, 1.0);
	anchor.xy += vec2(position.x * height * aspect, (position.y + 0.5) * height + lift);
	gl_Position = projectionMatrix * anchor;
	vUv = uvRect.xy + uv * uvRect.zw;
}`;

const fragmentShader = /* glsl */ `
uniform sampler2D map;
varying vec2 vUv;
void main() {
	vec4 color = texture2D(map, vUv);
	if (color.a < 0.04) discard;
	gl_FragColor = color;
}`;

const _m = new Matrix4();

/** Labels anchored at points of the layer's parent frame; `height` is the label height in metres. */
export class LabelLayer extends InstancedMesh {
	constructor(atlas, capacity, { height = 0.02, lift = 0.006 } = {}) {
		const geometry = new PlaneGeometry(1, 1);
		const uvRect = new InstancedBufferAttribute(new Float32Array(capacity * 4), 4).setUsage(DynamicDrawUsage);
		const aspect = new InstancedBufferAttribute(new Float32Array(capacity), 1).setUsage(DynamicDrawUsage);
		geometry.setAttribute('uvRect', uvRect);
		geometry.setAttribute('aspect', aspect);
		const material = new ShaderMaterial({
			uniforms: { map: { value: atlas.texture }, height: { value: height }, lift: { value: lift } },
			vertexShader,
			fragmentShader,
			transparent: true,
			depthTest: false,
			depthWrite: false,
		});
		super(geometry, material, capacity);
		this.instanceMatrix.setUsage(DynamicDrawUsage);
		this.atlas = atlas;
		this.capacity = capacity;
		this.count = 0;
		this.frustumCulled = false;
		this.renderOrder = 20;
		this.entries = new Map(); // key -> {index, slot, text, color}
		this.keys = [];
	}

	/** Show (or update) label `key` with `text` at (x, y, z) of the parent frame. */
	set(key, text, color, x, y, z) {
		let entry = this.entries.get(key);
		if (!entry) {
			if (this.count >= this.capacity) return;
			const slot = this.atlas.alloc();
			if (slot < 0) return;
			entry = { index: this.count++, slot, text: null, color: null };
			this.entries.set(key, entry);
			this.keys[entry.index] = key;
		}
		if (entry.text !== text || entry.color !== color) {
			const width = this.atlas.draw(entry.slot, text, color);
			const [u, v, du, dv] = this.atlas.rect(entry.slot, width);
			this.geometry.attributes.uvRect.setXYZW(entry.index, u, v, du, dv);
			this.geometry.attributes.aspect.setX(entry.index, width / SLOT_H);
			this.geometry.attributes.uvRect.needsUpdate = true;
			this.geometry.attributes.aspect.needsUpdate = true;
			entry.text = text;
			entry.color = color;
		}
		this.move(key, x, y, z);
	}

	move(key, x, y, z) {
		const entry = this.entries.get(key);
		if (!entry) return;
		_m.makeTranslation(x, y, z);
		this.setMatrixAt(entry.index, _m);
		this.instanceMatrix.needsUpdate = true;
	}

	has(key) {
		return this.entries.has(key);
	}

	remove(key) {
		const entry = this.entries.get(key);
		if (!entry) return;
		this.atlas.release(entry.slot);
		this.entries.delete(key);
		const last = --this.count;
		if (entry.index !== last) {
			// Move the last instance into the hole, so the drawn range stays dense.
			const movedKey = this.keys[last];
			const moved = this.entries.get(movedKey);
			const { uvRect, aspect } = this.geometry.attributes;
			this.getMatrixAt(last, _m);
			this.setMatrixAt(entry.index, _m);
			uvRect.setXYZW(entry.index, uvRect.getX(last), uvRect.getY(last), uvRect.getZ(last), uvRect.getW(last));
			aspect.setX(entry.index, aspect.getX(last));
			uvRect.needsUpdate = true;
			aspect.needsUpdate = true;
			this.instanceMatrix.needsUpdate = true;
			moved.index = entry.index;
			this.keys[entry.index] = movedKey;
		}
		this.keys.length = this.count;
	}

	clear() {
		for (const key of [...this.entries.keys()]) this.remove(key);
	}
}
