// The toolbox: which tool is active, which tools the role allows (and why not, in the server's permissions'
// words), and the dispatch of input from the mouse (DesktopInput) and the controllers (ImmersiveSession) to
// the active tool. Every tool acts only through hub ops, so every participant sees the result; the server is
// the judge of each op.
//
// An input is {source: 'mouse' | 'left' | 'right', ray: Ray (world), controller: Object3D | null, event}.
// A tool may implement press(input), move(input), release(input), cancel(), and states its op `kind` for the
// permission check (null: always allowed).

export class Toolbox extends EventTarget {
	constructor(context, permissions) {
		super();
		this.context = context;
		this.permissions = permissions;
		this.tools = new Map();
		this.order = [];
		this.active = null;
		this.reasons = new Map();
		this.pressed = new Set(); // sources currently pressing (for move/release)
	}

	add(tool) {
		this.tools.set(tool.id, tool);
		this.order.push(tool.id);
		if (!this.active) this.active = tool.id;
		return tool;
	}

	get(id) {
		return this.tools.get(id);
	}

	/** Why my role may not use tool `id` now (null: allowed). */
	reason(id) {
		return this.reasons.get(id) ?? null;
	}

	/** The room did not admit me (`why`): every tool is off, and says so. */
	refuse(why) {
		for (const id of this.tools.keys()) this.reasons.set(id, `not admitted: ${why}`);
		this.dispatchEvent(new Event('change'));
	}

	/** Recompute what my role allows after a state change; a tool that became forbidden is put down. */
	render(state) {
		const me = state?.me();
		for (const [id, tool] of this.tools) {
			let reason = null;
			if (!me) reason = 'not connected to the room';
			else if (state.room.closed) reason = 'the room is closed';
			else if (tool.kind) {
				reason = this.permissions.may(me.role, tool.kind, { locked: state.locked, muted: me.muted });
				// Say the lock too when the role alone already forbids moving the model: it is what changed.
				if (reason && tool.kind === 'model.transform' && state.locked && !reason.includes('locked')) {
					reason = `${reason}; the model is also locked by the instructor`;
				}
			}
			this.reasons.set(id, reason);
		}
		if (this.reason(this.active)) {
			const allowed = this.order.find((id) => !this.reason(id));
			if (allowed) this.select(allowed, { quiet: true });
		}
		this.dispatchEvent(new Event('change'));
	}

	/** Make `id` the active tool; refused (with the reason said) if the role does not allow it. */
	select(id, { quiet = false } = {}) {
		const tool = this.tools.get(id);
		if (!tool) return false;
		const reason = this.reason(id);
		if (reason) {
			if (!quiet) this.context.notify(`${tool.title}: ${reason}`, 'warn');
			return false;
		}
		if (this.active !== id) {
			this.tools.get(this.active)?.cancel?.();
			this.active = id;
			this.dispatchEvent(new Event('change'));
		}
		return true;
	}

	/** The next tool the role allows (the headset's A button). */
	cycle(step = 1) {
		const n = this.order.length;
		let index = this.order.indexOf(this.active);
		for (let k = 0; k < n; k++) {
			index = (index + step + n) % n;
			if (!this.reason(this.order[index])) return this.select(this.order[index]);
		}
		return false;
	}

	current() {
		return this.tools.get(this.active);
	}

	press(input, toolId = this.active) {
		const tool = this.tools.get(toolId);
		if (!tool || this.reason(toolId)) {
			if (tool) this.context.notify(`${tool.title}: ${this.reason(toolId)}`, 'warn');
			return false;
		}
		this.pressed.add(input.source);
		input.tool = toolId;
		return tool.press?.(input) ?? false;
	}

	move(input) {
		if (!this.pressed.has(input.source)) return;
		this.tools.get(input.tool ?? this.active)?.move?.(input);
	}

	release(input) {
		if (!this.pressed.delete(input.source)) return;
		this.tools.get(input.tool ?? this.active)?.release?.(input);
	}
}
