// A button whose action needs a second, explicit click: the first shows the question with "Yes" and "No"
// buttons in its place (no browser dialog, so a headset's browser and a screen reader get the same page).
import { h } from './dom.js';

/** {label, question, yes, className, onConfirm(): Promise|void}: an element holding the button. `open`: start
 * with the question asked; `onToggle(open)`: told when the question is asked or put away (a list rebuilt on
 * every change keeps an open question open with these two). */
export function confirmButton({ label, question, yes, className, title, onConfirm, open = false, onToggle = () => {} }) {
	const box = h('span', { class: `confirm ${className}` });
	const close = () => {
		box.replaceChildren(ask);
		onToggle(false);
	};
	const ask = h('button', { class: className, title, onclick: () => {
		const confirm = h('button', { class: `${className}-yes danger`, onclick: async () => {
			confirm.disabled = true;
			try {
				await onConfirm();
			} finally {
				close();
			}
		} }, yes);
		const cancel = h('button', { class: `${className}-no`, onclick: () => {
			close();
			ask.focus();
		} }, 'No');
		box.replaceChildren(h('span', { class: 'question', role: 'alert' }, question), confirm, cancel);
		onToggle(true);
		if (!open) cancel.focus();
	} }, label);
	box.append(ask);
	if (open) ask.click(); // asked before this element was rebuilt: still asked
	return box;
}
