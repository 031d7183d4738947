// Opening a room's role link (the link or QR code handed out per role): the page asks for the name to be shown
// and exchanges the link for a personal invite (POST /api/invites/exchange), so that everyone who opens the
// student link is a student of their own. The browser keeps the personal invite (net/credentials.js), so that
// opening the link again, or a reload, is the same person.
import { Api } from '../net/api.js';
import { enterWithPersonalInvite, invitePayload, leaveRoom } from '../net/credentials.js';
import { h } from '../ui/dom.js';
import { Toasts } from '../ui/toasts.js';

export class NamePage {
	constructor(root, roleLink) {
		document.body.classList.add('lobby-view');
		const toasts = new Toasts(document.body);
		const role = invitePayload(roleLink)?.role ?? 'participant';
		const name = h('input', { id: 'exchange-name', autocomplete: 'name', required: true, maxlength: 200 });
		const button = h('button', { id: 'exchange-button', class: 'primary', type: 'submit' }, 'Enter the room');
		const form = h('form', { class: 'row', onsubmit: async (e) => {
			e.preventDefault();
			button.disabled = true;
			try {
				const personal = await new Api(null).post('/api/invites/exchange', { token: roleLink, name: name.value });
				enterWithPersonalInvite(roleLink, personal.token);
			} catch (error) {
				toasts.say(`Cannot enter: ${error.message}`, 'error');
				button.disabled = false;
			}
		} }, h('label', { for: 'exchange-name' }, 'Your name'), name, button);
		this.element = h('section', { id: 'exchange-section', class: 'card' },
			h('h2', {}, `Join as ${role}`),
			h('p', { class: 'muted' }, 'The others in the room will see this name beside your avatar. It is kept in the room\'s record.'),
			form, h('button', { type: 'button', onclick: leaveRoom }, 'Cancel'));
		root.append(h('header', { class: 'topbar' }, h('div', { class: 'titles' }, h('h1', {}, 'Theatrum'))),
			h('main', { class: 'lobby' }, this.element));
		name.focus();
	}
}
