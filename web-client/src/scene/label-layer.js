// Text labels in 3D for a headset: a LabelLayer draws all of its labels (slots of the shared LabelAtlas) in one
// instanced draw call, as camera-facing quads of a constant size in metres. A label is redrawn only when its
// text changes; moving one writes one instance matrix.
import { DynamicDrawUsage, InstancedBufferAttribute, InstancedMesh, Matrix4, PlaneGeometry, ShaderMaterial } from 'three';

const vertexShader = /* glsl */ `
uniform float height;
uniform float lift;
uniform float near;
attribute vec4 uvRect;
attribute float aspect;
varying vec2 vUv;
void main() {
	vec4 anchor = modelViewMatrix * instanceMatrix * vec4(0.0, 0.0, 0.0, 1.0);
	// Closer than \`near\` a label shrinks with its distance: its size on screen stops growing (0: never).
	float k = near > 0.0 ? clamp(-anchor.z / near, 0.0, 1.0) : 1.0;
	anchor.xy += k * vec2(position.x * height * aspect, (position.y + 0.5) * height + lift);
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
	constructor(atlas, capacity, { height = 0.02, lift = 0.006, near = 0 } = {}) {
		const geometry = new PlaneGeometry(1, 1);
		const uvRect = new InstancedBufferAttribute(new Float32Array(capacity * 4), 4).setUsage(DynamicDrawUsage);
		const aspect = new InstancedBufferAttribute(new Float32Array(capacity), 1).setUsage(DynamicDrawUsage);
		geometry.setAttribute('uvRect', uvRect);
		geometry.setAttribute('aspect', aspect);
		const material = new ShaderMaterial({
			uniforms: { map: { value: atlas.texture }, height: { value: height }, lift: { value: lift }, near: { value: near } },
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
}
