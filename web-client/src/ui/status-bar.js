// The room's top bar: the study title (the room's de-identified title), the connection state (with
// "reconnecting…" while the socket comes back), the model lock, follow-me, and the Enter VR button.
import { h } from './dom.js';

const STATUS_WORDS = {
	connecting: 'Connecting…',
	live: 'Connected',
	reconnecting: 'Reconnecting…',
	refused: 'Not admitted',
};

export class StatusBar {
	constructor(parent, { onEnterVR, onLeave }) {
		this.title = h('h1', { id: 'room-title' }, 'Theatrum');
		this.subtitle = h('span', { id: 'room-subtitle', class: 'muted' });
		this.connection = h('span', { id: 'connection', class: 'badge', 'data-status': 'connecting' }, STATUS_WORDS.connecting);
		this.lock = h('span', { id: 'lock-state', class: 'badge warn', hidden: true }, 'Model locked by the instructor');
		this.follow = h('span', { id: 'follow-state', class: 'badge info', hidden: true });
		this.vrButton = h('button', { id: 'enter-vr', class: 'primary', disabled: true, onclick: () => onEnterVR() }, 'Enter VR');
		this.vrReason = h('span', { id: 'vr-reason', class: 'reason' });
		this.element = h('header', { class: 'topbar' },
			h('div', { class: 'titles' }, this.title, this.subtitle),
			h('div', { class: 'badges' }, this.connection, this.lock, this.follow),
			h('div', { class: 'actions' }, h('span', { class: 'vr' }, this.vrButton, this.vrReason),
				h('button', { id: 'leave', onclick: () => onLeave() }, 'Leave')));
		parent.append(this.element);
	}

	setConnection(status, detail) {
		this.connection.dataset.status = status;
		this.connection.textContent = STATUS_WORDS[status] ?? status;
		this.connection.title = detail || '';
		if (status === 'refused' && detail) this.connection.textContent = `Not admitted: ${detail}`;
	}

	render(state) {
		const room = state.room;
		this.title.textContent = room.title || 'Untitled room';
		const me = state.me();
		this.subtitle.textContent = `${room.mode} room · study ${room.study} · you are ${me?.name} (${me?.role})${me?.muted ? ', muted' : ''}${room.closed ? ' · closed' : ''}`;
		document.title = `${room.title || 'Room'} · Theatrum`;
		this.lock.hidden = !state.locked;
		const leader = state.follow ? state.participants.get(state.follow) : null;
		this.follow.hidden = !leader;
		if (leader) this.follow.textContent = leader.id === me?.id ? 'You lead follow-me' : `Following ${leader.name}`;
	}

	setVR({ supported, reason, presenting }) {
		this.vrButton.disabled = !supported;
		this.vrButton.textContent = presenting ? 'Exit VR' : 'Enter VR';
		this.vrReason.textContent = supported ? '' : reason || '';
	}
}
