// Patient coordinates. Annotations travel in DICOM LPS millimetres; the meshes are in glTF metres (+Y up,
// the GLB's own frame, called "model space"). The GLB carries the exact mapping in scenes[0].extras
// (`gltf_to_lps`, a 4x4 row-major matrix acting on column vectors), which GLTFLoader puts in userData.
import { Matrix4, Vector3 } from 'three';

// glTF = 0.001 * (L, S, -P), so LPS = 1000 * (x, -z, y): the documented default, used only if extras lack it.
const DEFAULT_GLTF_TO_LPS = [[1000, 0, 0, 0], [0, 0, -1000, 0], [0, 1000, 0, 0], [0, 0, 0, 1]];
const _v = new Vector3();

export class PatientFrame {
	/** gltfToLps: the row-major nested 4x4 of the GLB's extras. */
	constructor(gltfToLps = DEFAULT_GLTF_TO_LPS) {
		this.toLps = new Matrix4().set(...gltfToLps.flat());
		this.toModel = this.toLps.clone().invert();
	}

	/** The frame a loaded glTF scene declares (scene.userData.gltf_to_lps), or the documented default. */
	static of(gltfScene) {
		const matrix = gltfScene?.userData?.gltf_to_lps;
		return new PatientFrame(Array.isArray(matrix) && matrix.length === 4 ? matrix : DEFAULT_GLTF_TO_LPS);
	}

	/** LPS mm [x, y, z] (rounded to 1 µm) of a point in model space. */
	lpsOf(modelPoint) {
		_v.copy(modelPoint).applyMatrix4(this.toLps);
		return [round3(_v.x), round3(_v.y), round3(_v.z)];
	}

	/** Write the model-space point of LPS mm [x, y, z] into `target` and return it. */
	modelOf(lps, target) {
		return target.set(lps[0], lps[1], lps[2]).applyMatrix4(this.toModel);
	}
}

function round3(x) {
	return Math.round(x * 1000) / 1000;
}
