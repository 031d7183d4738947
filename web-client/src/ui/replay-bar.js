// The replay bar of a training review (a closed room played back read-only, docs/protocol.md "Replay"):
// where the replay is (the seq it shows of the room's last), its state, its speed, Restart, and a slider to
// seek. Every start is a new replay request {from, speed} handed to onPlay; the bar only asks and shows.
import { h } from './dom.js';

export const REPLAY_SPEEDS = [1, 4, 16];
export const DEFAULT_REPLAY_SPEED = 4;

const STATUS_WORDS = {
	connecting: 'Connecting…',
	live: 'Playing',
	ended: 'Ended',
	interrupted: 'Interrupted',
	refused: 'Not admitted',
};

export class ReplayBar {
	constructor(parent, { speed = DEFAULT_REPLAY_SPEED, onPlay }) {
		this.onPlay = onPlay;
		this.status = 'connecting';
		this.seq = 0;
		this.last = 0;
		this.from = 1; // of the latest request
		this.seeking = false; // the slider is being dragged: it does not follow the replay meanwhile
		const speeds = REPLAY_SPEEDS.includes(speed) ? REPLAY_SPEEDS : [...REPLAY_SPEEDS, speed].sort((a, b) => a - b);
		this.state = h('span', { id: 'replay-status', class: 'badge', 'data-status': 'connecting' }, STATUS_WORDS.connecting);
		this.position = h('span', { id: 'replay-position', class: 'position' }, '… / …');
		this.slider = h('input', {
			id: 'replay-seek', type: 'range', min: 1, max: 1, step: 1, value: 1, disabled: true, 'aria-label': 'Seek to an event',
			oninput: () => this.preview(), onchange: () => this.seek(),
		});
		this.speed = h('select', { id: 'replay-speed', 'aria-label': 'Replay speed', onchange: () => this.changeSpeed() },
			speeds.map((s) => h('option', { value: s, selected: s === speed }, `${s}×`)));
		this.restart = h('button', { id: 'replay-restart', onclick: () => this.play(1) }, 'Restart');
		this.element = h('div', { id: 'replay-bar', class: 'replay-bar', 'data-status': 'connecting' },
			h('strong', {}, 'Replay'), this.state, this.position, this.slider,
			h('label', { class: 'field' }, 'Speed ', this.speed), this.restart);
		parent.append(this.element);
	}

	setStatus(status, detail = '') {
		this.status = status;
		this.element.dataset.status = status;
		this.state.dataset.status = status;
		const words = STATUS_WORDS[status] ?? status;
		this.state.textContent = detail && status !== 'ended' ? `${words}: ${detail}` : words;
		this.state.title = detail;
	}

	/** The replay shows the room after event `seq`, of `last`. */
	setPosition(seq, last) {
		this.seq = seq;
		this.last = last ?? this.last;
		this.slider.max = String(Math.max(1, this.last));
		this.slider.disabled = this.last < 2; // nothing to seek in a room of one event
		if (!this.seeking) {
			this.slider.value = String(seq);
			this.position.textContent = `${seq} / ${this.last}`;
		}
	}

	preview() {
		this.seeking = true;
		this.position.textContent = `${this.slider.value} / ${this.last}`;
	}

	seek() {
		this.seeking = false;
		this.play(Number(this.slider.value));
	}

	/** A new speed applies at once: the replay goes on from where it is (an ended one waits for Restart). */
	changeSpeed() {
		if (this.status === 'live') this.play(this.seq);
		else if (this.status === 'connecting') this.play(this.from);
	}

	play(from) {
		this.from = Math.min(Math.max(1, from), Math.max(1, this.last));
		this.onPlay({ from: this.from, speed: Number(this.speed.value) });
	}
}
