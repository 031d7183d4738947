// The room connection (docs/protocol.md): one socket.io connection with the invite, the snapshot, events
// applied strictly in seq order, resume on a gap or a reconnect (auth.last_seq), ops with acks, poses.
//
// A replay (a closed room played back read-only, docs/protocol.md "Replay") is one socket per run: the
// snapshot after `from`, the later events on the recorded timing, then `replay.end`. It neither resumes nor
// reconnects (a reconnect would silently start the replay over); to seek, play() opens a new socket.
//
// Events (EventTarget): 'status' {status, detail}, 'snapshot' {state}, 'event' {event, state},
// 'poses' {frame}, 'structure.progress' {request, stage, percent}, and in a replay 'replay.end' {seq}. status is 'connecting', 'live', 'reconnecting' or
// 'refused'; a replay is 'connecting', 'live' (playing), then 'ended', or 'interrupted' or 'refused'.
import { io } from 'socket.io-client';

import { roomOfInvite } from './credentials.js';
import { RoomState } from './room-state.js';

const ACK_TIMEOUT_MS = 10000;
const READ_ONLY = { code: 'forbidden', detail: 'a replay is read-only' };

export class OpRefused extends Error {
	constructor(error) {
		super(error.detail || error.code);
		this.code = error.code;
		this.version = error.version;
	}
}

export class RoomConnection extends EventTarget {
	/** `replay`: null for the live room, or {from?, speed?, max_gap?} to play the (closed) room back. */
	constructor(token, { url = undefined, replay = null } = {}) {
		super();
		this.token = token;
		this.url = url;
		this.state = null;
		this.status = 'connecting';
		this.detail = '';
		this.resuming = false;
		this.replay = null; // the request of the current replay socket
		this.last = null; // in a replay: the room's last seq
		if (replay) this.play(replay);
		else this.socket = this.connectLive();
	}

	/** The socket.io query: the room, for a proxy that routes each room to one server process. */
	routing() {
		const room = roomOfInvite(this.token);
		return room ? { room } : {};
	}

	connectLive() {
		const socket = io(this.url, {
			query: this.routing(),
			// A function, so that each reconnect says how far this client got.
			auth: (send) => send(this.state ? { token: this.token, last_seq: this.state.seq } : { token: this.token }),
			reconnectionDelay: 500,
			reconnectionDelayMax: 4000,
		});
		socket.on('connect', () => this.setStatus(this.state ? 'live' : 'connecting'));
		socket.on('disconnect', (reason) => {
			if (reason === 'io server disconnect') this.setStatus('refused', 'the server closed the connection');
			else this.setStatus('reconnecting', reason);
		});
		socket.on('connect_error', (error) => {
			// A refusal by the server (bad invite, kicked, closed or full room) is final; a network error is not.
			if (socket.active) this.setStatus('reconnecting', error.message);
			else this.setStatus('refused', error.message);
		});
		socket.on('snapshot', (snapshot) => this.onSnapshot(snapshot));
		socket.on('event', (event) => this.onEvent(event));
		socket.on('poses', (frame) => this.dispatchEvent(new MessageEvent('poses', { data: frame })));
		socket.on('structure.progress', (progress) => this.dispatchEvent(new MessageEvent('structure.progress', { data: progress })));
		return socket;
	}

	/** (Re)start the replay after event `from` (1: from the start) at `speed`: a new socket, the old one closed.
	 * The state on screen stays until the new snapshot replaces it. */
	play({ from = 1, speed = this.replay?.speed, max_gap = this.replay?.max_gap } = {}) {
		this.socket?.close();
		this.replay = withoutUndefined({ from, speed, max_gap });
		this.setStatus('connecting');
		const socket = io(this.url, { query: this.routing(), auth: { token: this.token, replay: this.replay }, reconnection: false, forceNew: true });
		this.socket = socket;
		// A closed socket can still report its end: only the current one speaks.
		const on = (name, handler) => socket.on(name, (...args) => {
			if (socket === this.socket) handler(...args);
		});
		on('disconnect', (reason) => {
			if (reason !== 'io client disconnect') this.setStatus('interrupted', reason === 'io server disconnect' ? 'the server closed the connection' : reason);
		});
		on('connect_error', (error) => this.setStatus('refused', error.message));
		on('snapshot', (snapshot) => this.onSnapshot(snapshot));
		on('event', (event) => this.onEvent(event));
		on('poses', (frame) => this.dispatchEvent(new MessageEvent('poses', { data: frame })));
		on('replay.end', (end) => this.onReplayEnd(end));
	}

	setStatus(status, detail = '') {
		this.status = status;
		this.detail = detail;
		this.dispatchEvent(new MessageEvent('status', { data: { status, detail } }));
	}

	onSnapshot(snapshot) {
		this.state = new RoomState(this.replay ? spectating(snapshot) : snapshot);
		if (snapshot.replay) this.last = snapshot.replay.last;
		this.resuming = false;
		this.setStatus('live');
		this.dispatchEvent(new MessageEvent('snapshot', { data: { state: this.state } }));
	}

	onEvent(event) {
		const state = this.state;
		if (state === null || event.seq <= state.seq) return; // before the snapshot, or already applied
		if (event.seq > state.seq + 1) {
			if (this.replay) this.stop('interrupted', `event ${event.seq} came after ${state.seq}`);
			else this.resume();
			return;
		}
		state.apply(event);
		if (this.status !== 'live') this.setStatus('live');
		this.dispatchEvent(new MessageEvent('event', { data: { event, state } }));
	}

	onReplayEnd(end) {
		this.stop('ended');
		this.dispatchEvent(new MessageEvent('replay.end', { data: end }));
	}

	/** End the replay socket (nothing more will come on it) with a final status. */
	stop(status, detail = '') {
		this.socket.close();
		this.setStatus(status, detail);
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
		if (this.replay) return Promise.reject(new OpRefused(READ_ONLY)); // not even sent
		return new Promise((resolve, reject) => {
			this.socket.timeout(ACK_TIMEOUT_MS).emit('op', { kind, ...fields }, (error, ack) => {
				if (error) reject(new Error('the server did not answer in time'));
				else if (ack?.ok) resolve(ack);
				else reject(new OpRefused(ack?.error ?? { code: 'invalid', detail: 'malformed ack' }));
			});
		});
	}

	/** Send my pose (volatile: dropped rather than queued when the link is busy). A replay has no pose. */
	sendPose(pose) {
		if (this.socket.connected && !this.replay) this.socket.volatile.emit('pose', pose);
	}

	close() {
		this.socket.close();
	}
}

/** A replay's snapshot as this tab sees it: a spectator, none of the replayed participants (whose avatars it
 * shows), and read-only whatever the invite's role. */
function spectating(snapshot) {
	const you = { id: null, name: snapshot.you?.name ?? 'Reviewer', role: 'observer', muted: false, present: false, kicked: false };
	return { ...snapshot, you };
}

function withoutUndefined(object) {
	return Object.fromEntries(Object.entries(object).filter(([, value]) => value !== undefined));
}
