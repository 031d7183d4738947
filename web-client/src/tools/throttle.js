// Continuous edits (dragging the model, moving a clip plane) become at most one op per interval: the first
// value goes at once, then the latest value at the end of each interval, and the last value always goes.
// This stays well under the hub's op rate (20/s).

export class Throttle {
	constructor(intervalMs, send) {
		this.intervalMs = intervalMs;
		this.send = send;
		this.latest = undefined;
		this.timer = null;
	}

	push(value) {
		this.latest = value;
		if (this.timer === null) this.fire();
	}

	fire() {
		if (this.latest === undefined) {
			this.timer = null;
			return;
		}
		const value = this.latest;
		this.latest = undefined;
		this.send(value);
		this.timer = setTimeout(() => this.fire(), this.intervalMs);
	}

	/** Send the pending value now. */
	flush() {
		if (this.timer !== null) clearTimeout(this.timer);
		this.timer = null;
		if (this.latest !== undefined) this.fire();
	}
}
