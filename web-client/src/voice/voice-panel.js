// The voice panel: my microphone (talk, push-to-talk, what the browser said when there is no sound), my hand,
// each voice I can hear with its speaking light and its own volume, and for the instructor the raised hands in
// the order they went up, with allow and deny, and "mute all". It also marks who speaks, who has an open mic
// and whose hand is up in the participant list.
import { fill, h } from '../ui/dom.js';
import { ME } from './voice.js';

// The badge when the microphone cannot be had (the reason line under it says what to do).
const MIC_PROBLEMS = { refused: 'Mic refused by the browser', 'no-device': 'No microphone', unavailable: 'Mic unavailable', error: 'Mic failed' };

export class VoicePanel {
	/** `permissions`: the server's (whether my role may allow and mute). */
	constructor(parent, voice, permissions) {
		this.voice = voice;
		this.permissions = permissions;
		this.state = null;
		this.micButton = h('button', { id: 'mic-toggle', class: 'primary', onclick: () => voice.toggleMic() }, 'Talk');
		this.micState = h('span', { id: 'mic-state', class: 'badge', 'data-state': 'closed' }, 'Mic closed');
		this.handButton = h('button', { id: 'hand-toggle', onclick: () => this.toggleHand() }, 'Raise hand');
		this.reasonLine = h('span', { id: 'voice-reason', class: 'reason' });
		this.soundButton = h('button', { id: 'voice-sound', hidden: true, onclick: () => voice.mixer.resume().then(() => this.render()) }, 'Turn on the room’s sound');
		this.hands = h('ol', { id: 'raised-hands', class: 'hands' });
		this.muteAllButton = h('button', { id: 'mute-all', onclick: () => voice.muteAll() }, 'Mute all');
		this.floor = h('div', { id: 'floor', class: 'floor', hidden: true }, h('h3', {}, 'Raised hands'), this.hands, h('div', { class: 'row' }, this.muteAllButton));
		this.voices = h('ul', { id: 'voices', class: 'voices' });
		this.element = h('section', { id: 'voice', class: 'voice' },
			h('h2', {}, 'Voice'),
			h('div', { class: 'row' }, this.micButton, this.micState, this.handButton),
			this.reasonLine,
			h('div', { class: 'hint' }, 'Hold V to talk (in VR: the left thumbstick); M opens or closes the mic.'),
			this.soundButton, this.floor, this.voices);
		parent.prepend(this.element);
		voice.addEventListener('change', () => this.render());
		voice.addEventListener('speaking', () => this.mark());
		voice.mixer.context.addEventListener('statechange', () => this.render());
	}

	toggleHand() {
		const state = this.state;
		if (state?.voice.hands.has(state.you?.id)) this.voice.lowerHand();
		else this.voice.raiseHand();
	}

	render(state = this.state) {
		this.state = state;
		if (!state) return;
		const voice = this.voice;
		const me = state.me();
		const rights = state.voice;
		const open = rights.isOpen(me?.id);
		const why = voice.reason();
		const mic = voice.microphone;
		const micProblem = MIC_PROBLEMS[mic.state];
		this.micButton.textContent = open ? 'Stop talking' : 'Talk';
		this.micButton.classList.toggle('active', open);
		this.micButton.disabled = !open && why !== null;
		let badge = open ? 'Mic open' : 'Mic closed';
		if (voice.wanted && !open) badge = mic.state === 'asking' ? 'Asking for the mic…' : 'Opening…';
		if (micProblem) badge = micProblem;
		this.micState.textContent = badge;
		this.micState.dataset.state = micProblem ? 'problem' : open ? 'open' : 'closed';
		this.reasonLine.textContent = micProblem ? mic.words : (!open && why) ? `You cannot talk now: ${why}` : '';
		const raised = rights.hands.has(me?.id);
		this.handButton.textContent = raised ? 'Lower hand' : 'Raise hand';
		this.handButton.hidden = !me || me.role === 'observer' || me.role === 'instructor' || state.room.closed;
		this.soundButton.hidden = voice.mixer.context.state !== 'suspended' || rights.mics.size === 0;

		// The instructor manages the queue; a replay shows it to whoever reviews the room (who held the floor when).
		const instructor = me && !state.room.closed && !this.permissions.may(me.role, 'voice.allow');
		this.floor.hidden = !instructor && !voice.room.replay;
		if (!this.floor.hidden) {
			const now = Date.now();
			fill(this.hands, [...rights.hands].map(([id, at]) => {
				const p = state.participants.get(id);
				return h('li', { 'data-id': id },
					h('span', { class: 'name' }, p?.name ?? id),
					h('span', { class: 'muted' }, ` · ${ago(now - at)}`),
					h('button', { class: 'allow', onclick: () => voice.allow(id, true) }, 'Allow'),
					h('button', { class: 'deny', onclick: () => voice.allow(id, false) }, 'Deny'));
			}));
			if (rights.hands.size === 0) this.hands.append(h('li', { class: 'muted empty' }, 'No hands raised'));
		}

		const others = [...state.participants.values()].filter((p) => p.present && p.id !== me?.id);
		fill(this.voices, others.map((p) => {
			const slider = h('input', {
				type: 'range', min: '0', max: '2', step: '0.05', value: String(voice.mixer.volume(p.id)), class: 'volume',
				'aria-label': `Volume of ${p.name}`, title: `Volume of ${p.name}`,
				oninput: () => voice.setVolume(p.id, Number(slider.value)),
			});
			const talking = rights.isOpen(p.id);
			return h('li', { 'data-id': p.id, class: talking ? 'talking' : '' },
				h('span', { class: 'light' }), h('span', { class: 'name' }, p.name),
				h('span', { class: 'muted' }, talking ? ' · mic open' : ''), slider);
		}));
		this.mark();
	}

	/** Speaking lights here and in the participant list; open mics and raised hands there too. */
	mark() {
		const state = this.state;
		if (!state) return;
		const speaking = this.voice.speaking;
		const me = state.you?.id;
		for (const li of document.querySelectorAll('#participants li[data-id], #voices li[data-id]')) {
			const id = li.dataset.id;
			li.classList.toggle('speaking', speaking.has(id === me ? ME : id));
			li.classList.toggle('mic-open', state.voice.isOpen(id));
			li.classList.toggle('hand-raised', state.voice.hands.has(id));
		}
		this.micState.classList.toggle('speaking', speaking.has(ME) && state.voice.isOpen(me));
	}
}

function ago(ms) {
	const s = Math.max(0, Math.round(ms / 1000));
	return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min`;
}
