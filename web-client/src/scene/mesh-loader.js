// The room's meshes: GET /api/meshes/{id}.glb (Draco-compressed), the coarse level first (?lod=0, at most
// 30,000 triangles, a fast first picture), then full detail, which replaces it. Progress covers both.
// The coarse meshes stay, invisible, as cheap picking proxies for the per-frame hover ray.
import { Box3, DoubleSide } from 'three';
import { DRACOLoader } from 'three/addons/loaders/DRACOLoader.js';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';

import { PatientFrame } from './patient-frame.js';
import { Tissue } from './tissue.js';

const DRACO_PATH = '/vendor/three/examples/jsm/libs/draco/';
const COARSE_SHARE = 0.3; // of the progress bar

export class MeshLoader {
	constructor(stage, token) {
		this.stage = stage;
		const draco = new DRACOLoader().setDecoderPath(DRACO_PATH);
		this.loader = new GLTFLoader().setDRACOLoader(draco);
		if (token) this.loader.setRequestHeader({ Authorization: `Bearer ${token}` });
		this.draco = draco;
		this.tissues = [];
		this.revision = 0; // bumped whenever meshes come in (a coarse level, its full detail, one more mesh)
		this.patient = new PatientFrame();
	}

	/** Load `meshIds`, coarse then full (unless coarseOnly: a preview). onProgress(fraction, words); onCoarse()
	 * once the first picture is up. */
	async load(meshIds, { onProgress = () => {}, onCoarse = () => {}, coarseOnly = false } = {}) {
		const coarseBytes = new Map();
		const fullBytes = new Map();
		const share = (bytes) => {
			let sum = 0;
			for (const { l, t } of bytes.values()) sum += t ? Math.min(1, l / t) : 0;
			return sum / Math.max(1, meshIds.length);
		};
		const report = (words) => onProgress(COARSE_SHARE * share(coarseBytes) + (1 - COARSE_SHARE) * share(fullBytes), words);
		const fetch = (id, coarse) => {
			const bytes = coarse ? coarseBytes : fullBytes;
			const url = glbUrl(id, { coarse });
			const words = coarse ? 'Loading a first view' : 'Loading full detail';
			return this.loader.loadAsync(url, (e) => {
				bytes.set(id, { l: e.loaded, t: e.lengthComputable ? e.total : 0 });
				report(words);
			}).then((gltf) => {
				bytes.set(id, { l: 1, t: 1 });
				report(words);
				return gltf;
			});
		};

		report('Loading a first view');
		const coarse = await Promise.all(meshIds.map((id) => fetch(id, true).catch(() => null)));
		const bounds = new Box3();
		coarse.forEach((gltf, i) => {
			if (!gltf) return;
			if (i === 0 || !this.tissues.length) this.patient = PatientFrame.of(gltf.scene);
			for (const mesh of this.adopt(gltf, meshIds[i])) {
				this.tissues.push(new Tissue(meshIds[i], presetOf(mesh), mesh));
				mesh.geometry.computeBoundingBox();
				bounds.union(mesh.geometry.boundingBox.clone().applyMatrix4(mesh.matrix));
			}
		});
		if (!bounds.isEmpty()) {
			this.stage.placePatient(bounds);
			onCoarse();
		}

		if (coarseOnly && !bounds.isEmpty()) {
			onProgress(1, 'Ready');
			return this.tissues;
		}
		const full = await Promise.all(meshIds.map((id) => fetch(id, false)));
		full.forEach((gltf, i) => {
			if (!this.tissues.length) this.patient = PatientFrame.of(gltf.scene);
			for (const mesh of this.adopt(gltf, meshIds[i])) {
				const preset = presetOf(mesh);
				const part = partOf(mesh);
				const tissue = this.tissues.find((t) => t.meshId === meshIds[i] && partOf(t.mesh) === part);
				if (tissue) {
					this.stage.modelFrame.remove(tissue.mesh);
					tissue.mesh = mesh;
				} else {
					this.tissues.push(new Tissue(meshIds[i], preset, mesh));
				}
			}
		});
		if (bounds.isEmpty()) {
			for (const t of this.tissues) {
				t.mesh.geometry.computeBoundingBox();
				bounds.union(t.mesh.geometry.boundingBox.clone().applyMatrix4(t.mesh.matrix));
			}
			this.stage.placePatient(bounds);
			onCoarse();
		}
		onProgress(1, 'Ready');
		return this.tissues;
	}

	/** Load one more mesh of the room at full detail (a structure grown in the room): its surfaces join the
	 * tissues where the patient already is. Resolves to the new tissues ([] if it was loaded already). */
	async add(meshId) {
		if (this.tissues.some((t) => t.meshId === meshId)) return [];
		this.adding ??= new Map();
		if (!this.adding.has(meshId)) {
			this.adding.set(meshId, this.loader.loadAsync(glbUrl(meshId)).then((gltf) => {
				const added = this.adopt(gltf, meshId).map((mesh) => new Tissue(meshId, presetOf(mesh), mesh));
				this.tissues.push(...added);
				this.stage.invalidate();
				return added;
			}).finally(() => this.adding.delete(meshId)));
		}
		return this.adding.get(meshId);
	}

	/** Put a loaded glTF's meshes into model space, with materials that clip and show their cut side. */
	adopt(gltf, meshId) {
		this.revision += 1;
		const meshes = [];
		gltf.scene.updateMatrixWorld(true);
		gltf.scene.traverse((object) => {
			if (object.isMesh) meshes.push(object);
		});
		for (const mesh of meshes) {
			mesh.matrix.copy(mesh.matrixWorld); // node transforms, relative to the glTF scene (= model space)
			mesh.matrix.decompose(mesh.position, mesh.quaternion, mesh.scale);
			const material = mesh.material;
			material.side = DoubleSide; // a clip plane opens the surface: show its inside
			material.clippingPlanes = this.stage.clipPlanes;
			mesh.userData.meshId = meshId;
			this.stage.modelFrame.add(mesh);
		}
		return meshes;
	}

	tissueOf(mesh) {
		return this.tissues.find((t) => t.mesh === mesh || t.proxy === mesh) ?? null;
	}
}

/** Where a mesh's GLB is served (docs/glb.md): `coarse`, its first, light level of detail. */
function glbUrl(meshId, { coarse = false } = {}) {
	return `/api/meshes/${encodeURIComponent(meshId)}.glb${coarse ? '?lod=0' : ''}`;
}

/** A named structure's number (the GLB node's extras, docs/structures.md), or null for an iso-surface. */
export function structureOf(mesh) {
	const n = mesh.userData?.structure;
	return Number.isInteger(n) ? n : null;
}

/** Which surface of its GLB a mesh is: the structure's number, else its preset. */
function partOf(mesh) {
	const n = structureOf(mesh);
	return n === null ? presetOf(mesh) : `structure ${n}`;
}

function presetOf(mesh) {
	return mesh.userData?.preset ?? mesh.parent?.userData?.preset ?? mesh.name ?? 'mesh';
}
