// The stage: renderer, camera rig, lights, the table, and the frames the patient hangs in.
//
//   scene
//   ├─ rig (the user's own origin: follow-me moves it; the camera and XR controllers live in it)
//   └─ table: a fixed point above the table top (shared by everyone)
//      └─ modelRoot: the room's model.transform (position, quaternion, scale), shared through the hub
//         └─ modelFrame: "model space" = the GLB's frame (glTF metres, +Y up), recentred on the patient
//            └─ tissue meshes, annotations, clip planes ...
//
// The patient stands in anatomical position (Superior up, face toward +Z), 1:1 by default, resting on the table.
// The recentring comes from the coarse meshes' bounds, rounded to the millimetre, so every client computes
// the same model-to-room mapping and poses, clip planes and pointers (all in model space) line up.
import {
	Box3, BoxGeometry, Color, DirectionalLight, GridHelper, Group, HemisphereLight, Mesh, MeshStandardMaterial,
	PerspectiveCamera, Scene, SRGBColorSpace, Vector2, Vector3, WebGLRenderer,
} from 'three';

import { seatDirection, seatRadius, TIER_RISE } from './seating.js';

const TABLE_TOP = 0.9; // m above the floor
const TABLE_Z = -0.5; // m in front of a user standing at the origin

/**
 * Whether WebGL here is a software rasterizer (SwiftShader, llvmpipe: no GPU). Multisampling costs such a
 * renderer several times a frame's work, so the stage then draws without it.
 */
function softwareRenderer() {
	const canvas = document.createElement('canvas');
	const gl = canvas.getContext('webgl2');
	if (!gl) return false;
	const info = gl.getExtension('WEBGL_debug_renderer_info');
	const name = info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER);
	gl.getExtension('WEBGL_lose_context')?.loseContext();
	return /swiftshader|llvmpipe|software/i.test(String(name));
}

export class Stage {
	constructor(container, { antialias = !softwareRenderer() } = {}) {
		this.container = container;
		const renderer = new WebGLRenderer({ antialias, powerPreference: 'high-performance' });
		renderer.setPixelRatio(Math.min(window.devicePixelRatio, 2));
		renderer.setSize(container.clientWidth || 1, container.clientHeight || 1);
		renderer.outputColorSpace = SRGBColorSpace;
		renderer.localClippingEnabled = true;
		renderer.xr.enabled = true;
		renderer.xr.setReferenceSpaceType('local-floor');
		container.appendChild(renderer.domElement);
		this.renderer = renderer;

		const scene = new Scene();
		scene.background = new Color(0x1d2128);
		this.scene = scene;

		this.camera = new PerspectiveCamera(50, 1, 0.01, 50);
		this.camera.position.set(0, 1.3, 0.25);
		this.rig = new Group();
		this.rig.name = 'rig';
		this.rig.add(this.camera);
		scene.add(this.rig);

		this.addLights();
		this.addRoom();

		this.table = new Group();
		this.table.name = 'table';
		this.table.position.set(0, TABLE_TOP, TABLE_Z);
		this.modelRoot = new Group();
		this.modelRoot.name = 'model';
		this.modelFrame = new Group();
		this.modelFrame.name = 'model-space';
		this.modelRoot.add(this.modelFrame);
		this.table.add(this.modelRoot);
		scene.add(this.table);

		/** World-space clip planes shared by every tissue material (see clipping.js). */
		this.clipPlanes = [];
		this.bounds = new Box3(); // of the patient, in model space
		this.frameCallbacks = [];
		this.lastTime = 0;
		this.frameMs = 0;
		this.renders = 0;
		// A desktop renders only when something changed (invalidate()); a headset renders every frame.
		this.dirty = true;

		// Follow the container (which a window resize also resizes): a panel that opens, or a preview shown after
		// the stage was made (it measured 0 x 0 then), changes its size without a window resize.
		this.resizeObserver = new ResizeObserver(() => {
			const size = this.renderer.getSize(new Vector2());
			if (size.x !== (container.clientWidth || 1) || size.y !== (container.clientHeight || 1)) this.onResize();
		});
		this.resizeObserver.observe(container);
		this.onResize();
	}

	addLights() {
		// Bright, soft and frontal: reads well in a headset without shadows (which cost a pass per light).
		this.scene.add(new HemisphereLight(0xf4f1ea, 0x3a3f4a, 1.6));
		const key = new DirectionalLight(0xffffff, 2.2);
		key.position.set(0.6, 2.6, 1.4);
		const fill = new DirectionalLight(0xcfe0ff, 0.8);
		fill.position.set(-1.5, 1.2, -1.0);
		this.scene.add(key, key.target, fill, fill.target);
	}

	addRoom() {
		const grid = new GridHelper(10, 20, 0x3b4250, 0x2a2f38);
		grid.name = 'floor';
		this.scene.add(grid);
		const top = new Mesh(new BoxGeometry(0.7, 0.04, 0.5), new MeshStandardMaterial({ color: 0x5b6370, roughness: 0.8 }));
		top.name = 'table-top';
		top.position.set(0, TABLE_TOP - 0.02, TABLE_Z);
		const leg = new Mesh(new BoxGeometry(0.08, TABLE_TOP - 0.04, 0.08), top.material);
		leg.position.set(0, (TABLE_TOP - 0.04) / 2, TABLE_Z);
		this.scene.add(top, leg);
	}

	/** Recentre the patient from its model-space bounds: centred on the table, resting on its top. */
	placePatient(bounds) {
		const mm = (v) => Math.round(v * 1000) / 1000;
		this.bounds.copy(bounds);
		const centre = bounds.getCenter(new Vector3());
		const size = bounds.getSize(new Vector3());
		this.modelFrame.position.set(-mm(centre.x), -mm(centre.y), -mm(centre.z));
		this.table.position.set(0, TABLE_TOP + mm(size.y / 2), TABLE_Z);
		this.table.updateMatrixWorld(true);
		this.invalidate();
	}

	/** Apply the room's model.transform {position, quaternion, scale}. */
	setModelTransform(model) {
		this.modelRoot.position.fromArray(model.position);
		this.modelRoot.quaternion.fromArray(model.quaternion);
		this.modelRoot.scale.setScalar(model.scale);
		this.modelRoot.updateMatrixWorld(true);
		this.invalidate();
	}

	/** The patient's centre in world space (into `target`). */
	patientCentre(target = new Vector3()) {
		return this.bounds.getCenter(target).applyMatrix4(this.modelFrame.matrixWorld);
	}

	/** Look at the patient from `seat` (the server's {tier, angle}; seating.js), a little above it, at least as
	 * far as the whole patient fits the view. Every participant has their own seat, so nobody starts inside
	 * anybody's avatar. */
	frameDesktopCamera(controls, seat = null) {
		const centre = this.patientCentre();
		const size = this.bounds.getSize(new Vector3()).length() * this.modelRoot.scale.x;
		const distance = seatRadius(seat, Math.max(0.35, size * 1.5));
		const rise = TIER_RISE * (seat?.tier ?? 0);
		this.camera.position.copy(centre).addScaledVector(seatDirection(seat), distance);
		this.camera.position.y += distance * 0.25 + rise;
		this.aimAt(centre, controls);
	}

	/** Look at the patient from the front and a little above, as close as its whole bounding sphere fits the
	 * view (both ways, whatever the aspect ratio): a small preview shows the anatomy, not the room. */
	fitCamera(controls) {
		const centre = this.patientCentre();
		const radius = Math.max(0.01, (this.bounds.getSize(new Vector3()).length() / 2) * this.modelRoot.scale.x);
		const vertical = (this.camera.fov * Math.PI) / 180;
		const horizontal = 2 * Math.atan(Math.tan(vertical / 2) * this.camera.aspect);
		const distance = (1.1 * radius) / Math.sin(Math.min(vertical, horizontal) / 2);
		const direction = new Vector3(0, 0.3, 1).normalize();
		this.camera.position.copy(centre).addScaledVector(direction, distance);
		this.aimAt(centre, controls);
	}

	/** Turn the camera (and the orbit `controls`, if any) toward `centre`. */
	aimAt(centre, controls) {
		this.camera.lookAt(centre);
		if (controls) {
			controls.target.copy(centre);
			controls.update();
		}
		this.invalidate();
	}

	/** Call fn(timeMs, dtSeconds, xrFrame) every frame. */
	/** fn(camera) just before each frame that is drawn (what depends on the viewpoint: sizes, overlaps). */
	beforeRender(fn) {
		(this.renderCallbacks ??= []).push(fn);
	}

	onFrame(fn) {
		this.frameCallbacks.push(fn);
	}

	start() {
		this.renderer.setAnimationLoop((time, xrFrame) => this.frame(time, xrFrame));
	}

	/** Something visible changed: draw a new frame (on a desktop, frames are drawn only then). */
	invalidate() {
		this.dirty = true;
	}

	frame(time, xrFrame) {
		const dt = this.lastTime ? Math.min(0.1, (time - this.lastTime) / 1000) : 0;
		this.lastTime = time;
		const begin = performance.now();
		this.scene.updateMatrixWorld();
		const callbacks = this.frameCallbacks;
		for (let i = 0; i < callbacks.length; i++) callbacks[i](time, dt, xrFrame);
		if (!this.dirty && !this.renderer.xr.isPresenting) return;
		this.dirty = false;
		const before = this.renderCallbacks ?? [];
		for (let i = 0; i < before.length; i++) before[i](this.camera);
		this.renderer.render(this.scene, this.camera);
		this.renders += 1;
		const spent = performance.now() - begin;
		this.frameMs = this.frameMs ? this.frameMs * 0.9 + spent * 0.1 : spent;
	}

	onResize() {
		const width = this.container.clientWidth || 1;
		const height = this.container.clientHeight || 1;
		this.camera.aspect = width / height;
		this.camera.updateProjectionMatrix();
		if (!this.renderer.xr.isPresenting) this.renderer.setSize(width, height);
		this.invalidate();
	}

	/** The world rotation of model space (no scale), into `target`. */
	modelWorldQuaternion(target) {
		return this.modelFrame.getWorldQuaternion(target);
	}
}
