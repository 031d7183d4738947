// One room in the lobby: its state, its invites (links, QR codes, room codes, all copyable) and Close; a closed
// room is replayed instead (a training review, in this tab). A consult room also offers its consult record (a
// DICOM SR for the patient's chart): download it, or send it to the PACS.
import { enterRoom } from '../net/credentials.js';
import { confirmButton } from '../ui/confirm.js';
import { fill, h } from '../ui/dom.js';
import { DEFAULT_REPLAY_SPEED, REPLAY_SPEEDS } from '../ui/replay-bar.js';

export class RoomItem {
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
					confirmButton({ label: 'Close room', className: 'close-room', yes: 'Close it',
						question: 'Close the room for everyone? No one can join or add to it afterwards.',
						onConfirm: () => this.close() })],
				room.mode === 'consult' ? this.recordControls() : null,
				h('button', { class: 'export-ledger', title: 'The room\'s signed event log (a ledger bundle, zip)', onclick: (e) => this.exportLedger(e.target) }, 'Export ledger')),
			h('small', { class: 'muted verify-hint', hidden: true }, 'Verify it offline, on any machine: ', h('code', {}, 'theatrum verify FILE.zip'),
				' checks every event against the signed checkpoints (docs/ledger.md).'),
			this.invites);
		this.verifyHint = this.element.querySelector('.verify-hint');
		this.element.room = this;
	}

	/** A consult room's record for the patient's chart (a DICOM SR): download it, or store it on the PACS. */
	recordControls() {
		return [
			h('button', { class: 'record-download', title: 'The consult record (DICOM SR) of this room\'s annotations', onclick: () => this.downloadRecord() }, 'Record'),
			h('button', { class: 'record-send', title: 'Store the consult record on the PACS', onclick: (e) => this.sendRecord(e.target) }, 'Send to PACS')];
	}

	/** Download the room's ledger bundle, and say how to check it. */
	async exportLedger(button) {
		button.disabled = true;
		try {
			await this.lobby.api.save(`/api/rooms/${this.room.id}/export`, `${this.room.id}-ledger.zip`);
			this.verifyHint.hidden = false;
		} catch (error) {
			this.lobby.toasts.say(`Cannot export the ledger: ${error.message}`, 'error');
		} finally {
			button.disabled = false;
		}
	}

	async downloadRecord() {
		try {
			await this.lobby.api.save(`/api/rooms/${this.room.id}/report.dcm`, `${this.room.id}-record.dcm`);
		} catch (error) {
			this.lobby.toasts.say(`No record: ${error.message}`, 'error');
		}
	}

	async sendRecord(button) {
		button.disabled = true;
		try {
			const sent = await this.lobby.api.post(`/api/rooms/${this.room.id}/report/send`);
			this.lobby.toasts.say(`Record sent to the PACS: ${sent.items} annotations (checkpoint ${sent.checkpoint})`, 'info');
		} catch (error) {
			this.lobby.toasts.say(`Cannot send the record: ${error.message}`, 'error');
		} finally {
			button.disabled = false;
		}
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
			const link = h('input', { class: 'invite-link', readonly: true, value: invite.link, 'aria-label': `Link of the ${invite.role} invite` });
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
			if (this.room.mode === 'consult') this.lobby.toasts.say('Room closed: its consult record is complete (Record, Send to PACS)', 'info');
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
