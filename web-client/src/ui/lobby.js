// The lobby, for whoever holds the admin login (/?token=…): the study list, upload by drag and drop with a
// progress bar, reconstruction with live progress (socket `job` events for the admin) and a 3D preview,
// rooms with their invite links, QR codes and room codes to copy, the replay of a closed room (a training
// review, in this tab), and joining by room code.
// Without credentials the page offers only "join by room code", for a headset user.
import { io } from 'socket.io-client';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';

import { Api } from '../api.js';
import { enterRoom } from '../auth.js';
import { MeshLoader } from '../meshes.js';
import { Stage } from '../scene.js';
import { fill, h } from './dom.js';
import { ProgressBar } from './progress.js';
import { DEFAULT_REPLAY_SPEED, REPLAY_SPEEDS } from './replaybar.js';
import { Toasts } from './toast.js';

const PRESETS = { CT: ['bone', 'skin', 'soft-tissue', 'vessels'], MR: ['skin', 'bright'] };
const DEFAULT_PRESETS = { CT: ['bone', 'skin'], MR: ['skin'] };
const IDENTIFYING = new Set(['skin']);
const BUDGETS = [50000, 150000, 300000];
const JOB_POLL_MS = 1000;

export function startJoin(root) {
	document.body.classList.add('lobby-view');
	const toasts = new Toasts(document.body);
	root.append(h('header', { class: 'topbar' }, h('div', { class: 'titles' }, h('h1', {}, 'Theatrum'))),
		h('main', { class: 'lobby' }, joinSection(toasts)));
}

function joinSection(toasts) {
	const code = h('input', { id: 'join-code', inputmode: 'numeric', autocomplete: 'off', placeholder: '1234 5678', maxlength: 11 });
	const name = h('input', { id: 'join-name', autocomplete: 'name', placeholder: 'Your name', maxlength: 64 });
	const button = h('button', { id: 'join-button', class: 'primary', type: 'submit' }, 'Join');
	const form = h('form', { class: 'row', onsubmit: async (e) => {
		e.preventDefault();
		button.disabled = true;
		try {
			const joined = await new Api(null).post('/api/join', { code: code.value, name: name.value });
			enterRoom(joined.token);
		} catch (error) {
			toasts.say(`Cannot join: ${error.message}`, 'error');
		} finally {
			button.disabled = false;
		}
	} }, code, name, button);
	return h('section', { id: 'join-section', class: 'card' }, h('h2', {}, 'Join a room with its code'),
		h('p', { class: 'muted' }, 'Type the 8-digit code your instructor gives you.'), form);
}

export async function startLobby(root, token) {
	document.body.classList.add('lobby-view');
	const lobby = new Lobby(root, token);
	window.theatrum.lobby = lobby;
	await lobby.refresh();
	return lobby;
}

class Lobby {
	constructor(root, token) {
		this.api = new Api(token);
		this.token = token;
		this.toasts = new Toasts(document.body);
		this.cards = new Map(); // study id -> StudyCard
		this.jobs = new Map(); // job id -> StudyCard
		this.studyList = h('ul', { id: 'studies', class: 'studies' });
		this.roomList = h('ul', { id: 'rooms', class: 'rooms' });
		this.fileInput = h('input', { id: 'upload-input', type: 'file', multiple: true, onchange: () => this.upload([...this.fileInput.files]) });
		this.folderInput = h('input', { id: 'upload-folder', type: 'file', webkitdirectory: true, onchange: () => this.upload([...this.folderInput.files]) });
		const drop = h('div', { id: 'dropzone', class: 'dropzone' },
			h('p', {}, 'Drop DICOM files, folders or a .zip here'),
			h('p', { class: 'muted' }, h('label', { class: 'link' }, 'choose files', this.fileInput), ' · ',
				h('label', { class: 'link' }, 'choose a folder', this.folderInput)));
		drop.addEventListener('dragover', (e) => {
			e.preventDefault();
			drop.classList.add('over');
		});
		drop.addEventListener('dragleave', () => drop.classList.remove('over'));
		drop.addEventListener('drop', async (e) => {
			e.preventDefault();
			drop.classList.remove('over');
			this.upload(await droppedFiles(e.dataTransfer));
		});
		const uploadBox = h('div', { class: 'upload' });
		this.uploadProgress = new ProgressBar(uploadBox, { id: 'upload-progress' });
		this.uploadProgress.hide();
		this.uploadResult = h('p', { id: 'upload-result', class: 'muted' });
		root.append(
			h('header', { class: 'topbar' }, h('div', { class: 'titles' }, h('h1', {}, 'Theatrum'), h('span', { class: 'muted' }, 'Lobby'))),
			h('main', { class: 'lobby' },
				h('section', { class: 'card', id: 'studies-section' }, h('h2', {}, 'Studies'), drop, uploadBox, this.uploadResult, this.studyList),
				h('section', { class: 'card', id: 'rooms-section' }, h('h2', {}, 'Rooms'), this.roomList),
				joinSection(this.toasts)));
		// Reconstruction progress, live: the admin's socket joins the server's "admin" room.
		this.socket = io({ auth: { token } });
		this.jobEvents = 0;
		this.socket.on('job', (job) => {
			this.jobEvents += 1;
			this.jobs.get(job.id)?.onJob(job);
		});
	}

	async refresh() {
		const [{ studies }, { rooms }] = await Promise.all([this.api.get('/api/studies'), this.api.get('/api/rooms')]);
		for (const summary of studies) {
			const study = await this.api.get(`/api/studies/${summary.id}`);
			let card = this.cards.get(study.id);
			if (!card) {
				card = new StudyCard(this, study);
				this.cards.set(study.id, card);
				this.studyList.append(card.element);
			} else card.update(study);
		}
		this.renderRooms(rooms);
	}

	async upload(files) {
		if (!files.length) return;
		const total = files.reduce((sum, f) => sum + f.size, 0);
		this.uploadProgress.set(0, `Uploading ${files.length} file(s)`);
		try {
			const result = await this.api.upload('/api/studies', files, (sent, size) => {
				this.uploadProgress.set(sent / (size || total || 1), `Uploading ${files.length} file(s)`);
			});
			this.uploadProgress.set(1, 'Uploaded');
			const added = result.instances?.added ?? 0;
			this.uploadResult.textContent = `Study ${result.study_id}: ${added} new instance(s), ${result.instances?.duplicates ?? 0} already here, ${result.skipped?.length ?? 0} file(s) skipped.`;
			await this.refresh();
			this.cards.get(result.study_id)?.element.scrollIntoView({ block: 'nearest' });
		} catch (error) {
			this.uploadProgress.set(0, `Upload failed: ${error.message}`);
			this.toasts.say(`Upload failed: ${error.message}`, 'error');
		}
	}

	watch(jobId, card) {
		this.jobs.set(jobId, card);
	}

	renderRooms(rooms) {
		fill(this.roomList, rooms.slice().reverse().map((room) => new RoomItem(this, room).element));
	}

	async showRoom(roomId, invites) {
		const rooms = (await this.api.get('/api/rooms')).rooms;
		this.renderRooms(rooms);
		const item = this.roomList.querySelector(`[data-id="${roomId}"]`);
		item?.room.showInvites(invites);
	}
}

/** One study: its series, reconstruction (with live progress), meshes, a preview, and room creation. */
class StudyCard {
	constructor(lobby, study) {
		this.lobby = lobby;
		this.element = h('li', { class: 'study', 'data-id': study.id });
		this.preview = null;
		this.update(study);
	}

	get modality() {
		return this.study.modalities.includes('CT') ? 'CT' : 'MR';
	}

	update(study) {
		this.study = study;
		const series = study.series[0];
		const presets = PRESETS[this.modality];
		this.presetBoxes = presets.map((p) => h('input', { type: 'checkbox', name: 'preset', value: p, checked: DEFAULT_PRESETS[this.modality].includes(p) }));
		this.budget = h('select', { class: 'budget', 'aria-label': 'Triangle budget per tissue' },
			BUDGETS.map((b) => h('option', { value: b, selected: b === 300000 }, `${b / 1000}k triangles`)));
		this.reconstructButton = h('button', { class: 'reconstruct primary', onclick: () => this.reconstruct() }, 'Reconstruct');
		const jobBox = h('div', { class: 'job' });
		this.jobProgress = new ProgressBar(jobBox, { className: 'job-progress' });
		this.jobProgress.hide();
		this.meshList = h('ul', { class: 'meshes' });
		this.previewBox = h('div', { class: 'preview', hidden: true });
		this.roomTitle = h('input', { class: 'room-title', placeholder: 'Room title (no patient names)', maxlength: 200, value: study.description || '' });
		this.roomMode = h('select', { class: 'room-mode', onchange: () => this.renderMeshes() },
			h('option', { value: 'training' }, 'Training (de-identified)'), h('option', { value: 'consult' }, 'Consult'));
		this.createButton = h('button', { class: 'create-room primary', onclick: () => this.createRoom() }, 'Create room');
		fill(this.element,
			h('div', { class: 'study-head' },
				h('strong', {}, study.description || 'Untitled study'),
				h('span', { class: 'muted' }, ` ${study.modalities.join('/')} · ${study.instances} instances`
					+ (series ? ` · ${series.description || 'series'}: ${series.slices} slices ${series.rows}×${series.columns}` : ''))),
			h('div', { class: 'row reconstruct-row' }, this.presetBoxes.map((box) => h('label', { class: 'check' }, box, box.value)), this.budget, this.reconstructButton),
			jobBox,
			this.meshList,
			this.previewBox,
			h('div', { class: 'row create-row' }, this.roomTitle, this.roomMode, this.createButton));
		this.renderMeshes();
		if (study.meshes?.length) this.showPreview();
	}

	renderMeshes() {
		const training = this.roomMode.value === 'training';
		fill(this.meshList, (this.study.meshes || []).map((m) => {
			const forbidden = training && IDENTIFYING.has(m.preset);
			return h('li', {},
				h('label', { class: 'check', title: forbidden ? 'a skin surface can show the face: training rooms take de-identified data only' : '' },
					h('input', { type: 'checkbox', class: 'mesh-choice', value: m.id, checked: !forbidden, disabled: forbidden }),
					`${m.preset} · ${m.triangles.toLocaleString()} triangles`),
				forbidden ? h('small', { class: 'reason' }, 'not in training rooms (can show the face)') : null);
		}));
		this.createButton.disabled = !(this.study.meshes || []).some((m) => !(training && IDENTIFYING.has(m.preset)));
	}

	async reconstruct() {
		const presets = this.presetBoxes.filter((b) => b.checked).map((b) => b.value);
		if (!presets.length) {
			this.lobby.toasts.say('Choose at least one tissue', 'warn');
			return;
		}
		this.reconstructButton.disabled = true;
		this.jobProgress.set(0, 'Queued');
		try {
			const answer = await this.lobby.api.post(`/api/studies/${this.study.id}/meshes`, { presets, target_triangles: Number(this.budget.value) });
			if (answer.meshes) await this.done();
			else {
				this.job = answer.job;
				this.lobby.watch(answer.job.id, this);
				this.onJob(answer.job);
				this.poll(answer.job.id);
			}
		} catch (error) {
			this.jobProgress.set(0, `Failed: ${error.message}`);
			this.reconstructButton.disabled = false;
		}
	}

	/** A fallback to the socket's job events: the job's state over HTTP, once a second, until it ends. */
	async poll(jobId) {
		while (this.job?.id === jobId && !['done', 'failed', 'cancelled'].includes(this.job.state)) {
			await new Promise((resolve) => setTimeout(resolve, JOB_POLL_MS));
			if (this.job?.id !== jobId || ['done', 'failed', 'cancelled'].includes(this.job.state)) break;
			try {
				this.onJob(await this.lobby.api.get(`/api/jobs/${jobId}`));
			} catch {
				// the socket may still tell us
			}
		}
	}

	onJob(job) {
		if (this.job?.id !== job.id || this.job.finished) return;
		this.job = job;
		this.jobProgress.set((job.percent ?? 0) / 100, `${job.state}${job.stage ? `: ${job.stage}` : ''}`);
		this.jobProgress.element.dataset.state = job.state;
		if (job.state === 'done') {
			job.finished = true;
			this.done();
		} else if (job.state === 'failed' || job.state === 'cancelled') {
			job.finished = true;
			this.jobProgress.set(0, `${job.state}: ${job.error ?? ''}`);
			this.reconstructButton.disabled = false;
		}
	}

	async done() {
		this.jobProgress.set(1, 'Meshes ready');
		this.jobProgress.element.dataset.state = 'done';
		this.reconstructButton.disabled = false;
		this.update(await this.lobby.api.get(`/api/studies/${this.study.id}`));
		this.jobProgress.set(1, 'Meshes ready');
		this.jobProgress.element.dataset.state = 'done';
	}

	/** A small 3D view of the study's meshes (coarse level), turned with the mouse. */
	async showPreview() {
		const ids = this.study.meshes.map((m) => m.id).join(',');
		if (this.previewIds === ids) return;
		this.previewIds = ids;
		this.previewBox.hidden = false;
		if (!this.preview) {
			const stage = new Stage(this.previewBox);
			const controls = new OrbitControls(stage.camera, stage.renderer.domElement);
			this.preview = { stage, controls };
			stage.start();
		}
		const { stage, controls } = this.preview;
		for (const child of [...stage.modelFrame.children]) stage.modelFrame.remove(child);
		const loader = new MeshLoader(stage, this.lobby.token);
		await loader.load(this.study.meshes.map((m) => m.id), { coarseOnly: true });
		stage.fitCamera(controls);
		this.previewBox.dataset.loaded = 'true';
	}

	async createRoom() {
		const mesh_ids = [...this.meshList.querySelectorAll('.mesh-choice:checked')].map((b) => b.value);
		this.createButton.disabled = true;
		try {
			const created = await this.lobby.api.post('/api/rooms', {
				study_id: this.study.id, mesh_ids, mode: this.roomMode.value, title: this.roomTitle.value.trim(),
			});
			this.lobby.toasts.say(`Room "${created.room.title}" created`, 'info');
			await this.lobby.showRoom(created.room.id, created.invites);
		} catch (error) {
			this.lobby.toasts.say(`Cannot create the room: ${error.message}`, 'error');
		} finally {
			this.createButton.disabled = false;
		}
	}
}

/** One room in the lobby: its state, its invites (links, QR codes, room codes, all copyable), close; a closed
 * room is replayed instead. */
class RoomItem {
	constructor(lobby, room) {
		this.lobby = lobby;
		this.room = room;
		this.invites = h('div', { class: 'invites' });
		this.element = h('li', { class: 'room', 'data-id': room.id },
			h('div', { class: 'row' },
				h('strong', {}, room.title || 'Untitled room'),
				h('span', { class: 'muted' }, ` ${room.mode} · ${room.present} present · seq ${room.seq}${room.closed ? ' · closed' : ''}`),
				room.closed ? this.replayControls() : [
					h('button', { class: 'show-invites', onclick: () => this.loadInvites() }, 'Invites'),
					h('button', { class: 'close-room', onclick: () => this.close() }, 'Close')]),
			this.invites);
		this.element.room = this;
	}

	replayControls() {
		this.replaySpeed = h('select', { class: 'replay-speed', 'aria-label': 'Replay speed' },
			REPLAY_SPEEDS.map((s) => h('option', { value: s, selected: s === DEFAULT_REPLAY_SPEED }, `${s}×`)));
		const button = h('button', { class: 'replay-room primary', onclick: () => this.replay(button) }, 'Replay');
		return [this.replaySpeed, button];
	}

	/** Review the closed room in this tab: a personal observer invite (good for a replay only), played back. */
	async replay(button) {
		button.disabled = true;
		try {
			const invite = await this.lobby.api.post(`/api/rooms/${this.room.id}/invites`, { role: 'observer', name: 'Review' });
			enterRoom(invite.token, { replay: { speed: Number(this.replaySpeed.value) } });
		} catch (error) {
			this.lobby.toasts.say(`Cannot replay: ${error.message}`, 'error');
			button.disabled = false;
		}
	}

	async loadInvites() {
		const detail = await this.lobby.api.get(`/api/rooms/${this.room.id}`);
		this.showInvites(detail.invites);
	}

	showInvites(invites) {
		fill(this.invites, Object.values(invites).map((invite) => {
			const qr = h('img', { class: 'qr', alt: `QR code of the ${invite.role} invite`, width: 132, height: 132 });
			if (invite.qr) this.lobby.api.blobUrl(invite.qr).then((url) => { qr.src = url; }).catch(() => { qr.alt = 'QR code unavailable'; });
			const link = h('input', { class: 'invite-link', readonly: true, value: invite.link });
			return h('div', { class: 'invite', 'data-role': invite.role },
				invite.qr ? qr : null,
				h('div', { class: 'invite-text' },
					h('strong', {}, `${invite.role}`), h('span', { class: 'muted' }, ` as "${invite.name}"`),
					h('div', { class: 'row' }, link, h('button', { class: 'copy-link', onclick: () => copy(link.value, this.lobby.toasts, 'Link') }, 'Copy link')),
					invite.code ? h('div', { class: 'row' },
						h('code', { class: 'room-code' }, `${invite.code.slice(0, 4)} ${invite.code.slice(4)}`),
						h('button', { class: 'copy-code', onclick: () => copy(invite.code, this.lobby.toasts, 'Code') }, 'Copy code')) : null,
					h('button', { class: 'open-invite', onclick: () => enterRoom(invite.token) }, `Open as ${invite.role}`)));
		}));
	}

	async close() {
		try {
			await this.lobby.api.post(`/api/rooms/${this.room.id}/close`);
			await this.lobby.refresh();
		} catch (error) {
			this.lobby.toasts.say(`Cannot close: ${error.message}`, 'error');
		}
	}
}

async function copy(text, toasts, what) {
	try {
		await navigator.clipboard.writeText(text);
		toasts.say(`${what} copied`, 'info');
	} catch {
		toasts.say(`${what}: ${text}`, 'info'); // no clipboard here (an insecure origin): show it to copy by hand
	}
}

/** Every file of a drop, folders included (recursively). */
async function droppedFiles(dataTransfer) {
	const entries = [...dataTransfer.items].map((item) => item.webkitGetAsEntry?.()).filter(Boolean);
	if (!entries.length) return [...dataTransfer.files];
	const files = [];
	const walk = async (entry) => {
		if (entry.isFile) files.push(await new Promise((resolve, reject) => entry.file(resolve, reject)));
		else if (entry.isDirectory) {
			const reader = entry.createReader();
			for (;;) {
				const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
				if (!batch.length) break;
				for (const child of batch) await walk(child);
			}
		}
	};
	for (const entry of entries) await walk(entry);
	return files;
}
