// One tissue surface of a room mesh (a preset of a GLB): the mesh drawn now (coarse, then full detail) and the
// coarse mesh kept as the cheap picking proxy of the per-frame hover ray.
export class Tissue {
	constructor(meshId, preset, mesh) {
		this.meshId = meshId;
		this.preset = preset;
		this.mesh = mesh;
		this.proxy = mesh;
	}
}
