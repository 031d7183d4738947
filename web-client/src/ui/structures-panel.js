// The room's named structures (docs/structures.md): each with its colour, name and volume, whether it is shown,
// and its opacity; what one participant changes (structure.style) everyone sees. The structures being grown
// show their progress; a structure that could not be grown says why. The roles the server does not allow to
// change them see the list read-only, with the reason.
import { fill, h } from './dom.js';

export class StructuresPanel {
	/** `send(kind, fields)`: an op; `toolbox`: whose `reason('grow')` and permissions say what my role may do. */
	constructor(parent, { room, toolbox, send, notify }) {
		this.toolbox = toolbox;
		this.send = send;
		this.notify = notify;
		this.progress = new Map(); // request -> {stage, percent}
		this.growing = new Map(); // request -> {name}, as last rendered (to name a failure)
		this.rows = new Map(); // structure id -> its row's controls
		this.signature = '';
		this.list = h('ul', { id: 'structures', class: 'structures' });
		this.pending = h('ul', { id: 'structures-growing', class: 'structures growing' });
		this.reason = h('small', { class: 'reason', id: 'structures-reason' });
		this.empty = h('p', { class: 'muted', id: 'structures-empty' }, 'None yet: the Grow tool outlines one from a click on the anatomy.');
		this.element = h('section', { id: 'structure-controls', hidden: true },
			h('h2', {}, 'Structures'), this.list, this.pending, this.empty, this.reason);
		parent.append(this.element);
		room.addEventListener('structure.progress', (e) => {
			this.progress.set(e.data.request, e.data);
			this.renderGrowing();
		});
		room.addEventListener('event', (e) => {
			const { event } = e.data;
			if (event.kind !== 'structure.fail') return;
			const name = this.growing.get(event.data.request)?.name ?? 'a structure';
			this.notify(`Could not grow "${name}": ${event.data.reason}`, 'warn');
		});
	}

	/** Why my role may not change the structures now (null: it may). */
	styleReason(state) {
		const me = state.me();
		if (!me) return 'not connected to the room';
		if (state.room.closed) return 'the room is closed';
		return this.toolbox.permissions.may(me.role, 'structure.style', { muted: me.muted });
	}

	render(state) {
		this.state = state;
		const structures = [...state.structures.values()];
		const signature = structures.map((s) => `${s.id}\u0000${s.name}`).join('\u0001');
		if (signature !== this.signature) {
			this.signature = signature;
			this.rows.clear();
			fill(this.list, structures.map((s) => this.row(s)));
		}
		const reason = this.styleReason(state);
		for (const s of structures) {
			const row = this.rows.get(s.id);
			row.swatch.style.background = s.color;
			row.visible.checked = Boolean(s.visible);
			if (document.activeElement !== row.opacity) row.opacity.value = String(s.opacity);
			row.visible.disabled = row.opacity.disabled = Boolean(reason);
			row.item.classList.toggle('hidden-structure', !s.visible);
		}
		this.growing = new Map([...state.growing].map(([request, g]) => [request, { ...g }]));
		for (const request of this.progress.keys()) if (!state.growing.has(request)) this.progress.delete(request);
		this.renderGrowing();
		const growReason = this.toolbox.reason('grow');
		this.reason.textContent = structures.length && reason ? `Show and hide: ${reason}` : '';
		this.empty.hidden = Boolean(structures.length) || Boolean(growReason);
		this.element.hidden = !structures.length && !state.growing.size && Boolean(growReason);
	}

	renderGrowing() {
		fill(this.pending, [...this.growing].map(([request, g]) => {
			const p = this.progress.get(request);
			const words = p ? `${p.stage} ${Math.round(p.percent)} %` : 'waiting';
			return h('li', { 'data-request': request }, h('span', { class: 'name' }, g.name), h('span', { class: 'muted' }, ` growing: ${words}`));
		}));
	}

	/** A structure's row: swatch, name and volume, Show, Opacity. */
	row(structure) {
		const id = structure.id;
		const swatch = h('span', { class: 'dot swatch', 'aria-hidden': 'true' });
		const visible = h('input', {
			type: 'checkbox', class: 'visible', 'aria-label': `Show ${structure.name}`,
			onchange: () => this.send('structure.style', { mesh: id, visible: visible.checked }),
		});
		const opacity = h('input', {
			type: 'range', class: 'opacity', min: 0.1, max: 1, step: 0.05, 'aria-label': `Opacity of ${structure.name}`,
			onchange: () => this.send('structure.style', { mesh: id, opacity: Number(opacity.value) }),
		});
		const volume = Number.isFinite(structure.volume_ml) ? `${structure.volume_ml.toFixed(structure.volume_ml < 10 ? 2 : 1)} mL` : '';
		const item = h('li', { 'data-id': id },
			swatch,
			h('label', { class: 'name' }, visible, ' ', structure.name),
			h('span', { class: 'muted volume' }, volume),
			opacity);
		this.rows.set(id, { item, swatch, visible, opacity });
		return item;
	}
}
