// Picking: where a ray (from the mouse or a controller) meets the patient's surface or a slice plane's image,
// skipping what a clip plane has cut away. Writes the point in world space and in model space into a Hit.
import { Matrix4, Raycaster } from 'three';

const _inverse = new Matrix4();

export class Picker {
	constructor(stage, meshes) {
		this.stage = stage;
		this.meshes = meshes;
		this.raycaster = new Raycaster();
		this.hits = [];
		this.surfaces = () => []; // more meshes to pick on (the slice quads); their userData.sliceId names them
		this.surfaceClipPlanes = []; // what clips those (the room's clip planes, not a slice's own cut)
	}

	/** The first visible surface point along `ray` (world), written into `hit`; false if none. */
	pick(ray, hit, { coarse = false } = {}) {
		const raycaster = this.raycaster;
		raycaster.ray.copy(ray);
		const hits = this.hits;
		hits.length = 0;
		const tissues = this.meshes.tissues;
		for (let i = 0; i < tissues.length; i++) {
			const tissue = tissues[i];
			if (!tissue.mesh.visible) continue; // a hidden structure
			const mesh = coarse ? tissue.proxy : tissue.mesh;
			if (mesh.parent === null) mesh.matrixWorld.multiplyMatrices(this.stage.modelFrame.matrixWorld, mesh.matrix);
			mesh.raycast(raycaster, hits);
		}
		for (const surface of this.surfaces()) surface.raycast(raycaster, hits);
		hits.sort((a, b) => a.distance - b.distance);
		for (let i = 0; i < hits.length; i++) {
			const candidate = hits[i];
			const planes = candidate.object.userData.sliceId ? this.surfaceClipPlanes : this.stage.clipPlanes;
			let clipped = false;
			for (let j = 0; j < planes.length; j++) {
				if (planes[j].distanceToPoint(candidate.point) < 0) {
					clipped = true;
					break;
				}
			}
			if (clipped) continue;
			const tissue = this.meshes.tissueOf(candidate.object);
			hit.point.copy(candidate.point);
			hit.modelPoint.copy(candidate.point).applyMatrix4(_inverse.copy(this.stage.modelFrame.matrixWorld).invert());
			hit.distance = candidate.distance;
			hit.meshId = tissue?.meshId ?? candidate.object.userData.sliceId ?? null;
			hit.object = candidate.object;
			return true;
		}
		return false;
	}
}
