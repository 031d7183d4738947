// Who is in the room (name, role colour, present, muted), and the moderation controls the server's permissions
// give my role (an instructor's): lock and unlock the model, follow-me, and for each other participant
// mute/unmute, change of role (promote), and removal from the room (kick, after a confirmation).
import { ROLE_COLORS } from '../role-colors.js';
import { confirmButton } from './confirm.js';
import { fill, h } from './dom.js';

export class ParticipantsPanel {
	/** `permissions`: the server's (its roles, and whether I may mute); `send(kind, fields)`: an op. */
	constructor(parent, { permissions, send }) {
		this.permissions = permissions;
		this.send = send;
		this.lockButton = h('button', { id: 'lock-toggle' }, 'Lock model');
		this.followButton = h('button', { id: 'follow-toggle' }, 'Follow me');
		this.moderation = h('div', { class: 'row', id: 'moderation' }, this.lockButton, this.followButton);
		this.list = h('ul', { id: 'participants', class: 'participants' });
		this.element = h('section', { class: 'people' }, h('h2', {}, 'Participants'), this.list, this.moderation);
		parent.append(this.element);
	}

	render(state) {
		const me = state.me();
		// What my role may do here, as the server's permissions say (nothing once the room is closed).
		const allowed = (kind) => Boolean(me) && !state.room.closed && !this.permissions.may(me.role, kind, { muted: me.muted });
		const leading = state.follow === me?.id;
		this.lockButton.hidden = !allowed(state.locked ? 'room.unlock' : 'room.lock');
		this.lockButton.textContent = state.locked ? 'Unlock model' : 'Lock model';
		this.lockButton.onclick = () => this.send(state.locked ? 'room.unlock' : 'room.lock');
		this.followButton.hidden = !allowed(leading ? 'follow.stop' : 'follow.start');
		this.followButton.textContent = leading ? 'Stop follow-me' : 'Follow me';
		this.followButton.onclick = () => this.send(leading ? 'follow.stop' : 'follow.start');
		this.moderation.hidden = this.lockButton.hidden && this.followButton.hidden;

		const people = [...state.participants.values()].filter((p) => !p.kicked)
			.sort((a, b) => Number(b.present) - Number(a.present) || a.name.localeCompare(b.name));
		fill(this.list, people.map((p) => {
			const controls = [];
			if (p.id !== me?.id && allowed('participant.mute')) {
				controls.push(h('button', {
					class: 'mute', disabled: p.role === 'instructor', title: p.role === 'instructor' ? 'instructors cannot be muted' : '',
					onclick: () => this.send('participant.mute', { participant: p.id, muted: !p.muted }),
				}, p.muted ? 'Unmute' : 'Mute'));
			}
			if (p.id !== me?.id && allowed('participant.role')) {
				const select = h('select', {
					class: 'role', 'aria-label': `Role of ${p.name}`,
					onchange: () => this.send('participant.role', { participant: p.id, role: select.value }),
				}, this.permissions.roles.map((r) => h('option', { value: r, selected: r === p.role }, r)));
				controls.push(select);
			}
			if (p.id !== me?.id && p.role !== 'instructor' && allowed('participant.kick')) {
				controls.push(confirmButton({ label: 'Remove', className: 'kick', yes: 'Remove',
					question: `Remove ${p.name} from the room? Their invite and the room code stop working for them.`,
					onConfirm: () => this.send('participant.kick', { participant: p.id }),
					open: this.asking === p.id, onToggle: (open) => {
						if (open) this.asking = p.id;
						else if (this.asking === p.id) this.asking = null;
					} }));
			}
			return h('li', { 'data-id': p.id, 'data-role': p.role, class: p.present ? 'present' : 'absent' },
				h('span', { class: 'dot', style: { background: ROLE_COLORS[p.role] } }),
				h('span', { class: 'name' }, p.name, p.id === me?.id ? ' (you)' : ''),
				h('span', { class: 'role-word muted' }, p.role, p.muted ? ' · muted' : '', p.present ? '' : ' · away'),
				controls);
		}));
	}
}
