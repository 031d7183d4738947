// The room's page: the top bar (StatusBar), a replay's ReplayBar, the tool column, the viewport with the mesh
// progress over it, the panels' column, and the toasts that say what happened and why an action was refused.
import { h } from './dom.js';
import { ProgressBar } from './progress-bar.js';
import { ReplayBar } from './replay-bar.js';
import { StatusBar } from './status-bar.js';
import { Toasts } from './toasts.js';

export class RoomPage {
	/** `replay`: null for the live room, or the replay request {speed, …} (its bar asks onPlay to play). */
	constructor(root, { replay, onEnterVR, onLeave, onPlay }) {
		document.body.classList.add('room-view');
		if (replay) document.body.classList.add('replay-view'); // style.css hides the editing controls
		this.toasts = new Toasts(document.body);
		this.left = h('div', { class: 'left' });
		this.viewport = h('div', { class: 'viewport', id: 'viewport' });
		this.right = h('div', { class: 'right' });
		this.status = new StatusBar(root, { onEnterVR, onLeave });
		this.replayBar = replay ? new ReplayBar(root, { speed: replay.speed, onPlay }) : null;
		// On a small screen (a phone) the tool column and the panels fold away behind these two buttons.
		const toggle = (id, words, name) => h('button', { id, 'aria-expanded': 'false', 'aria-controls': name, onclick: (e) => {
			const open = document.body.classList.toggle(`${name}-open`);
			e.currentTarget.setAttribute('aria-expanded', String(open));
		} }, words);
		this.left.id = 'tools-column';
		this.right.id = 'panels-column';
		root.append(h('div', { class: 'small-screen-bar' }, toggle('toggle-tools', 'Tools', 'tools-column'), toggle('toggle-panels', 'Panels', 'panels-column')),
			h('div', { class: 'room-body' }, this.left, this.viewport, this.right));
		this.progress = new ProgressBar(this.viewport, { id: 'mesh-progress', className: 'overlay', label: 'Loading the anatomy' });
		this.progress.set(0, 'Connecting');
	}

	/** level: 'info', 'warn' or 'error'. */
	notify(text, level) {
		this.toasts.say(text, level);
	}

	/** The server did not admit this invite: say why. */
	refuse(detail) {
		this.status.setConnection('refused', detail);
		this.progress.set(0, `Not admitted: ${detail}`);
		this.notify(detail, 'error');
	}
}
