// Pin a text note on the anatomy (annotation.create, type note, its text, position in LPS mm). The text is what
// was typed in the panel's label box; a note with no text is not sent.
import { PointTool } from './point-tool.js';

export class NoteTool extends PointTool {
	constructor(context) {
		super(context);
		this.id = 'note';
		this.title = 'Note';
		this.hint = 'Type the note in the Label box, then click (or pull the trigger) on the anatomy to pin it there.';
		this.missed = 'Aim at the anatomy to pin the note';
	}

	place(position) {
		const c = this.context;
		const text = c.nextLabel('note');
		if (!text) {
			c.notify('Type the note in the Label box first', 'warn');
			return false;
		}
		c.send('annotation.create', { type: 'note', text, position });
		return true;
	}
}
