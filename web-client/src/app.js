// The application: reads the credentials and the server's config, then composes the room (an invite), the
// lobby (the admin login) or the public join page from the modules. Nothing here draws or talks to the server
// itself; it wires the parts together. A room opened for a replay (a closed room played back, read-only) is
// the same view with a replay bar.
//
// window.theatrum exposes the parts for the browser tests and for curious developers.
import { DesktopInput } from './input/desktop-input.js';
import { FollowMe } from './input/follow-me.js';
import { ImmersiveSession } from './input/immersive-session.js';
import { PoseSender } from './input/pose-sender.js';
import { Api } from './net/api.js';
import { enterRoom, isRoleLink, leaveRoom, personalInviteFor, takeCredentials } from './net/credentials.js';
import { RoomConnection } from './net/room-connection.js';
import { ServerConfig } from './net/server-config.js';
import { AnnotationView } from './scene/annotation-view.js';
import { Avatars } from './scene/avatars.js';
import { Clipping } from './scene/clipping.js';
import { Highlights } from './scene/highlights.js';
import { LabelAtlas } from './scene/label-atlas.js';
import { MeshLoader } from './scene/mesh-loader.js';
import { Picker } from './scene/picker.js';
import { SliceView } from './scene/slice-view.js';
import { Stage } from './scene/stage.js';
import { StructureView } from './scene/structure-view.js';
import { WindowPalette } from './scene/window-palette.js';
import { ClipTool } from './tools/clip-tool.js';
import { GrabTool } from './tools/grab-tool.js';
import { GrowTool } from './tools/grow-tool.js';
import { MeasureTool } from './tools/measure-tool.js';
import { NoteTool } from './tools/note-tool.js';
import { PointTool } from './tools/point-tool.js';
import { PointerTool } from './tools/pointer-tool.js';
import { Preview } from './tools/preview.js';
import { SliceTool } from './tools/slice-tool.js';
import { StrokeTool } from './tools/stroke-tool.js';
import { ToolContext } from './tools/tool-context.js';
import { Toolbox } from './tools/toolbox.js';
import { ViewTool } from './tools/view-tool.js';
import { AnnotationsPanel } from './ui/annotations-panel.js';
import { DebugOverlay } from './ui/debug-overlay.js';
import { HoverName } from './ui/hover-name.js';
import { LabelField } from './ui/label-field.js';
import { ParticipantsPanel } from './ui/participants-panel.js';
import { RoomPage } from './ui/room-page.js';
import { SlicePanel } from './ui/slice-panel.js';
import { StructuresPanel } from './ui/structures-panel.js';
import { Toolbar } from './ui/toolbar.js';
import { PushToTalk } from './voice/push-to-talk.js';
import { SpeakingHalos } from './voice/speaking-halos.js';
import { Voice } from './voice/voice.js';
import { VoicePanel } from './voice/voice-panel.js';

export async function start(root) {
	const credentials = takeCredentials();
	window.theatrum = { view: credentials.view };
	if (credentials.view === 'room' && !credentials.replay && isRoleLink(credentials.invite)) {
		// A role link is shared by everyone of its role: this browser's own invite for it, or a name first.
		const personal = personalInviteFor(credentials.invite);
		if (personal) return enterRoom(personal);
		const { NamePage } = await import('./lobby/name-page.js');
		window.theatrum.namePage = new NamePage(root, credentials.invite);
		return window.theatrum;
	}
	if (credentials.view === 'room') {
		const debug = new URLSearchParams(window.location.search).get('debug') === '1';
		return startRoom(root, credentials.invite, { debug, replay: credentials.replay });
	}
	if (credentials.view === 'lobby') {
		let config;
		try {
			const api = new Api(credentials.admin);
			await api.get('/api/studies'); // the token is checked here: /api/config is public
			config = await ServerConfig.load(api);
		} catch (error) {
			if (error.status !== 401 && error.status !== 403) throw error;
			const { SignInPage } = await import('./lobby/sign-in-page.js');
			window.theatrum.signIn = new SignInPage(root, error.message);
			return window.theatrum;
		}
		const { Lobby } = await import('./lobby/lobby.js');
		const lobby = new Lobby(root, credentials.admin, config);
		window.theatrum.lobby = lobby;
		await lobby.refresh();
		return lobby;
	}
	const { JoinPage } = await import('./lobby/join-page.js');
	return new JoinPage(root);
}

async function startRoom(root, token, { debug, replay }) {
	let config;
	const api = new Api(token);
	try {
		config = await ServerConfig.load(api);
	} catch (error) {
		new RoomPage(root, { replay: null, onEnterVR: () => {}, onLeave: leaveRoom }).refuse(error.message); // say why
		return window.theatrum;
	}
	const { limits, permissions } = config;
	const room = new RoomConnection(token, { replay });
	const page = new RoomPage(root, {
		replay,
		onEnterVR: () => (xr.presenting ? xr.exit() : xr.enter()).catch((e) => page.notify(`VR: ${e.message}`, 'error')),
		onLeave: () => {
			room.close();
			leaveRoom();
		},
		onPlay: (request) => room.play(request),
	});
	const notify = (text, level) => page.notify(text, level);

	// -- the 3D scene --------------------------------------------------------------------------------------
	const stage = new Stage(page.viewport);
	Object.assign(stage.renderer.domElement, { id: 'view-canvas', tabIndex: 0 }); // the keyboard reaches the 3D view
	stage.renderer.domElement.setAttribute('role', 'application');
	stage.renderer.domElement.setAttribute('aria-label', '3D view of the anatomy: drag to turn it, the number keys choose a tool, Ctrl+Z undoes your last annotation');
	const atlas = new LabelAtlas();
	const meshes = new MeshLoader(stage, token);
	const picker = new Picker(stage, meshes);
	const preview = new Preview(stage, limits.max_stroke_points);
	const avatars = new Avatars(stage, atlas, limits.max_participants);
	const clipping = new Clipping(stage, limits.max_clip_planes);
	const highlights = new Highlights(stage);
	const annotations = new AnnotationView(stage, atlas);
	const slices = new SliceView(stage, { api, px: config.slices.px, clipping, notify });
	picker.surfaces = () => slices.quads; // a point may be placed on a slice's image
	picker.surfaceClipPlanes = clipping.roomPlanes;
	const palette = new WindowPalette(slices.group);
	const structures = new StructureView(stage, meshes, { notify });

	// -- the tools, the panels and the inputs --------------------------------------------------------------
	const label = new LabelField(limits);
	const context = new ToolContext({ stage, room, meshes, picker, preview, label, limits, notify });
	const { toolbox, tools } = roomTools(context, permissions, { slices, palette });
	const undo = () => {
		if (room.state?.me()?.muted) return notify('Undo: you are muted by the instructor', 'warn');
		const own = room.state?.newestOwnAnnotation();
		if (own) context.send('annotation.delete', { id: own.id });
		else notify('Nothing of yours to undo', 'info');
	};
	new Toolbar(page.left, toolbox);
	const participants = new ParticipantsPanel(page.right, { permissions, send: (kind, fields) => context.send(kind, fields) });
	const panel = new AnnotationsPanel(page.right, {
		label, permissions, toolbox, clipTool: tools.clip, grabTool: tools.grab,
		onDelete: (id) => context.send('annotation.delete', { id }), onUndo: undo,
	});
	const slicePanel = new SlicePanel(page.right, { tool: tools.slice, view: slices, toolbox, maxPlanes: limits.max_slice_planes });
	const structuresPanel = new StructuresPanel(page.right, { room, toolbox, send: (kind, fields) => context.send(kind, fields), notify });
	toolbox.addEventListener('change', () => slices.setHandles(toolbox.active === 'slice' && !toolbox.reason('slice')));
	const desktop = new DesktopInput(stage, toolbox, { onUndo: undo });
	const xr = new ImmersiveSession(stage, toolbox, picker, atlas, { onUndo: undo });
	const follow = new FollowMe(stage, avatars, desktop);
	new HoverName(page.viewport, { desktop, picker, structures });
	xr.describe = (hit) => structures.structureAt(hit);
	if (debug) new DebugOverlay(document.body, stage);
	const voice = new Voice(room, { notify, headOf: (id, position, quaternion) => avatars.headWorld(id, position, quaternion) });
	const voicePanel = new VoicePanel(page.right, voice, permissions);
	const halos = new SpeakingHalos(stage, avatars, voice, limits.max_participants);
	const pushToTalk = new PushToTalk(voice, xr);
	xr.addEventListener('change', () => page.status.setVR(xr));
	xr.probe();

	// -- the room on screen: every state, the anatomy once, every frame ------------------------------------
	const views = [desktop, page.status, toolbox, participants, panel, clipping, avatars, follow, tools.grab, annotations, slices, slicePanel, structures, structuresPanel, voice, voicePanel, halos];
	showRoom(room, views, { page, stage, avatars, highlights, toolbox });
	room.addEventListener('snapshot', (e) => {
		// The room's meshes, and those of the structures grown in it so far (later ones come with structure.add).
		const grown = [...e.data.state.structures.values()].map((t) => t.mesh);
		const ids = [...new Set([...e.data.state.room.meshes, ...grown])];
		loadAnatomy(ids, { room, page, stage, meshes, annotations, clipping, slices, structures, desktop, replay });
		loadSeries(api, e.data.state.room.id, [tools.slice, slicePanel], notify).then(() => slicePanel.render(room.state));
		if (!replay) loadVoice(api, e.data.state.room.id, voice, notify);
	}, { once: true });
	if (page.replayBar) followReplay(room, page.replayBar);
	const pose = new PoseSender(stage, room, xr);
	stage.onFrame((time) => {
		clipping.update();
		avatars.update(time);
		highlights.update(time);
		pose.update(time);
		pushToTalk.update();
		voice.update(stage.camera);
		halos.update();
		tools.slice.showPalette(xr.presenting && toolbox.active === 'slice' && !toolbox.reason('slice'));
	});
	stage.start();

	const replayBar = page.replayBar;
	Object.assign(window.theatrum, { stage, room, meshes, picker, toolbox, tools, avatars, annotations, xr, desktop, follow, panel, atlas, replayBar, slices, slicePanel, structures, structuresPanel, voice, ready: false, coarse: false });
	window.__theatrumVoice = voice; // the tests measure what this page hears (Voice.level, .channels)
	return window.theatrum;
}

/** The room's state on screen: each view renders every new state (a snapshot, an event) but for a pointer
 * highlight, which only pulses; poses move the avatars; the connection's state is said. */
function showRoom(room, views, { page, stage, avatars, highlights, toolbox }) {
	const render = (state) => {
		for (const view of views) view.render(state);
		stage.invalidate();
	};
	room.addEventListener('status', (e) => {
		if (e.data.status !== 'refused') return page.status.setConnection(e.data.status, e.data.detail);
		// Not admitted (closed room, expired, tampered, kicked, full, locked): say why, and offer no tool.
		const kicked = room.state?.me()?.kicked;
		const why = kicked ? 'you were removed from this room by the instructor' : e.data.detail || 'the room refused this invite';
		page.refuse(why);
		toolbox.refuse(why);
	});
	room.addEventListener('snapshot', (e) => {
		avatars.me = e.data.state.you?.id ?? null;
		render(e.data.state);
	});
	room.addEventListener('event', (e) => {
		const { event, state } = e.data;
		if (event.kind === 'pointer.highlight') highlights.add(event, state);
		else render(state);
	});
	room.addEventListener('poses', (e) => {
		if (room.state) avatars.receive(e.data, room.state);
	});
}

/** Load the room's meshes, into the page's progress bar. With the first (coarse) picture come the annotations
 * (in the meshes' patient frame), the desktop camera on the patient and the shaders; a replay then starts
 * over from the beginning, so that the review misses nothing of what played before the anatomy was on screen. */
function loadAnatomy(meshIds, { room, page, stage, meshes, annotations, clipping, slices, structures, desktop, replay }) {
	return meshes.load(meshIds, {
		onProgress: (fraction, words) => page.progress.set(fraction, words),
		onCoarse: () => {
			annotations.patient = meshes.patient;
			slices.patient = meshes.patient;
			if (room.state) {
				clipping.render(room.state);
				annotations.render(room.state);
				slices.render(room.state);
				structures.render(room.state);
			}
			desktop.frame();
			precompile(stage);
			window.theatrum.coarse = true;
			if (replay && room.status !== 'refused') room.play({ from: 1 });
		},
	}).then(() => {
		structures.ready(room.state);
		stage.invalidate();
		precompile(stage);
		setTimeout(() => page.progress.hide(), 400);
		window.theatrum.ready = true;
	}).catch((error) => {
		page.progress.set(0, `Could not load the anatomy: ${error.message}`);
		page.notify(`Could not load the anatomy: ${error.message}`, 'error');
	});
}

/** The geometry and window presets of the room's series (GET /api/rooms/{id}/volume), for the slice planes'
 * `users` (each has setSeries). A room whose series cannot be read still works, without new planes. */
function loadSeries(api, roomId, users, notify) {
	return api.get(`/api/rooms/${roomId}/volume`)
		.then((series) => {
			for (const user of users) user.setSeries(series);
		})
		.catch((error) => notify(`Slice planes are unavailable: ${error.message}`, 'warn'));
}

/** The room's ICE servers (GET /api/rooms/{id}/voice): until they come, calls use none (loopback and LAN). */
function loadVoice(api, roomId, voice, notify) {
	return api.get(`/api/rooms/${roomId}/voice`)
		.then((config) => {
			voice.iceServers = config.ice_servers;
		})
		.catch((error) => notify(`Voice has no STUN/TURN servers: ${error.message}`, 'warn'));
}

/** The toolbox of a room, in the toolbar's order (the number keys), every tool acting through `context`. */
function roomTools(context, permissions, { slices, palette }) {
	const toolbox = new Toolbox(context, permissions);
	const tools = {
		point: toolbox.add(new PointTool(context)),
		measure: toolbox.add(new MeasureTool(context)),
		stroke: toolbox.add(new StrokeTool(context)),
		pointer: toolbox.add(new PointerTool(context)),
		clip: toolbox.add(new ClipTool(context)),
		grab: toolbox.add(new GrabTool(context)),
		note: toolbox.add(new NoteTool(context)), // after the others: their number keys stay as they were
		view: toolbox.add(new ViewTool()),
		slice: toolbox.add(new SliceTool(context, slices, palette)),
		grow: toolbox.add(new GrowTool(context)),
	};
	return { toolbox, tools };
}

/** Compile every shader the scene can need now (in parallel where the driver can), not when the first avatar
 * or annotation shows up in the middle of a session. */
function precompile(stage) {
	return stage.renderer.compileAsync(stage.scene, stage.camera).then(() => stage.invalidate());
}

/** Keep the replay bar on the replay: its state, and the seq shown of the room's last. */
function followReplay(room, bar) {
	const position = (e) => bar.setPosition(e.data.state.seq, room.last);
	room.addEventListener('status', (e) => bar.setStatus(e.data.status, e.data.detail));
	room.addEventListener('snapshot', position);
	room.addEventListener('event', position);
}
