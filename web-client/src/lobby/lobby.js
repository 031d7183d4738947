// The lobby, for whoever holds the admin login (/?token=…): the studies (UploadBox, a StudyCard each, with
// reconstruction progress live from the admin's socket `job` events), the rooms (a RoomItem each), and joining
// by room code. What it offers (presets, budgets, limits) is the server's config.
import { io } from 'socket.io-client';

import { Api } from '../net/api.js';
import { fill, h } from '../ui/dom.js';
import { Toasts } from '../ui/toasts.js';
import { JoinForm } from './join-form.js';
import { PacsSearch } from './pacs-search.js';
import { RoomItem } from './room-item.js';
import { StudyCard } from './study-card.js';
import { UploadBox } from './upload-box.js';

export class Lobby {
	/** `config`: the ServerConfig. */
	constructor(root, token, config) {
		document.body.classList.add('lobby-view');
		this.api = new Api(token);
		this.token = token;
		this.config = config;
		this.toasts = new Toasts(document.body);
		this.cards = new Map(); // study id -> StudyCard
		this.jobs = new Map(); // job id -> StudyCard
		this.studyList = h('ul', { id: 'studies', class: 'studies' });
		this.roomList = h('ul', { id: 'rooms', class: 'rooms' });
		const upload = new UploadBox(this.api, this.toasts, { onUploaded: (result) => this.uploaded(result) });
		const join = new JoinForm(this.toasts, { maxName: config.limits.max_name_length });
		root.append(
			h('header', { class: 'topbar' }, h('div', { class: 'titles' }, h('h1', {}, 'Theatrum'), h('span', { class: 'muted' }, 'Lobby'))),
			h('main', { class: 'lobby' },
				h('section', { class: 'card', id: 'studies-section' }, h('h2', {}, 'Studies'), upload.elements, this.studyList),
				h('section', { class: 'card', id: 'rooms-section' }, h('h2', {}, 'Rooms'), this.roomList),
				join.element));
		// Reconstruction progress, live: the admin's socket joins the server's "admin" room.
		this.socket = io({ auth: { token } });
		this.jobEvents = 0;
		this.socket.on('job', (job) => {
			this.jobEvents += 1;
			this.jobs.get(job.id)?.onJob(job);
		});
		// A study that arrived another way (the DICOM receiver: a PACS or a modality sent it).
		this.socket.on('studies', () => this.refresh().catch(() => {}));
		if (config.pacs.configured) {
			this.pacs = new PacsSearch(this);
			root.querySelector('main.lobby').insertBefore(this.pacs.element, join.element);
		}
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

	async uploaded(result) {
		await this.refresh();
		this.cards.get(result.study_id)?.element.scrollIntoView({ block: 'nearest' });
	}

	/** A study was deleted: its card goes (a refresh would not bring it back). */
	removed(studyId) {
		this.cards.get(studyId)?.element.remove();
		this.cards.delete(studyId);
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
