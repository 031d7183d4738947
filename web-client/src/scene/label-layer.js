// Text labels in 3D for a headset: a LabelLayer draws all of its labels (slots of the shared LabelAtlas) in one
// instanced draw call, as camera-facing quads of a constant size in metres. A label is redrawn only when its
// text changes; moving one writes one instance matrix.
import { DynamicDrawUsage, InstancedBufferAttribute, InstancedMesh, Matrix4, PlaneGeometry, ShaderMaterial, Vector3 } from 'three';

const vertexShader = /* glsl */ `
uniform float height;
uniform float lift;
uniform float near;
uniform float pull;
attribute vec4 uvRect;
attribute float aspect;
attribute float stack;
varying vec2 vUv;
void main() {
	vec4 anchor = modelViewMatrix * instanceMatrix * vec4(0.0, 0.0, 0.0, 1.0);
	// Closer than \`near\` a label shrinks with its distance: its size on screen stops growing (0: never).
	float k = near > 0.0 ? clamp(-anchor.z / near, 0.0, 1.0) : 1.0;
	// \`stack\` label heights up: a label that would cover a nearer one moves above it (LabelLayer.declutter).
	anchor.xy += k * vec2(position.x * height * aspect, (position.y + 0.5 + stack) * height + lift);
	// Drawn \`pull\` metres toward the eye along its own ray (the same place on screen), so that the surface
	// the label's point lies on does not cut it; what is truly in front of the point still hides it.
	float d = length(anchor.xyz);
	if (d > pull * 2.0) anchor.xyz *= (d - pull) / d;
	gl_Position = projectionMatrix * anchor;
	vUv = uvRect.xy + uv * uvRect.zw;
}`;

const fragmentShader = /* glsl */ `
uniform sampler2D map;
uniform float opacity;
varying vec2 vUv;
void main() {
	vec4 color = texture2D(map, vUv);
	if (color.a < 0.04) discard;
	gl_FragColor = vec4(color.rgb, color.a * opacity);
}`;

const BEHIND_OPACITY = 0.3; // a label behind the anatomy shows this faintly: near and far side look different
const STACK_GAP = 1.1; // label heights between stacked labels
const MAX_STACK = 6;

const _m = new Matrix4();

/** Labels anchored at points of the layer's parent frame; `height` is the label height in metres. A label is
 * drawn in full where nothing is in front of it, and faintly (BEHIND_OPACITY) where the anatomy hides it: a
 * second instanced draw of the same labels without the depth test. */
export class LabelLayer extends InstancedMesh {
	constructor(atlas, capacity, { height = 0.02, lift = 0.006, near = 0, pull = 0.02 } = {}) {
		const geometry = new PlaneGeometry(1, 1);
		const uvRect = new InstancedBufferAttribute(new Float32Array(capacity * 4), 4).setUsage(DynamicDrawUsage);
		const aspect = new InstancedBufferAttribute(new Float32Array(capacity), 1).setUsage(DynamicDrawUsage);
		const stack = new InstancedBufferAttribute(new Float32Array(capacity), 1).setUsage(DynamicDrawUsage);
		geometry.setAttribute('uvRect', uvRect);
		geometry.setAttribute('aspect', aspect);
		geometry.setAttribute('stack', stack);
		const uniforms = { map: { value: atlas.texture }, height: { value: height }, lift: { value: lift },
			near: { value: near }, pull: { value: pull }, opacity: { value: 1 } };
		const material = new ShaderMaterial({ uniforms, vertexShader, fragmentShader, transparent: true, depthTest: true, depthWrite: false });
		super(geometry, material, capacity);
		const faint = new ShaderMaterial({
			uniforms: { ...uniforms, opacity: { value: BEHIND_OPACITY } },
			vertexShader, fragmentShader, transparent: true, depthTest: false, depthWrite: false,
		});
		this.behind = new InstancedMesh(geometry, faint, capacity);
		this.behind.instanceMatrix = this.instanceMatrix; // the same labels, in the same places
		this.behind.count = 0;
		this.behind.frustumCulled = false;
		this.behind.renderOrder = 19; // first: the full label is drawn over it where it is in front
		this.add(this.behind);
		this.height = height;
		this.lift = lift;
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
			this.behind.count = this.count;
			this.entries.set(key, entry);
			this.keys[entry.index] = key;
		}
		if (entry.text !== text || entry.color !== color) {
			const width = this.atlas.draw(entry.slot, text, color);
			const [u, v, du, dv] = this.atlas.rect(entry.slot, width);
			this.geometry.attributes.uvRect.setXYZW(entry.index, u, v, du, dv);
			this.geometry.attributes.aspect.setX(entry.index, width / this.atlas.slotHeight);
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
		this.behind.count = this.count;
		if (entry.index !== last) {
			// Move the last instance into the hole, so the drawn range stays dense.
			const movedKey = this.keys[last];
			const moved = this.entries.get(movedKey);
			const { uvRect, aspect, stack } = this.geometry.attributes;
			stack.setX(entry.index, stack.getX(last));
			stack.needsUpdate = true;
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

	/** Move labels up, in steps of their height, so that none covers a nearer one as `camera` sees them now
	 * (nearest first; at most MAX_STACK steps). Returns the labels' rectangles as drawn, in tangent units
	 * (view-space x/depth, y/depth) with their keys: {key, x0, y0, x1, y1, depth}. */
	declutter(camera) {
		const stack = this.geometry.attributes.stack;
		const aspect = this.geometry.attributes.aspect;
		this.updateWorldMatrix(true, false);
		_view.multiplyMatrices(camera.matrixWorldInverse, this.matrixWorld);
		const labels = [];
		for (let i = 0; i < this.count; i++) {
			this.getMatrixAt(i, _m);
			_p.setFromMatrixPosition(_m).applyMatrix4(_view);
			const depth = -_p.z;
			if (depth <= 1e-3) continue;
			labels.push({ i, key: this.keys[i], depth, x: _p.x / depth, y: _p.y / depth,
				w: (this.height * aspect.getX(i)) / depth, h: this.height / depth, lift: this.lift / depth });
		}
		labels.sort((a, b) => a.depth - b.depth);
		const placed = [];
		let changed = false;
		for (const label of labels) {
			let steps = 0;
			let rect = rectOf(label, 0);
			while (steps < MAX_STACK && placed.some((other) => overlaps(rect, other))) {
				steps += STACK_GAP;
				rect = rectOf(label, steps);
			}
			placed.push(rect);
			if (stack.getX(label.i) !== steps) {
				stack.setX(label.i, steps);
				changed = true;
			}
		}
		if (changed) stack.needsUpdate = true;
		return placed;
	}
}

const _view = new Matrix4();
const _p = new Vector3();

function rectOf(label, steps) {
	const y0 = label.y + label.lift + steps * label.h;
	return { key: label.key, depth: label.depth, x0: label.x - label.w / 2, x1: label.x + label.w / 2, y0, y1: y0 + label.h };
}

function overlaps(a, b) {
	return a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1;
}
