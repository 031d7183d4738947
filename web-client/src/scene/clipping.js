// Clip planes of the room state. They are kept in model space (normal · p + constant = 0, the side the normal
// points to is kept) and turned into world planes every frame, so they follow the model when it moves. The
// tissue materials all share the one world-plane array (Stage.clipPlanes). A faint quad shows each plane.
// The slice quads clip by the room's planes alone (`roomPlanes`); the tissues also by a slice's cut (setCut),
// this viewer's own: the anatomy on the camera's side of the selected slice is cut away, so the image is seen.
import { DoubleSide, Mesh, MeshBasicMaterial, Plane, PlaneGeometry, Quaternion, Vector3 } from 'three';

const _z = new Vector3(0, 0, 1);
const _q = new Quaternion();
const _p = new Vector3();

export class Clipping {
	/** `maxPlanes`: the room limits' max_clip_planes. */
	constructor(stage, maxPlanes) {
		this.stage = stage;
		this.maxPlanes = maxPlanes;
		this.model = []; // model-space planes, in the order of stage.clipPlanes
		this.ids = [];
		this.roomPlanes = []; // world planes of the room's clip planes only (what the slice quads clip by)
		this.cut = null; // the selected slice's plane in model space, or null
		this.cutWorld = new Plane();
		this.state = null;
		this.camera = new Vector3();
		this.pool = Array.from({ length: maxPlanes }, () => new Plane());
		this.worldPool = Array.from({ length: maxPlanes }, () => new Plane());
		const material = new MeshBasicMaterial({ color: 0x7fc8ff, transparent: true, opacity: 0.12, side: DoubleSide, depthWrite: false });
		this.quads = Array.from({ length: maxPlanes }, () => {
			const quad = new Mesh(new PlaneGeometry(1, 1), material);
			quad.visible = false;
			stage.modelFrame.add(quad);
			return quad;
		});
	}

	/** Rebuild from the room state's clip planes. */
	render(state) {
		this.state = state;
		const planes = this.stage.clipPlanes;
		planes.length = 0;
		this.roomPlanes.length = 0;
		this.model.length = 0;
		this.ids.length = 0;
		const size = this.stage.bounds.isEmpty() ? 0.3 : this.stage.bounds.getSize(_p).length();
		const centre = this.stage.bounds.getCenter(new Vector3());
		let i = 0;
		for (const clip of state.clips.values()) {
			if (i >= this.maxPlanes) break;
			const plane = this.pool[i].set(_p.fromArray(clip.normal), clip.constant);
			this.model.push(plane);
			this.ids.push(clip.id);
			planes.push(this.worldPool[i]);
			this.roomPlanes.push(this.worldPool[i]);
			const quad = this.quads[i];
			plane.projectPoint(centre, quad.position);
			quad.quaternion.copy(_q.setFromUnitVectors(_z, plane.normal));
			quad.scale.setScalar(size);
			quad.visible = true;
			i += 1;
		}
		for (; i < this.maxPlanes; i++) this.quads[i].visible = false;
		if (this.cut) planes.push(this.cutWorld);
		this.update();
	}

	/** Cut the anatomy at `plane` ({normal, constant} in model space) on the viewer's side; null: no cut. */
	setCut(plane) {
		this.cut = plane ? new Plane(plane.normal.clone(), plane.constant) : null;
		if (this.state) this.render(this.state);
	}

	/** Per frame: model-space planes to world space through the model's current transform. */
	update() {
		const matrix = this.stage.modelFrame.matrixWorld;
		const planes = this.stage.clipPlanes;
		for (let i = 0; i < this.model.length; i++) planes[i].copy(this.model[i]).applyMatrix4(matrix);
		if (this.cut) {
			// three.js clips the negative side: turn the cut so that the camera's side is the one cut away.
			this.cutWorld.copy(this.cut).applyMatrix4(matrix);
			this.stage.camera.getWorldPosition(this.camera);
			if (this.cutWorld.distanceToPoint(this.camera) > 0) this.cutWorld.negate();
		}
	}
}
