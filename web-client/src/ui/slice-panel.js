// The slice planes' controls a mouse needs: which plane (up to the room's limit), Axial / Coronal / Sagittal
// (a new plane, or the selected one turned), its depth, its window preset, its window and level in numbers,
// and removing it. Everyone may choose the plane their view cuts the anatomy at; the rest is for the roles the
// server allows (the reason is shown otherwise).
import { ORIENTATIONS } from '../tools/slice-tool.js';
import { fill, h } from './dom.js';

export class SlicePanel {
	constructor(parent, { tool, view, toolbox, maxPlanes }) {
		this.tool = tool;
		this.view = view;
		this.toolbox = toolbox;
		this.maxPlanes = maxPlanes;
		this.orient = Object.entries(ORIENTATIONS).map(([key, o]) => h('button', {
			id: `slice-${key}`, onclick: () => tool.orient(key).catch((e) => tool.context.notify(e.message, 'error')),
		}, o.title));
		this.plane = h('select', { id: 'slice-plane', onchange: () => view.select(this.plane.value || null) });
		this.depth = h('input', { id: 'slice-depth', type: 'range', min: -1, max: 1, step: 0.001, value: 0, oninput: () => {
			const plane = view.current();
			if (plane && tool.series) tool.setDepth(Number(this.depth.value) * tool.extentOf(plane));
		}, onchange: () => {
			const plane = view.current();
			if (plane) tool.settle(plane.id);
		} });
		this.preset = h('select', { id: 'slice-window', onchange: () => tool.setWindow(this.preset.value) });
		this.numbers = h('span', { id: 'slice-wl', class: 'muted' });
		this.remove = h('button', { id: 'slice-clear', onclick: () => tool.clear(view.current()?.id) }, 'Remove');
		this.reason = h('small', { class: 'reason', id: 'slice-reason' });
		this.element = h('section', { id: 'slice-controls' },
			h('h2', {}, 'Slice planes'),
			h('div', { class: 'row' }, ...this.orient),
			h('label', { class: 'field' }, 'Plane ', this.plane, this.remove),
			h('label', { class: 'field' }, 'Depth ', this.depth),
			h('label', { class: 'field' }, 'Window ', this.preset, this.numbers),
			this.reason);
		parent.append(this.element);
	}

	/** The series' presets, once GET /api/rooms/{id}/volume answered. */
	setSeries(series) {
		fill(this.preset, series.windows.map((w) => h('option', { value: w.name }, `${w.name} (${w.window}/${w.level})`)));
	}

	render(state) {
		const current = this.view.current();
		const planes = [...state.slices.values()];
		fill(this.plane, planes.length ? planes.map((p, i) => h('option', { value: p.id, selected: p.id === current?.id },
			`${i + 1}: ${describe(p)}`)) : [h('option', { value: '' }, 'none yet')]);
		const reason = this.toolbox.reason('slice');
		const full = planes.length >= this.maxPlanes && !current;
		for (const button of this.orient) button.disabled = Boolean(reason) || !this.tool.series || full;
		for (const control of [this.depth, this.preset, this.remove]) control.disabled = Boolean(reason) || !current;
		this.plane.disabled = !planes.length;
		this.reason.textContent = reason ?? '';
		if (!current) {
			this.numbers.textContent = '';
			return;
		}
		const fields = this.view.fieldsOf(current.id);
		this.numbers.textContent = `W ${Math.round(fields.window)} / L ${Math.round(fields.level)}`;
		const preset = this.tool.presets().find((w) => w.window === fields.window && w.level === fields.level);
		this.preset.value = preset?.name ?? '';
		if (this.tool.series && document.activeElement !== this.depth) {
			const extent = this.tool.extentOf(fields);
			this.depth.value = String(extent ? this.tool.depthOf(fields) / extent : 0);
		}
	}
}

/** A plane in a few words: the anatomical plane it is closest to, and its tilt from it. */
function describe(plane) {
	const n = [plane.u[1] * plane.v[2] - plane.u[2] * plane.v[1], plane.u[2] * plane.v[0] - plane.u[0] * plane.v[2],
		plane.u[0] * plane.v[1] - plane.u[1] * plane.v[0]];
	const axis = n.map(Math.abs).indexOf(Math.max(...n.map(Math.abs)));
	const tilt = Math.round((Math.acos(Math.min(1, Math.abs(n[axis]))) * 180) / Math.PI);
	const name = ['sagittal', 'coronal', 'axial'][axis];
	return tilt ? `${name}, tilted ${tilt}°` : name;
}
