// The public page (no credentials): only joining a room by its code, for a headset user.
import { h } from '../ui/dom.js';
import { Toasts } from '../ui/toasts.js';
import { JoinForm } from './join-form.js';

export class JoinPage {
	constructor(root) {
		document.body.classList.add('lobby-view');
		const toasts = new Toasts(document.body);
		root.append(h('header', { class: 'topbar' }, h('div', { class: 'titles' }, h('h1', {}, 'Theatrum'))),
			h('main', { class: 'lobby' }, new JoinForm(toasts).element));
	}
}
