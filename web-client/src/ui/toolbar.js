// The tool buttons. A tool the role does not allow is disabled, and its reason is shown under it.
import { fill, h } from './dom.js';

export class Toolbar {
	constructor(parent, toolbox) {
		this.toolbox = toolbox;
		this.element = h('nav', { class: 'toolbar', id: 'toolbar', 'aria-label': 'Tools' });
		this.hint = h('p', { class: 'hint', id: 'tool-hint' });
		parent.append(this.element);
		toolbox.addEventListener('change', () => this.render());
		this.render();
	}

	render() {
		const box = this.toolbox;
		const buttons = box.order.map((id, i) => {
			const tool = box.get(id);
			const reason = box.reason(id);
			return h('div', { class: 'tool', 'data-tool': id },
				h('button', {
					id: `tool-${id}`,
					class: id === box.active ? 'active' : '',
					'aria-pressed': id === box.active ? 'true' : 'false',
					disabled: Boolean(reason),
					title: reason ? `${tool.title}: ${reason}` : `${tool.title}${i < 9 ? ` (${i + 1})` : ''}: ${tool.hint}`,
					onclick: () => box.select(id),
				}, tool.title),
				reason ? h('small', { class: 'reason', id: `reason-${id}` }, reason) : null);
		});
		this.hint.textContent = box.current()?.hint ?? '';
		fill(this.element, buttons, this.hint);
	}
}
