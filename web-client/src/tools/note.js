// Pin a text note on the anatomy (annotation.create, type note, its text, position in LPS mm). The text is what
// was typed in the panel's label box; a note with no text is not sent.
import { Hit } from '../picker.js';

export class NoteTool {
	constructor(context) {
		this.context = context;
		this.id = 'note';
		this.title = 'Note';
		this.kind = 'annotation.create';
		this.hint = 'Type the note in the Label box, then click (or pull the trigger) on the anatomy to pin it there.';
		this.hit = new Hit();
	}

	press(input) {
		const c = this.context;
		if (!c.pick(input.ray, this.hit)) {
			c.notify('Aim at the anatomy to pin the note', 'warn');
			return false;
		}
		const text = c.nextLabel('note');
		if (!text) {
			c.notify('Type the note in the Label box first', 'warn');
			return false;
		}
		c.send('annotation.create', { type: 'note', text, position: c.patient().lpsOf(this.hit.modelPoint) });
		return true;
	}
}
