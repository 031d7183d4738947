// The room connection (docs/protocol.md): one socket.io connection with the invite, the snapshot, events
// applied strictly in seq order, resume on a gap or a reconnect (auth.last_seq), ops with acks, poses.
//
// Events (EventTarget): 'status' {status, detail}, 'snapshot' {state}, 'event' {event, state},
// 'poses' {frame}. status is 'connecting', 'live', 'reconnecting' or 'refused'.
import { io } from 'socket.io-client';

import { RoomState } from './roomstate.js';

const ACK_TIMEOUT_MS = 10000;

export class OpRefused extends Error {
	constructor(error) {
		super(error.detail || error.code);
		this.code = error.code;
		this.version = error.version;
	}
}

export class RoomConnection extends EventTarget {
	constructor(token, { url = undefined } = {}) {
		super();
		this.token = token;
		this.state = null;
		this.status = 'connecting';
		this.detail = '';
		this.resuming = false;
		this.socket = io(url, {
			// A function, so that each reconnect says how far this client got.
			auth: (send) => send(this.state ? { token: this.token, last_seq: this.state.seq } : { token: this.token }),
			reconnectionDelay: 500,
			reconnectionDelayMax: 4000,
		});
		this.socket.on('connect', () => this.setStatus(this.state ? 'live' : 'connecting'));
		this.socket.on('disconnect', (reason) => {
			if (reason === 'io server disconnect') this.setStatus('refused', 'the server closed the connection');
			else this.setStatus('reconnecting', reason);
		});
		this.socket.on('connect_error', (error) => {
			// A refusal by the server (bad invite, kicked, closed or full room) is final; a network error is not.
			if (this.socket.active) this.setStatus('reconnecting', error.message);
			else this.setStatus('refused', error.message);
		});
		this.socket.on('snapshot', (snapshot) => this.onSnapshot(snapshot));
		this.socket.on('event', (event) => this.onEvent(event));
		this.socket.on('poses', (frame) => this.dispatchEvent(new MessageEvent('poses', { data: frame })));
	}

	setStatus(status, detail = '') {
		this.status = status;
		this.detail = detail;
		this.dispatchEvent(new MessageEvent('status', { data: { status, detail } }));
	}

	onSnapshot(snapshot) {
		this.state = new RoomState(snapshot);
		this.resuming = false;
		this.setStatus('live');
		this.dispatchEvent(new MessageEvent('snapshot', { data: { state: this.state } }));
	}

	onEvent(event) {
		const state = this.state;
		if (state === null || event.seq <= state.seq) return; // before the snapshot, or already applied
		if (event.seq > state.seq + 1) {
			this.resume();
			return;
		}
		state.apply(event);
		if (this.status !== 'live') this.setStatus('live');
		this.dispatchEvent(new MessageEvent('event', { data: { event, state } }));
	}

	/** Ask for the events after our seq (a gap was seen). The missed events arrive before the ack. */
	resume() {
		if (this.resuming || !this.state) return;
		this.resuming = true;
		this.socket.timeout(ACK_TIMEOUT_MS).emit('resume', { last_seq: this.state.seq }, () => {
			this.resuming = false;
		});
	}

	/** Send an op; resolves to the ack {ok, seq}, rejects with OpRefused (or a timeout Error). */
	op(kind, fields = {}) {
		return new Promise((resolve, reject) => {
			this.socket.timeout(ACK_TIMEOUT_MS).emit('op', { kind, ...fields }, (error, ack) => {
				if (error) reject(new Error('the server did not answer in time'));
				else if (ack?.ok) resolve(ack);
				else reject(new OpRefused(ack?.error ?? { code: 'invalid', detail: 'malformed ack' }));
			});
		});
	}

	/** Send my pose (volatile: dropped rather than queued when the link is busy). */
	sendPose(pose) {
		if (this.socket.connected) this.socket.volatile.emit('pose', pose);
	}

	close() {
		this.socket.close();
	}
}
