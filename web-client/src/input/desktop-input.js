// The desktop fallback: orbit controls around the patient and mouse picking for the tools.
// Click tools (point, measure, pointer) act on a click and leave dragging to the orbit; drag tools (stroke,
// grab, clip, slice) take the left button and leave orbiting to the right button. Keys: Ctrl+Z undoes my last
// annotation, Escape puts down what a tool was doing, 1-8 pick a tool (in the toolbar's order).
import { MOUSE, Ray, Raycaster, Vector2 } from 'three';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';

import { mySeat } from '../scene/seating.js';

const DRAG_TOOLS = new Set(['stroke', 'grab', 'clip', 'slice']);
const CLICK_SLOP_PX = 5;

export class DesktopInput {
	constructor(stage, toolbox, { onUndo } = {}) {
		this.stage = stage;
		this.toolbox = toolbox;
		this.canvas = stage.renderer.domElement;
		this.controls = new OrbitControls(stage.camera, this.canvas);
		this.controls.enableDamping = false;
		this.controls.minDistance = 0.05;
		this.controls.maxDistance = 6;
		this.controls.addEventListener('change', () => stage.invalidate());
		this.raycaster = new Raycaster();
		this.ndc = new Vector2();
		this.input = { source: 'mouse', ray: new Ray(), controller: null, event: null, tool: null };
		this.down = null;
		this.following = false;
		this.seat = null; // mine, from the room's state (scene/seating.js)
		this.onUndo = onUndo;

		this.canvas.addEventListener('pointerdown', (e) => this.onDown(e));
		this.canvas.addEventListener('pointermove', (e) => this.onMove(e));
		this.canvas.addEventListener('pointerup', (e) => this.onUp(e));
		this.canvas.addEventListener('wheel', (e) => this.onWheel(e), { passive: false });
		this.canvas.addEventListener('contextmenu', (e) => e.preventDefault());
		window.addEventListener('keydown', (e) => this.onKey(e));
		toolbox.addEventListener('change', () => this.configure());
		this.configure();
	}

	/** Left button to the tool for drag tools, to the orbit otherwise. */
	configure() {
		const drag = DRAG_TOOLS.has(this.toolbox.active);
		this.controls.mouseButtons = drag
			? { LEFT: null, MIDDLE: MOUSE.DOLLY, RIGHT: MOUSE.ROTATE }
			: { LEFT: MOUSE.ROTATE, MIDDLE: MOUSE.DOLLY, RIGHT: MOUSE.PAN };
		this.controls.enableZoom = this.toolbox.active !== 'grab';
		this.canvas.style.cursor = this.toolbox.active === 'view' ? 'grab' : 'crosshair';
	}

	setFollowing(following) {
		this.following = following;
		this.controls.enabled = !following;
	}

	rayAt(event) {
		const rect = this.canvas.getBoundingClientRect();
		this.ndc.set(((event.clientX - rect.left) / rect.width) * 2 - 1, -((event.clientY - rect.top) / rect.height) * 2 + 1);
		this.raycaster.setFromCamera(this.ndc, this.stage.camera);
		this.input.ray.copy(this.raycaster.ray);
		this.input.event = event;
		return this.input;
	}

	onDown(event) {
		if (event.button !== 0 || this.following || this.stage.renderer.xr.isPresenting) return;
		this.down = { x: event.clientX, y: event.clientY, drag: DRAG_TOOLS.has(this.toolbox.active) };
		if (this.down.drag) {
			this.canvas.setPointerCapture(event.pointerId);
			this.toolbox.press(this.rayAt(event));
		}
	}

	onMove(event) {
		if (this.down?.drag) this.toolbox.move(this.rayAt(event));
	}

	onUp(event) {
		const down = this.down;
		this.down = null;
		if (!down || event.button !== 0) return;
		if (down.drag) {
			this.toolbox.release(this.rayAt(event));
			return;
		}
		const moved = Math.hypot(event.clientX - down.x, event.clientY - down.y);
		if (moved > CLICK_SLOP_PX || this.toolbox.active === 'view') return; // that was an orbit
		const input = this.rayAt(event);
		this.toolbox.press(input);
		this.toolbox.release(input);
	}

	onWheel(event) {
		if (this.toolbox.active !== 'grab' || this.toolbox.reason('grab')) return;
		event.preventDefault();
		this.toolbox.get('grab').wheel(event.deltaY);
	}

	onKey(event) {
		const target = event.target;
		if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement) return;
		if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === 'z') {
			event.preventDefault();
			this.onUndo?.();
		} else if (event.key === 'Escape') {
			this.toolbox.current()?.cancel?.();
		} else if (/^[1-9]$/.test(event.key)) {
			const id = this.toolbox.order[Number(event.key) - 1];
			if (id) this.toolbox.select(id);
		}
	}

	/** After a state change: my seat (the camera starts there once the anatomy is on screen). */
	render(state) {
		this.seat = mySeat(state);
	}

	/** Aim the orbit at the patient from my seat. */
	frame() {
		this.stage.frameDesktopCamera(this.controls, this.seat);
	}
}
