// The lobby's sign-in, when the admin token of the login URL is wrong or stale (the server was given a new one,
// or the link was cut short): say so, and take the token typed or pasted from the data folder's admin-token file.
import { signIn } from '../net/credentials.js';
import { h } from '../ui/dom.js';

export class SignInPage {
	constructor(root, detail) {
		document.body.classList.add('lobby-view');
		const token = h('input', { id: 'admin-token', type: 'password', autocomplete: 'off', required: true });
		const form = h('form', { class: 'row', onsubmit: (e) => {
			e.preventDefault();
			signIn(token.value);
		} }, h('label', { for: 'admin-token' }, 'Admin token'), token,
		h('button', { id: 'sign-in', class: 'primary', type: 'submit' }, 'Sign in'));
		this.element = h('section', { id: 'sign-in-section', class: 'card', role: 'alert' },
			h('h2', {}, 'Sign in to the lobby'),
			h('p', {}, `The server did not accept this login link (${detail}). Open the URL that \`theatrum serve\` ` +
				'printed, or paste the token from the admin-token file in the server\'s data folder.'),
			form);
		root.append(h('header', { class: 'topbar' }, h('div', { class: 'titles' }, h('h1', {}, 'Theatrum'))),
			h('main', { class: 'lobby' }, this.element));
		token.focus();
	}
}
