// Immersive VR, like three.js' VRButton but part of the room: an "Enter VR" button (immersive-vr with a
// local-floor space), controllers with ray pointers and a hover reticle, hand tracking where the device
// offers it (pinch = select), and the controller buttons mapped to the tools:
//   trigger (select) = use the active tool; squeeze = grab the model (both hands: scale);
//   A = next tool; B = undo my last annotation.
import {
	BoxGeometry, BufferGeometry, Float32BufferAttribute, Line, LineBasicMaterial, Mesh, MeshBasicMaterial,
	MeshStandardMaterial, Ray, SphereGeometry, Vector3,
} from 'three';
import { XRHandModelFactory } from 'three/addons/webxr/XRHandModelFactory.js';

import { LabelLayer } from './labels.js';
import { Hit } from './picker.js';

const SESSION_INIT = { optionalFeatures: ['local-floor', 'bounded-floor', 'hand-tracking', 'layers'] };
const RAY_LENGTH = 3;
const HOVER_EVERY_MS = 100; // hover picks (on the coarse meshes) ten times a second
const BUTTON_A = 4; // xr-standard gamepad mapping: A/X
const BUTTON_B = 5; // B/Y

const _p = new Vector3();

class Hand {
	constructor(xr, index) {
		this.index = index;
		this.controller = xr.getController(index);
		this.grip = xr.getControllerGrip(index);
		this.hand = xr.getHand(index);
		this.handedness = index === 0 ? 'right' : 'left';
		this.inputSource = null;
		this.input = { source: this.handedness, ray: new Ray(), controller: this.controller, event: null, tool: null };
		this.pressed = false;
		this.buttons = [false, false, false, false, false, false, false];
		this.hit = new Hit();
		this.hovering = false;
	}
}

export class XRSession extends EventTarget {
	constructor(stage, toolbox, picker, atlas, { onUndo, notify } = {}) {
		super();
		this.stage = stage;
		this.toolbox = toolbox;
		this.picker = picker;
		this.onUndo = onUndo;
		this.notify = notify ?? (() => {});
		this.session = null;
		this.supported = false;
		this.reason = 'checking for a VR headset…';
		this.frameCount = 0;
		this.lastHover = 0;
		const xr = stage.renderer.xr;
		const handFactory = new XRHandModelFactory();
		const rayGeometry = new BufferGeometry();
		rayGeometry.setAttribute('position', new Float32BufferAttribute([0, 0, 0, 0, 0, -1], 3));
		const rayMaterial = new LineBasicMaterial({ color: 0xffffff, transparent: true, opacity: 0.8 });
		const reticleMaterial = new MeshBasicMaterial({ color: 0xffffff, depthTest: false });
		const bodyMaterial = new MeshStandardMaterial({ color: 0x2b3038, roughness: 0.6 });
		this.hands = [0, 1].map((index) => {
			const h = new Hand(xr, index);
			h.ray = new Line(rayGeometry, rayMaterial);
			h.ray.scale.z = RAY_LENGTH;
			h.ray.frustumCulled = false;
			h.reticle = new Mesh(new SphereGeometry(0.004, 10, 8), reticleMaterial);
			h.reticle.visible = false;
			h.reticle.renderOrder = 30;
			h.controller.add(h.ray);
			stage.scene.add(h.reticle);
			h.grip.add(new Mesh(new BoxGeometry(0.035, 0.03, 0.11), bodyMaterial));
			h.hand.add(handFactory.createHandModel(h.hand, 'spheres'));
			stage.rig.add(h.controller, h.grip, h.hand);
			h.controller.addEventListener('connected', (e) => {
				h.inputSource = e.data;
				h.handedness = e.data.handedness || h.handedness;
				h.input.source = h.handedness;
				h.ray.visible = e.data.targetRayMode === 'tracked-pointer' || Boolean(e.data.hand);
			});
			h.controller.addEventListener('disconnected', () => {
				h.inputSource = null;
				if (h.pressed) this.release(h);
			});
			h.controller.addEventListener('selectstart', () => this.press(h, null));
			h.controller.addEventListener('selectend', () => this.release(h));
			h.controller.addEventListener('squeezestart', () => this.press(h, 'grab'));
			h.controller.addEventListener('squeezeend', () => this.release(h));
			return h;
		});
		// The active tool's name, floating above the right controller.
		this.hud = new LabelLayer(atlas, 2, { height: 0.02, lift: 0.03 });
		this.hud.visible = false;
		stage.scene.add(this.hud);
		toolbox.addEventListener('change', () => this.showTool());
		stage.onFrame((time) => this.update(time));
		xr.addEventListener('sessionend', () => this.ended());
	}

	/** Find out whether immersive VR is possible here; sets `supported` and `reason`. */
	async probe() {
		if (!navigator.xr) {
			this.reason = 'WebXR is not available in this browser (use a headset browser, over HTTPS)';
		} else {
			try {
				this.supported = await navigator.xr.isSessionSupported('immersive-vr');
				this.reason = this.supported ? null : 'no VR headset is available';
			} catch (error) {
				this.reason = `WebXR refused: ${error.message}`;
			}
		}
		this.dispatchEvent(new Event('change'));
		return this.supported;
	}

	get presenting() {
		return this.session !== null;
	}

	async enter() {
		if (this.session || !this.supported) return;
		const session = await navigator.xr.requestSession('immersive-vr', SESSION_INIT);
		await this.stage.renderer.xr.setSession(session);
		this.session = session;
		this.hud.visible = true;
		this.showTool();
		this.dispatchEvent(new Event('change'));
	}

	async exit() {
		await this.session?.end();
	}

	ended() {
		for (const h of this.hands) if (h.pressed) this.release(h);
		this.session = null;
		this.hud.visible = false;
		for (const h of this.hands) h.reticle.visible = false;
		this.stage.onResize();
		this.dispatchEvent(new Event('change'));
	}

	aim(h) {
		h.controller.updateWorldMatrix(true, false);
		h.input.ray.origin.setFromMatrixPosition(h.controller.matrixWorld);
		h.input.ray.direction.set(0, 0, -1).transformDirection(h.controller.matrixWorld);
		return h.input;
	}

	press(h, toolId) {
		if (h.pressed) return;
		h.pressed = true;
		const input = this.aim(h);
		if (toolId) this.toolbox.press(input, toolId);
		else this.toolbox.press(input);
	}

	release(h) {
		if (!h.pressed) return;
		h.pressed = false;
		this.toolbox.release(this.aim(h));
	}

	showTool() {
		const tool = this.toolbox.current();
		if (tool) this.hud.set('tool', tool.title, '#7fc8ff', 0, 0, 0);
	}

	/** Per frame while presenting: drive held tools, poll A/B, hover reticles, the HUD. */
	update(time) {
		if (!this.session) return;
		this.frameCount += 1;
		const hover = time - this.lastHover >= HOVER_EVERY_MS;
		if (hover) this.lastHover = time;
		for (let i = 0; i < this.hands.length; i++) {
			const h = this.hands[i];
			if (!h.inputSource) continue;
			if (h.pressed) this.toolbox.move(this.aim(h));
			const gamepad = h.inputSource.gamepad;
			if (gamepad) {
				const a = gamepad.buttons[BUTTON_A]?.pressed ?? false;
				const b = gamepad.buttons[BUTTON_B]?.pressed ?? false;
				if (a && !h.buttons[BUTTON_A]) this.toolbox.cycle(h.handedness === 'left' ? -1 : 1);
				if (b && !h.buttons[BUTTON_B]) this.onUndo?.();
				h.buttons[BUTTON_A] = a;
				h.buttons[BUTTON_B] = b;
			}
			if (hover) {
				h.hovering = this.picker.pick(this.aim(h).ray, h.hit, { coarse: true });
				h.reticle.visible = h.hovering;
				if (h.hovering) {
					h.reticle.position.copy(h.hit.point);
					h.ray.scale.z = Math.max(0.01, h.hit.distance / Math.max(1e-6, h.controller.matrixWorld.getMaxScaleOnAxis()));
				} else {
					h.ray.scale.z = RAY_LENGTH;
				}
			}
			if (h.handedness === 'right') {
				_p.setFromMatrixPosition(h.controller.matrixWorld);
				this.hud.move('tool', _p.x, _p.y, _p.z);
			}
		}
	}
}
