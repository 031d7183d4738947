// A tiny DOM builder: h('button', {class: 'x', onclick}, 'text', child...). Text is always set as text.

export function h(tag, attributes = {}, ...children) {
	const element = document.createElement(tag);
	for (const [name, value] of Object.entries(attributes)) {
		if (value === null || value === undefined || value === false) continue;
		if (name.startsWith('on') && typeof value === 'function') element.addEventListener(name.slice(2), value);
		else if (name === 'dataset') Object.assign(element.dataset, value);
		else if (name === 'style' && typeof value === 'object') Object.assign(element.style, value);
		else if (value === true) element.setAttribute(name, '');
		else element.setAttribute(name, String(value));
	}
	for (const child of children.flat()) {
		if (child === null || child === undefined || child === false) continue;
		element.append(child instanceof Node ? child : document.createTextNode(String(child)));
	}
	return element;
}

/** Replace all children of `element`. */
export function fill(element, ...children) {
	element.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
	return element;
}
