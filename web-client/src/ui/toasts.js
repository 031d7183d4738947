// Short messages at the bottom of the page: what just happened, and why an action was refused.
import { h } from './dom.js';

const SHOW_MS = 4000;

export class Toasts {
	constructor(parent) {
		this.element = h('div', { class: 'toasts', role: 'status', 'aria-live': 'polite' });
		parent.append(this.element);
	}

	/** level: 'info', 'warn' or 'error'. */
	say(text, level = 'info') {
		const toast = h('div', { class: `toast ${level}` }, text);
		this.element.append(toast);
		while (this.element.children.length > 4) this.element.firstChild.remove();
		setTimeout(() => toast.remove(), SHOW_MS);
	}
}
