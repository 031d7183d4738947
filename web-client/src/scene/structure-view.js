// The room's named structures on screen (docs/structures.md): each structure is a node of a GLB (its extras
// name the structure's number), shown or hidden, at the opacity and in the colour the room's state says, the
// same for everyone. A structure grown in the room arrives as a new GLB (`structure.add`), loaded here.
import { structureOf } from './mesh-loader.js';

export class StructureView {
	/** `meshes`: the MeshLoader; `notify(text, level)`: a message. */
	constructor(stage, meshes, { notify }) {
		this.stage = stage;
		this.meshes = meshes;
		this.notify = notify;
		this.state = null;
		this.loading = true; // until the room's anatomy is on screen: it brings the structures known by then
		this.failed = new Set(); // meshes that could not be loaded
		this.index = new Map(); // structure id -> its tissues, for the loader's `indexed` revision
		this.indexed = -1;
		this.shown = ''; // what the last render showed: the loader's revision, the structures' count and newest version
	}

	/** The tissues (drawn mesh and picking proxy) of structure `id` ("<mesh id>:<number>"). */
	tissuesOf(id) {
		if (this.indexed !== this.meshes.revision) {
			this.index = new Map();
			for (const tissue of this.meshes.tissues) {
				const number = structureOf(tissue.mesh);
				if (number === null) continue;
				const key = `${tissue.meshId}:${number}`;
				this.index.set(key, [...(this.index.get(key) ?? []), tissue]);
			}
			this.indexed = this.meshes.revision;
		}
		return this.index.get(id) ?? [];
	}

	/** The structure a pick met (a Hit with `object`), or null: an iso-surface or a slice is no structure. */
	structureAt(hit) {
		const number = hit.object ? structureOf(hit.object) : null;
		if (number === null || !this.state) return null;
		return this.state.structures.get(`${hit.meshId}:${number}`) ?? null;
	}

	/** Show every structure as the state says, and load the meshes of structures grown since. */
	render(state) {
		this.state = state;
		// Every room event renders; only a new structure, a style or new meshes change what is shown.
		let newest = 0;
		for (const structure of state.structures.values()) newest = Math.max(newest, structure.version);
		const key = `${this.meshes.revision}:${state.structures.size}:${newest}`;
		if (key === this.shown) return;
		this.shown = key;
		for (const structure of state.structures.values()) {
			const tissues = this.tissuesOf(structure.id);
			if (!tissues.length) this.load(structure.mesh);
			for (const tissue of tissues) {
				for (const mesh of new Set([tissue.mesh, tissue.proxy])) style(mesh, structure);
			}
		}
		this.stage.invalidate();
	}

	/** The room's anatomy is on screen: from now on a structure grown in the room is loaded when it comes. */
	ready(state) {
		this.loading = false;
		this.shown = '';
		if (state) this.render(state);
	}

	/** Load a structure's mesh (once; a mesh already loaded or loading is not fetched again), then show it. */
	load(meshId) {
		if (this.loading || this.failed.has(meshId)) return;
		this.meshes.add(meshId).then((added) => {
			if (added.length && this.state) this.render(this.state);
		}).catch((error) => {
			this.failed.add(meshId); // said once, not again at every event
			this.notify(`Could not load a structure: ${error.message}`, 'error');
		});
	}
}

/** A mesh in a structure's style: hidden, or drawn in its colour (sRGB "#rrggbb"), see-through below 1. */
function style(mesh, { visible, opacity, color }) {
	mesh.visible = Boolean(visible); // the picker skips a hidden structure too
	const material = mesh.material;
	const see = opacity < 1;
	if (material.transparent !== see) material.needsUpdate = true;
	material.transparent = see;
	material.opacity = opacity;
	material.depthWrite = !see;
	material.color.set(color);
	// A structure often lies on an iso-surface (a grown skull on the bone surface, within half a voxel of it):
	// drawn just in front of it (a fraction of a millimetre at the table: a structure under a tissue layer
	// stays hidden by it).
	material.polygonOffset = true;
	material.polygonOffsetFactor = -2;
	material.polygonOffsetUnits = -60;
}
