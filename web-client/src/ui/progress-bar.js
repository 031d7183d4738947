// A labelled progress bar (mesh loading, uploads, reconstructions).
import { h } from './dom.js';

export class ProgressBar {
	constructor(parent, { id = null, className = '', label = 'Progress' } = {}) {
		this.bar = h('div', { class: 'bar-fill' });
		this.words = h('span', { class: 'bar-words' });
		this.element = h('div', { class: `progress ${className}`, id, role: 'progressbar', 'aria-label': label, 'aria-valuemin': 0, 'aria-valuemax': 100 },
			h('div', { class: 'bar' }, this.bar), this.words);
		parent.append(this.element);
	}

	/** fraction in [0, 1]; words say what is happening. */
	set(fraction, words = '') {
		const percent = Math.round(Math.max(0, Math.min(1, fraction)) * 100);
		this.bar.style.width = `${percent}%`;
		this.element.setAttribute('aria-valuenow', String(percent));
		this.words.textContent = words ? `${words} · ${percent}%` : `${percent}%`;
		this.element.hidden = false;
	}

	hide() {
		this.element.hidden = true;
	}
}
