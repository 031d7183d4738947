// The annotations panel: the Label box, every annotation of the room (with who made it, and delete where the
// role allows it), undo of my own last annotation, and the controls of the clip and grab tools that a mouse
// needs (axis and depth of the clip plane, the model's scale).
import { ROLE_COLORS } from '../role-colors.js';
import { annotationText } from '../scene/annotation-text.js';
import { AXES } from '../tools/clip-tool.js';
import { fill, h } from './dom.js';

const TYPE_WORDS = { point: 'Point', measurement: 'Measurement', stroke: 'Stroke', note: 'Note' };

export class AnnotationsPanel {
	/** `label`: the LabelField; `permissions`: the server's (say which annotations I may delete, and why). */
	constructor(parent, { label, permissions, onDelete, onUndo, clipTool, grabTool, toolbox }) {
		this.permissions = permissions;
		this.onDelete = onDelete;
		this.clipTool = clipTool;
		this.grabTool = grabTool;
		this.toolbox = toolbox;
		// The same box holds a note's text while the note tool is active.
		toolbox.addEventListener('change', () => label.holdNote(toolbox.active === 'note'));
		this.undo = h('button', { id: 'undo', onclick: () => onUndo() }, 'Undo my last');
		this.list = h('ol', { id: 'annotations', class: 'annotations' });
		this.count = h('span', { class: 'muted', id: 'annotation-count' });

		this.axis = h('select', { id: 'clip-axis', 'aria-label': 'Clip plane axis', onchange: () => {
			clipTool.setAxis(this.axis.value);
			this.syncSlider();
		} }, Object.entries(AXES).map(([key, axis]) => h('option', { value: key }, axis.title)));
		this.slider = h('input', { id: 'clip-depth', type: 'range', min: -1, max: 1, step: 0.001, value: 0, oninput: () => {
			clipTool.setOffset(Number(this.slider.value) * clipTool.extent());
		}, onchange: () => clipTool.throttle.flush() });
		this.clearClips = h('button', { id: 'clip-clear', onclick: () => clipTool.clearAll() }, 'Clear planes');
		this.clipReason = h('small', { class: 'reason', id: 'clip-reason' });

		this.scale = h('input', { id: 'model-scale', type: 'range', min: -1, max: 1, step: 0.01, value: 0, oninput: () => {
			grabTool.setScale(10 ** Number(this.scale.value));
			this.scaleWords.textContent = `${(10 ** Number(this.scale.value)).toFixed(2)}×`;
		}, onchange: () => grabTool.throttle.flush() });
		this.scaleWords = h('span', { id: 'model-scale-value' }, '1.00×');
		this.scaleReason = h('small', { class: 'reason', id: 'scale-reason' });

		this.element = h('aside', { class: 'panel', id: 'panel' },
			h('section', {},
				h('h2', {}, 'Annotations ', this.count),
				label.element,
				this.list,
				this.undo),
			h('section', { id: 'clip-controls' },
				h('h2', {}, 'Clip plane'),
				h('div', { class: 'row' }, this.axis, this.clearClips),
				h('label', { class: 'field' }, 'Depth ', this.slider),
				this.clipReason),
			h('section', { id: 'model-controls' },
				h('h2', {}, 'Model'),
				h('label', { class: 'field' }, 'Scale ', this.scale, this.scaleWords),
				this.scaleReason));
		parent.append(this.element);
	}

	syncSlider() {
		const extent = this.clipTool.extent();
		this.slider.value = extent ? String(this.clipTool.offset / extent) : '0';
	}

	render(state) {
		const me = state.me();
		const items = [];
		for (const a of state.annotations.values()) {
			const author = state.participants.get(a.author);
			const reason = me ? this.permissions.may(me.role, 'annotation.delete', { own: a.author === me.id, muted: me.muted }) : 'not connected';
			items.push(h('li', { 'data-id': a.id, 'data-type': a.type, class: 'annotation' },
				h('span', { class: 'dot', style: { background: a.color || ROLE_COLORS[author?.role] || '#ffcc00' } }),
				h('span', { class: 'kind' }, TYPE_WORDS[a.type] ?? a.type),
				h('span', { class: 'text' }, annotationText(a)),
				h('span', { class: 'author muted' }, author?.name ?? a.author),
				h('button', {
					class: 'delete', disabled: Boolean(reason), title: reason ?? 'Delete this annotation',
					onclick: () => this.onDelete(a.id),
				}, 'Delete')));
		}
		fill(this.list, items);
		this.count.textContent = `(${state.annotations.size})`;
		const why = me?.muted ? 'you are muted by the instructor' : state.room.closed ? 'the room is closed' : null;
		this.undo.disabled = Boolean(why) || !state.newestOwnAnnotation();
		this.undo.title = why ? `Undo: ${why}` : 'Undo my last annotation (Ctrl+Z)';

		const clipReason = this.toolbox.reason('clip');
		for (const control of [this.axis, this.slider, this.clearClips]) control.disabled = Boolean(clipReason);
		this.clipReason.textContent = clipReason ?? '';
		const grabReason = this.toolbox.reason('grab');
		this.scale.disabled = Boolean(grabReason);
		this.scaleReason.textContent = grabReason ?? '';
		if (!this.grabTool.active && document.activeElement !== this.scale) {
			this.scale.value = String(Math.log10(state.model.scale));
			this.scaleWords.textContent = `${state.model.scale.toFixed(2)}×`;
		}
	}
}
