// The application: reads the credentials, then composes either the room (an invite) or the lobby (the admin
// login) from the modules. Nothing here draws or talks to the server itself; it wires the parts together.
// A room opened for a replay (a closed room played back, read-only) is the same view with a replay bar.
//
// window.theatrum exposes the parts for the browser tests and for curious developers.
import { Matrix4, Quaternion, Vector3 } from 'three';

import { AnnotationView } from './annotations.js';
import { leaveRoom, takeCredentials } from './auth.js';
import { Avatars } from './avatars.js';
import { Clipping } from './clipping.js';
import { DebugOverlay } from './debug.js';
import { DesktopInput } from './desktop.js';
import { FollowMe } from './follow.js';
import { LabelAtlas } from './labels.js';
import { MeshLoader } from './meshes.js';
import { Picker } from './picker.js';
import { RoomConnection } from './room.js';
import { Stage } from './scene.js';
import { ClipTool } from './tools/clip.js';
import { GrabTool } from './tools/grab.js';
import { MeasureTool } from './tools/measure.js';
import { NoteTool } from './tools/note.js';
import { PointTool } from './tools/point.js';
import { Highlights, PointerTool } from './tools/pointer.js';
import { Preview } from './tools/preview.js';
import { StrokeTool } from './tools/stroke.js';
import { Toolbox } from './tools/toolbox.js';
import { h } from './ui/dom.js';
import { AnnotationsPanel } from './ui/panel.js';
import { ParticipantsPanel } from './ui/participants.js';
import { ProgressBar } from './ui/progress.js';
import { ReplayBar } from './ui/replaybar.js';
import { StatusBar } from './ui/status.js';
import { Toasts } from './ui/toast.js';
import { Toolbar } from './ui/toolbar.js';
import { XRSession } from './xr.js';

const POSE_INTERVAL_MS = 50; // 20 Hz, under the protocol's 30 Hz
const POSE_KEEPALIVE_MS = 2000; // an unchanged pose is still sent now and then (avatars expire after 10 s)
const PARTS = ['head', 'left', 'right'];

export async function start(root) {
	const credentials = takeCredentials();
	const params = new URLSearchParams(window.location.search);
	const debug = params.get('debug') === '1';
	window.theatrum = { view: credentials.view };
	if (credentials.view === 'room') return startRoom(root, credentials.invite, { debug, replay: credentials.replay });
	const { startLobby, startJoin } = await import('./ui/lobby.js');
	if (credentials.view === 'lobby') return startLobby(root, credentials.admin);
	return startJoin(root);
}

const ViewTool = {
	id: 'view',
	title: 'View',
	kind: null,
	hint: 'Drag to orbit, the wheel to zoom, right-drag to pan. In a headset: look around, squeeze to grab.',
};

function startRoom(root, token, { debug, replay }) {
	document.body.classList.add('room-view');
	if (replay) document.body.classList.add('replay-view'); // style.css hides the editing controls
	const toasts = new Toasts(document.body);
	const notify = (text, level) => toasts.say(text, level);
	const left = h('div', { class: 'left' });
	const viewport = h('div', { class: 'viewport', id: 'viewport' });
	const right = h('div', { class: 'right' });
	const body = h('div', { class: 'room-body' }, left, viewport, right);
	let xr = null;
	const status = new StatusBar(root, {
		onEnterVR: () => (xr.presenting ? xr.exit() : xr.enter()).catch((e) => notify(`VR: ${e.message}`, 'error')),
		onLeave: () => {
			room.close();
			leaveRoom();
		},
	});
	const replayBar = replay ? new ReplayBar(root, { speed: replay.speed, onPlay: (request) => room.play(request) }) : null;
	root.append(body);
	const progress = new ProgressBar(viewport, { id: 'mesh-progress', className: 'overlay' });
	progress.set(0, 'Connecting');

	const stage = new Stage(viewport);
	const atlas = new LabelAtlas();
	const room = new RoomConnection(token, { replay });
	const meshes = new MeshLoader(stage, token);
	const picker = new Picker(stage, meshes);
	const preview = new Preview(stage);
	const avatars = new Avatars(stage, atlas);
	const clipping = new Clipping(stage);
	const highlights = new Highlights(stage);
	let annotations = null; // once the patient frame is known (the first meshes are in)

	const inverse = new Matrix4();
	const modelQ = new Quaternion();
	const context = {
		stage,
		preview,
		notify,
		state: () => room.state,
		patient: () => meshes.patient,
		pick: (ray, hit, options) => picker.pick(ray, hit, options),
		toModel: (world, target) => target.copy(world).applyMatrix4(inverse.copy(stage.modelFrame.matrixWorld).invert()),
		directionToModel: (direction) => direction.applyQuaternion(stage.modelWorldQuaternion(modelQ).invert()).normalize(),
		nextLabel: (type) => panel.takeLabel(type, room.state),
		send: (kind, fields = {}) => room.op(kind, fields).catch((error) => {
			notify(error.message, 'error');
			if (kind === 'model.transform' && room.state) stage.setModelTransform(room.state.model);
			return null;
		}),
	};
	const toolbox = new Toolbox(context);
	const tools = {
		point: toolbox.add(new PointTool(context)),
		measure: toolbox.add(new MeasureTool(context)),
		stroke: toolbox.add(new StrokeTool(context)),
		pointer: toolbox.add(new PointerTool(context)),
		clip: toolbox.add(new ClipTool(context)),
		grab: toolbox.add(new GrabTool(context)),
		note: toolbox.add(new NoteTool(context)), // after the others: their number keys stay as they were
		view: toolbox.add(ViewTool),
	};
	const undo = () => {
		const own = room.state?.newestOwnAnnotation();
		if (own) context.send('annotation.delete', { id: own.id });
		else notify('Nothing of yours to undo', 'info');
	};

	new Toolbar(left, toolbox);
	const participants = new ParticipantsPanel(right, { send: (kind, fields) => context.send(kind, fields) });
	const panel = new AnnotationsPanel(right, {
		onDelete: (id) => context.send('annotation.delete', { id }),
		onUndo: undo,
		clipTool: tools.clip,
		grabTool: tools.grab,
		toolbox,
	});
	const desktop = new DesktopInput(stage, toolbox, { onUndo: undo });
	xr = new XRSession(stage, toolbox, picker, atlas, { onUndo: undo, notify });
	const follow = new FollowMe(stage, avatars, desktop);
	if (debug) new DebugOverlay(document.body, stage);
	xr.addEventListener('change', () => status.setVR(xr));
	xr.probe();

	// -- the room's state on screen ------------------------------------------------------------------------
	let loading = null;
	const render = (state) => {
		status.setRoom(state);
		toolbox.refresh(state);
		participants.render(state);
		panel.render(state);
		clipping.render(state);
		avatars.refresh(state);
		follow.setLeader(state);
		if (!tools.grab.active) stage.setModelTransform(state.model);
		annotations?.render(state);
		stage.invalidate();
		if (!loading) loading = loadMeshes(state.room.meshes);
	};
	const loadMeshes = (ids) => meshes.load(ids, {
		onProgress: (fraction, words) => progress.set(fraction, words),
		onCoarse: () => {
			annotations = new AnnotationView(stage, atlas, meshes.patient);
			if (room.state) {
				clipping.render(room.state);
				annotations.render(room.state);
			}
			desktop.frame();
			precompile();
			window.theatrum.coarse = true;
			// A replay began before the anatomy was on screen (the snapshot names the meshes): play it again
			// from the start now that it is, so the review misses nothing.
			if (replay && room.status !== 'refused') room.play({ from: 1 });
		},
	}).then(() => {
		stage.invalidate();
		precompile();
		setTimeout(() => progress.hide(), 400);
		window.theatrum.ready = true;
	}).catch((error) => {
		progress.set(0, `Could not load the anatomy: ${error.message}`);
		notify(`Could not load the anatomy: ${error.message}`, 'error');
	});

	// Compile every shader the scene can need now (in parallel where the driver can), not when the first
	// avatar or annotation shows up in the middle of a session.
	const precompile = () => stage.renderer.compileAsync(stage.scene, stage.camera).then(() => stage.invalidate());

	room.addEventListener('status', (e) => {
		status.setConnection(e.data.status, e.data.detail);
		if (e.data.status === 'refused') notify(e.data.detail || 'The room refused this invite', 'error');
	});
	room.addEventListener('snapshot', (e) => {
		avatars.me = e.data.state.you?.id ?? null;
		render(e.data.state);
	});
	room.addEventListener('event', (e) => {
		const { event, state } = e.data;
		if (event.kind === 'pointer.highlight') highlights.add(event, state);
		else render(state);
		if (event.kind === 'participant.kick' && event.data.participant === state.you?.id) notify('You were removed from this room', 'error');
	});
	room.addEventListener('poses', (e) => {
		if (room.state) avatars.receive(e.data, room.state);
	});
	if (replayBar) followReplay(room, replayBar);

	// -- every frame ---------------------------------------------------------------------------------------
	const pose = new PoseSender(stage, room, xr);
	stage.onFrame((time) => {
		clipping.update();
		avatars.update(time);
		highlights.update(time);
		pose.update(time);
	});
	stage.start();

	Object.assign(window.theatrum, { stage, room, meshes, picker, toolbox, tools, avatars, xr, desktop, panel, atlas, replayBar, ready: false, coarse: false });
	return window.theatrum;
}

/** Keep the replay bar on the replay: its state, and the seq shown of the room's last. */
function followReplay(room, bar) {
	const position = (e) => bar.setPosition(e.data.state.seq, room.last);
	room.addEventListener('status', (e) => bar.setStatus(e.data.status, e.data.detail));
	room.addEventListener('snapshot', position);
	room.addEventListener('event', position);
}

/** My pose (head, and controllers in a headset) in model space, at most 20 times a second. */
class PoseSender {
	constructor(stage, room, xr) {
		this.stage = stage;
		this.room = room;
		this.xr = xr;
		this.last = 0;
		this.lastSent = 0;
		this.inverse = new Matrix4();
		this.modelQ = new Quaternion();
		this.p = new Vector3();
		this.q = new Quaternion();
		this.s = new Vector3();
		this.previous = new Float64Array(PARTS.length * 7).fill(NaN);
		this.parts = { head: part(), left: part(), right: part() };
		this.message = { head: this.parts.head };
	}

	update(time) {
		if (time - this.last < POSE_INTERVAL_MS || this.room.status !== 'live' || this.stage.bounds.isEmpty()) return;
		this.last = time;
		const stage = this.stage;
		this.inverse.copy(stage.modelFrame.matrixWorld).invert();
		stage.modelWorldQuaternion(this.modelQ).invert();
		const message = this.message;
		this.write(this.parts.head, stage.camera.matrixWorld);
		delete message.left;
		delete message.right;
		if (this.xr.presenting) {
			const hands = this.xr.hands;
			for (let i = 0; i < hands.length; i++) {
				const h = hands[i];
				if (!h.inputSource || (h.handedness !== 'left' && h.handedness !== 'right')) continue;
				this.write(this.parts[h.handedness], h.controller.matrixWorld);
				message[h.handedness] = this.parts[h.handedness];
			}
		}
		// Send what moved (more than 0.1 mm or 1e-4 of a quaternion), and now and then the same again.
		let moved = false;
		let k = 0;
		for (let p = 0; p < PARTS.length; p++) {
			const part = message[PARTS[p]];
			for (let i = 0; i < 7; i++) {
				const value = part ? (i < 3 ? part.position[i] : part.quaternion[i - 3]) : NaN;
				const previous = this.previous[k];
				const same = Number.isNaN(value) ? Number.isNaN(previous) : Math.abs(value - previous) <= 1e-4;
				if (!same) moved = true;
				this.previous[k++] = value;
			}
		}
		if (!moved && time - this.lastSent < POSE_KEEPALIVE_MS) return;
		this.lastSent = time;
		this.room.sendPose(message); // encoded at once, so the arrays can be reused
	}

	write(target, worldMatrix) {
		worldMatrix.decompose(this.p, this.q, this.s);
		this.p.applyMatrix4(this.inverse);
		this.q.premultiply(this.modelQ).normalize();
		target.position[0] = clamp(this.p.x);
		target.position[1] = clamp(this.p.y);
		target.position[2] = clamp(this.p.z);
		target.quaternion[0] = this.q.x;
		target.quaternion[1] = this.q.y;
		target.quaternion[2] = this.q.z;
		target.quaternion[3] = this.q.w;
	}
}

function clamp(v) {
	return Math.max(-99, Math.min(99, Math.round(v * 1e4) / 1e4)); // the hub's bound is ±100 m
}

function part() {
	return { position: [0, 0, 0], quaternion: [0, 0, 0, 1] };
}
