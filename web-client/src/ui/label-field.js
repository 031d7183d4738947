// The Label box: the label of the next point, measurement or stroke, or the text of the next note. Each is as
// long as the room limits allow (a note may be longer than a label). A tool takes what was typed, once.
import { h } from './dom.js';

const LABEL_HINT = 'Label for the next point, measurement or structure';
const NOTE_HINT = 'Text of the next note';

export class LabelField {
	/** `limits`: the room limits ({max_label_length, max_note_length}). */
	constructor(limits) {
		this.limits = limits;
		this.input = h('input', { id: 'label-input', type: 'text', maxlength: limits.max_label_length, placeholder: LABEL_HINT });
		this.element = h('label', { class: 'field' }, 'Label ', this.input);
	}

	/** Hold a note's text (true) or a label (false). */
	holdNote(note) {
		this.input.maxLength = note ? this.limits.max_note_length : this.limits.max_label_length;
		this.input.placeholder = note ? NOTE_HINT : LABEL_HINT;
	}

	/** The text typed for the next annotation of `type` (then cleared), or a numbered default for points. */
	take(type, state) {
		const typed = this.input.value.trim();
		if (typed) {
			this.input.value = '';
			return typed;
		}
		if (type !== 'point') return '';
		let n = 1;
		for (const a of state.annotations.values()) if (a.type === 'point') n += 1;
		return `Point ${n}`;
	}
}
