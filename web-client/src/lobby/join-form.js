// Joining a room by its 8-digit code (POST /api/join), with the name to be shown: a headset user's way in.
// The room opens in this tab.
import { Api } from '../net/api.js';
import { enterRoom } from '../net/credentials.js';
import { h } from '../ui/dom.js';

export class JoinForm {
	/** `maxName`: the room limits' max_name_length, where known (the public page has no config: the server
	 * then says when a name is too long). */
	constructor(toasts, { maxName = null } = {}) {
		const code = h('input', { id: 'join-code', 'aria-label': 'Room code', inputmode: 'numeric', autocomplete: 'off', placeholder: '1234 5678', maxlength: 11 });
		const name = h('input', { id: 'join-name', 'aria-label': 'Your name', autocomplete: 'name', placeholder: 'Your name', maxlength: maxName });
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
		this.element = h('section', { id: 'join-section', class: 'card' }, h('h2', {}, 'Join a room with its code'),
			h('p', { class: 'muted' }, 'Type the 8-digit code your instructor gives you.'), form);
	}
}
