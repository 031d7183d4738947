// The room's slice planes in the model: each a quad textured with the server's image of the patient's series on
// that plane (GET /api/rooms/{id}/slice), a thin outline, and four handles at the middles of its edges (what
// the slice tool tilts it by). While a plane moves the view asks for a coarse image (config px.coarse) and,
// once it has stood still for SETTLE_MS, the full one; an answer that arrives after a newer one is dropped.
//
// A plane being moved here (the slice tool's preview) is drawn where the hand has it, not where the room's
// last event put it, so the room's echoes never fight the hand. The quads are what the picker hits too, so a
// point placed on a slice is an LPS point like any other. The selected plane (the panel's; by default the
// newest) cuts the anatomy on the viewer's side (Clipping.setCut), so that the image is seen inside it.
import {
	BufferGeometry, DoubleSide, Float32BufferAttribute, Group, LineBasicMaterial, LineLoop, LinearFilter, Matrix4, Mesh,
	MeshBasicMaterial, PlaneGeometry, SRGBColorSpace, SphereGeometry, Texture, Vector3,
} from 'three';

import { SliceFrame } from './slice-frame.js';

const SETTLE_MS = 250;
const HANDLES = [[0, 0.5], [0, -0.5], [-0.5, 0], [0.5, 0]]; // top, bottom, left, right: quad coordinates
const HANDLE_RADIUS = 0.004; // m
const FIELDS = ['origin', 'u', 'v', 'width_mm', 'height_mm', 'window', 'level'];
const _m = new Matrix4();
const _p = new Vector3();

/** One plane on screen: its group (placed by the quad matrix), textured quad, outline, handles, and images. */
class PlaneVisual {
	constructor(id, clipPlanes) {
		this.id = id;
		this.group = new Group();
		this.group.name = `slice-${id}`;
		this.group.matrixAutoUpdate = false;
		this.material = new MeshBasicMaterial({ color: 0x202428, side: DoubleSide, toneMapped: false, clippingPlanes: clipPlanes });
		this.quad = new Mesh(new PlaneGeometry(1, 1), this.material);
		this.quad.userData.sliceId = id;
		const corners = new BufferGeometry();
		corners.setAttribute('position', new Float32BufferAttribute([-0.5, -0.5, 0, 0.5, -0.5, 0, 0.5, 0.5, 0, -0.5, 0.5, 0], 3));
		this.outline = new LineLoop(corners, new LineBasicMaterial({ color: 0x7fc8ff }));
		this.handles = HANDLES.map(([x, y], index) => {
			const handle = new Mesh(new SphereGeometry(1, 12, 8), new MeshBasicMaterial({ color: 0x7fc8ff }));
			handle.position.set(x, y, 0);
			handle.userData.sliceId = id;
			handle.userData.handle = index;
			return handle;
		});
		this.group.add(this.quad, this.outline, ...this.handles);
		this.fields = null; // what is drawn: the room's plane, or the hand's preview
		this.key = ''; // the image that `fields` call for
		this.shown = { key: '', px: 0 };
		this.changedAt = 0;
		this.busy = false;
		this.timer = null;
		this.texture = null;
	}

	dispose() {
		clearTimeout(this.timer);
		this.texture?.dispose();
		this.material.dispose();
		this.quad.geometry.dispose();
		this.outline.geometry.dispose();
		for (const handle of this.handles) handle.geometry.dispose();
		this.group.removeFromParent();
	}
}

export class SliceView {
	/** `api`: an Api with the room's invite; `px`: the config's slice sizes {coarse, full}; `clipping`: the
	 * Clipping (the room's clip planes cut the quads; the selected plane cuts the anatomy). */
	constructor(stage, { api, px, clipping, notify }) {
		this.stage = stage;
		this.api = api;
		this.px = px;
		this.clipping = clipping;
		this.notify = notify;
		this.patient = null; // the meshes' PatientFrame: nothing is drawn before it is known
		this.roomId = null;
		this.series = null; // the series GET /api/rooms/{id}/volume describes (for its presets and bounds)
		this.visuals = new Map();
		this.previews = new Map(); // plane id -> fields the hand has it at, while a tool moves it here
		this.selected = null; // the plane the panel edits and that cuts the anatomy (null: the newest)
		this.showHandles = false;
		this.state = null;
		this.failed = false;
		this.quads = []; // for the picker
		this.group = new Group();
		this.group.name = 'slices';
		stage.modelFrame.add(this.group);
	}

	/** The plane the panel edits: the chosen one if it still exists, else the newest. */
	current() {
		const planes = this.state?.slices;
		if (!planes?.size) return null;
		if (this.selected && planes.has(this.selected)) return planes.get(this.selected);
		return [...planes.values()].reduce((a, b) => (Number(b.id.slice(1)) > Number(a.id.slice(1)) ? b : a));
	}

	/** The plane `id` as drawn now (a preview, else the room's), or null. */
	fieldsOf(id) {
		return this.previews.get(id) ?? this.state?.slices.get(id) ?? null;
	}

	select(id) {
		this.selected = id;
		if (this.state) this.render(this.state);
	}

	/** Draw `fields` for plane `id` at once, ahead of the room's event (the tool's hand). */
	preview(id, fields) {
		const base = this.fieldsOf(id);
		if (!base) return;
		this.previews.set(id, { ...base, ...fields });
		if (this.state) this.render(this.state);
	}

	/** The hand let go: draw the room's plane again (its event, or the last one if the op was refused). */
	release(id) {
		this.previews.delete(id);
		if (this.state) this.render(this.state);
	}

	render(state) {
		this.state = state;
		this.roomId = state.room?.id ?? this.roomId;
		if (!this.patient) return;
		for (const [id, visual] of this.visuals) {
			if (!state.slices.has(id)) {
				visual.dispose();
				this.visuals.delete(id);
				this.previews.delete(id);
			}
		}
		for (const plane of state.slices.values()) {
			let visual = this.visuals.get(plane.id);
			if (!visual) {
				visual = new PlaneVisual(plane.id, this.clipping.roomPlanes);
				this.visuals.set(plane.id, visual);
				this.group.add(visual.group);
			}
			this.place(visual, this.fieldsOf(plane.id));
		}
		this.quads = [...this.visuals.values()].map((v) => v.quad);
		const current = this.current();
		this.clipping.setCut(current ? this.modelPlane(this.fieldsOf(current.id)) : null);
		this.stage.invalidate();
	}

	/** The slice's plane in model space {normal, constant} (three.js Plane form), for the cut. */
	modelPlane(fields) {
		SliceFrame.matrixOf(fields, this.patient, _m);
		const normal = new Vector3().setFromMatrixColumn(_m, 2).normalize();
		return { normal, constant: -normal.dot(_p.setFromMatrixPosition(_m)) };
	}

	place(visual, fields) {
		visual.fields = fields;
		SliceFrame.matrixOf(fields, this.patient, visual.group.matrix);
		visual.group.matrixWorldNeedsUpdate = true;
		// Handles keep their size in metres whatever the plane's: undo the quad's scale on each.
		const metres = this.stage.modelRoot.scale.x / 1000;
		const [sx, sy, sz] = [fields.width_mm * metres, fields.height_mm * metres, metres];
		for (const handle of visual.handles) {
			handle.scale.set(HANDLE_RADIUS / Math.max(sx, 1e-9), HANDLE_RADIUS / Math.max(sy, 1e-9), HANDLE_RADIUS / sz);
			handle.visible = this.showHandles;
		}
		const key = imageKey(fields);
		if (key !== visual.key) {
			visual.key = key;
			visual.changedAt = performance.now();
			clearTimeout(visual.timer);
			visual.timer = setTimeout(() => this.pump(visual), SETTLE_MS);
			this.pump(visual);
		}
	}

	/** Ask for the image `visual` needs next: coarse while it moves, full once it settled; one at a time. */
	async pump(visual) {
		if (visual.busy || !this.roomId || !this.visuals.has(visual.id)) return;
		const settled = performance.now() - visual.changedAt >= SETTLE_MS - 10;
		const px = settled ? this.px.full : this.px.coarse;
		if (visual.shown.key === visual.key && visual.shown.px >= px) return;
		const key = visual.key;
		visual.busy = true;
		let ok = false;
		try {
			const blob = await this.api.blob(`/api/rooms/${this.roomId}/slice?${key}&px=${px}`);
			const image = new Image();
			image.src = URL.createObjectURL(blob);
			await image.decode().finally(() => URL.revokeObjectURL(image.src));
			if (!this.visuals.has(visual.id)) return;
			const newer = visual.shown.key === key && visual.shown.px > px;
			if (!newer) {
				visual.texture?.dispose(); // a new texture for a new size: a texture's storage is fixed once uploaded
				const texture = new Texture(image);
				texture.colorSpace = SRGBColorSpace; // the grey levels are what the screen shows
				texture.minFilter = LinearFilter;
				texture.generateMipmaps = false;
				texture.needsUpdate = true;
				visual.texture = texture;
				visual.material.map = texture;
				visual.material.color.set(0xffffff);
				visual.material.needsUpdate = true;
				visual.shown = { key, px };
				this.stage.invalidate();
			}
			this.failed = false;
			ok = true;
		} catch (error) {
			if (!this.failed) this.notify?.(`Slice image: ${error.message}`, 'error');
			this.failed = true;
		} finally {
			visual.busy = false;
		}
		if (ok && (visual.shown.key !== visual.key || performance.now() - visual.changedAt >= SETTLE_MS)) this.pump(visual);
	}

	/** Show the tilt handles (a participant who may move planes, with the slice tool in hand). */
	setHandles(visible) {
		this.showHandles = visible;
		for (const visual of this.visuals.values()) for (const handle of visual.handles) handle.visible = visible;
		this.stage.invalidate();
	}

	/** The images' pixels, for tests and the curious: {id: {key, px, ready}}. */
	status() {
		return Object.fromEntries([...this.visuals].map(([id, v]) => [id, { key: v.key, px: v.shown.px, ready: v.shown.key === v.key }]));
	}
}

/** The query of the image of `fields` (everything but px). */
function imageKey(fields) {
	const missing = FIELDS.find((name) => fields[name] === undefined);
	if (missing) return '';
	const triple = (v) => v.map((x) => String(x)).join(',');
	return `origin=${triple(fields.origin)}&u=${triple(fields.u)}&v=${triple(fields.v)}&width_mm=${fields.width_mm}`
		+ `&height_mm=${fields.height_mm}&window=${fields.window}&level=${fields.level}`;
}
