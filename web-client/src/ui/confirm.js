// A button whose action needs a second, explicit click: the first shows the question with "Yes" and "No"
// buttons in its place (no browser dialog, so a headset's browser and a screen reader get the same page).
import { h } from './dom.js';

/** {label, question, yes, className, onConfirm(): Promise|void}: an element holding the button. */
export function confirmButton({ label, question, yes, className, title, onConfirm }) {
	const box = h('span', { class: `confirm ${className}` });
	const ask = h('button', { class: className, title, onclick: () => {
		const confirm = h('button', { class: `${className}-yes danger`, onclick: async () => {
			confirm.disabled = true;
			try {
				await onConfirm();
			} finally {
				box.replaceChildren(ask);
			}
		} }, yes);
		const cancel = h('button', { class: `${className}-no`, onclick: () => {
			box.replaceChildren(ask);
			ask.focus();
		} }, 'No');
		box.replaceChildren(h('span', { class: 'question', role: 'alert' }, question), confirm, cancel);
		cancel.focus();
	} }, label);
	box.append(ask);
	return box;
}
