// Immersive VR, like three.js' VRButton but part of the room: whether a headset is there (for the status bar's
// Enter VR button), entering and leaving an immersive-vr session (local-floor space), the two Hands (ray
// pointers with a hover reticle, hand tracking where the device offers it: pinch = select), the active tool's
// name above the right hand, and the controller buttons mapped to the tools:
//   trigger (select) = use the active tool; squeeze = grab the model (both hands: scale);
//   A = next tool; B = undo my last annotation; the thumbstick goes to the active tool (the slice tool's depth
//   and presets).
import {
	BoxGeometry, BufferGeometry, Float32BufferAttribute, LineBasicMaterial, MeshBasicMaterial, MeshStandardMaterial, Vector3,
} from 'three';
import { XRHandModelFactory } from 'three/addons/webxr/XRHandModelFactory.js';

import { LabelLayer } from '../scene/label-layer.js';
import { Hand } from './hand.js';

const SESSION_INIT = { optionalFeatures: ['local-floor', 'bounded-floor', 'hand-tracking', 'layers'] };
const HOVER_EVERY_MS = 100; // hover picks (on the coarse meshes) ten times a second
const BUTTON_A = 4; // xr-standard gamepad mapping: A/X
const BUTTON_B = 5; // B/Y
const STICK_X = 2; // xr-standard: the thumbstick's axes
const STICK_Y = 3;

const _p = new Vector3();

export class ImmersiveSession extends EventTarget {
	constructor(stage, toolbox, picker, atlas, { onUndo } = {}) {
		super();
		this.stage = stage;
		this.toolbox = toolbox;
		this.picker = picker;
		this.onUndo = onUndo;
		this.session = null;
		this.supported = false;
		this.reason = 'checking for a VR headset…';
		this.frameCount = 0;
		this.lastTime = 0;
		this.lastHover = 0;
		const rayGeometry = new BufferGeometry();
		rayGeometry.setAttribute('position', new Float32BufferAttribute([0, 0, 0, 0, 0, -1], 3));
		const looks = {
			rayGeometry,
			rayMaterial: new LineBasicMaterial({ color: 0xffffff, transparent: true, opacity: 0.8 }),
			reticleMaterial: new MeshBasicMaterial({ color: 0xffffff, depthTest: false }),
			bodyGeometry: new BoxGeometry(0.035, 0.03, 0.11),
			bodyMaterial: new MeshStandardMaterial({ color: 0x2b3038, roughness: 0.6 }),
			handFactory: new XRHandModelFactory(),
		};
		this.hands = [0, 1].map((index) => {
			const hand = new Hand(stage, index, looks);
			hand.controller.addEventListener('disconnected', () => {
				hand.inputSource = null;
				if (hand.pressed) this.release(hand);
			});
			hand.controller.addEventListener('selectstart', () => this.press(hand, null));
			hand.controller.addEventListener('selectend', () => this.release(hand));
			hand.controller.addEventListener('squeezestart', () => this.press(hand, 'grab'));
			hand.controller.addEventListener('squeezeend', () => this.release(hand));
			return hand;
		});
		// The active tool's name, floating above the right controller.
		this.hud = new LabelLayer(atlas, 3, { height: 0.02, lift: 0.03 });
		this.describe = null; // hit -> {name, color} of a named structure, or null (app.js: the StructureView)
		this.hud.visible = false;
		stage.scene.add(this.hud);
		toolbox.addEventListener('change', () => this.showTool());
		stage.onFrame((time) => this.update(time));
		stage.renderer.xr.addEventListener('sessionend', () => this.ended());
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
		for (const hand of this.hands) if (hand.pressed) this.release(hand);
		this.session = null;
		this.hud.visible = false;
		for (const hand of this.hands) hand.reticle.visible = false;
		this.stage.onResize();
		this.dispatchEvent(new Event('change'));
	}

	press(hand, toolId) {
		if (hand.pressed) return;
		hand.pressed = true;
		const input = hand.aim();
		if (toolId) this.toolbox.press(input, toolId);
		else this.toolbox.press(input);
	}

	release(hand) {
		if (!hand.pressed) return;
		hand.pressed = false;
		this.toolbox.release(hand.aim());
	}

	showTool() {
		const tool = this.toolbox.current();
		if (tool) this.hud.set('tool', tool.title, '#7fc8ff', 0, 0, 0);
	}

	/** The name of the structure the right hand points at, above its reticle (or none). */
	showName(hand) {
		const structure = hand.hovering && this.describe ? this.describe(hand.hit) : null;
		if (!structure) {
			this.hud.remove('name');
			return;
		}
		const p = hand.hit.point;
		this.hud.set('name', structure.name, structure.color, p.x, p.y + 0.02, p.z);
	}

	/** Per frame while presenting: drive held tools, poll A/B and the thumbstick, hover reticles, the HUD. */
	update(time) {
		if (!this.session) return;
		const dt = this.lastTime ? Math.min(0.1, (time - this.lastTime) / 1000) : 0;
		this.lastTime = time;
		const tool = this.toolbox.current();
		this.frameCount += 1;
		const hover = time - this.lastHover >= HOVER_EVERY_MS;
		if (hover) this.lastHover = time;
		for (let i = 0; i < this.hands.length; i++) {
			const hand = this.hands[i];
			if (!hand.inputSource) continue;
			if (hand.pressed) this.toolbox.move(hand.aim());
			const gamepad = hand.inputSource.gamepad;
			if (gamepad) {
				const a = gamepad.buttons[BUTTON_A]?.pressed ?? false;
				const b = gamepad.buttons[BUTTON_B]?.pressed ?? false;
				if (a && !hand.buttons[BUTTON_A]) this.toolbox.cycle(hand.handedness === 'left' ? -1 : 1);
				if (b && !hand.buttons[BUTTON_B]) this.onUndo?.();
				hand.buttons[BUTTON_A] = a;
				hand.buttons[BUTTON_B] = b;
				if (tool?.thumbstick && !this.toolbox.reason(this.toolbox.active)) {
					tool.thumbstick(hand, gamepad.axes[STICK_X] ?? 0, gamepad.axes[STICK_Y] ?? 0, dt);
				}
			}
			if (hover) {
				hand.showHover(this.picker.pick(hand.aim().ray, hand.hit, { coarse: true }));
				if (hand.handedness === 'right') this.showName(hand);
			}
			if (hand.handedness === 'right') {
				_p.setFromMatrixPosition(hand.controller.matrixWorld);
				this.hud.move('tool', _p.x, _p.y, _p.z);
			}
		}
	}
}
