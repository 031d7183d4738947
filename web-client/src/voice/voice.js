// Voice in the room (docs/protocol.md "Voice"): peer-to-peer WebRTC audio, signalled over the room's socket,
// under talk rights that the server keeps in the room's state.
//
// Only an open mic publishes. A listener asks each open mic for its audio (`request`, on its snapshot and when
// a mic opens); the speaker answers every request with an offer of its microphone; the listener answers and
// plays the stream in the VoiceMixer (spatial, at the speaker's avatar). So a class with one instructor talking
// is one upstream per listener from the instructor, and nothing between listeners.
//
// The room decides who is heard. When the room's state says a sender is silent (their mic closed, the instructor
// muted them or everyone, withdrew their right, removed them, or they left), this page drops their stream at
// once, and it refuses offers from anyone whose mic the room does not show open: a patched page that keeps
// sending is not played. My own links close as soon as my mic is closed, by me or by the instructor.
//
// Events: 'change' (mic, links, state), 'speaking' (who speaks changed: `speaking` is a Set of ids).
import { Microphone } from './microphone.js';
import { VoiceActivity } from './voice-activity.js';
import { VoiceLink } from './voice-link.js';
import { VoiceMixer } from './voice-mixer.js';

const ASK_AGAIN_MS = 3000; // a request that brought no working call is repeated after this
const ACTIVITY_MS = 100; // voice activity (speaking indicators) ten times a second
const ACK_MS = 5000;
export const ME = ''; // the key of my own microphone in `activity` and `speaking`

export class Voice extends EventTarget {
	/** `headOf(id, position, quaternion)`: where a participant's head is in the room (false if unknown). */
	constructor(room, { iceServers = [], notify = () => {}, headOf = () => false, mixer = null, microphone = null } = {}) {
		super();
		this.room = room;
		this.iceServers = iceServers;
		this.notify = notify;
		this.headOf = headOf;
		this.mixer = mixer ?? new VoiceMixer();
		this.microphone = microphone ?? new Microphone();
		this.sending = new Map(); // listener -> VoiceLink of my microphone
		this.receiving = new Map(); // speaker -> VoiceLink of their voice
		this.asked = new Map(); // speaker -> when I last asked them for their audio (ms)
		this.activity = new Map(); // participant (ME: my microphone) -> VoiceActivity
		this.speaking = new Set();
		this.nextLink = 1;
		this.wanted = false; // the user wants to talk (the mic button, or push-to-talk held)
		this.pushing = false; // ... by push-to-talk
		this.wasOpen = false;
		this.heardAt = new Map(); // speaker -> when their voice was first heard on this page (performance.now())
		this.joinedAt = null; // when the room's first snapshot arrived (performance.now())
		this.refusedOffers = 0; // offers from someone the room says is silent
		this.microphone.addEventListener('change', () => this.changed());
		if (room.replay) return; // a replay is read-only and silent: audio is never recorded
		room.socket.on('signal', (message) => this.onSignal(message));
		room.addEventListener('snapshot', () => this.onSnapshot());
		room.addEventListener('event', (e) => this.onEvent(e.data.event));
		this.timer = setInterval(() => this.tick(), ACTIVITY_MS);
	}

	get me() {
		return this.room.state?.you?.id ?? null;
	}

	/** Whether my mic is open in the room's state. */
	get open() {
		return Boolean(this.room.state?.voice.isOpen(this.me));
	}

	/** null if I may open my mic now, else why not. */
	reason() {
		const state = this.room.state;
		if (this.room.replay) return 'a replay is silent';
		if (!state || this.room.status !== 'live') return 'not connected to the room';
		return state.voice.reason(state, this.me);
	}

	// ---- the room's state decides -----------------------------------------------------------------------------

	/** Bring the calls in line with the room's state (after every snapshot and event). */
	render(state) {
		if (!state || this.room.replay) return;
		const rights = state.voice;
		const me = this.me;
		if (!rights.isOpen(me)) this.stopSending();
		for (const [peer, link] of this.sending) if (!state.participants.get(peer)?.present) this.closeSending(peer, link);
		for (const peer of [...this.receiving.keys()]) if (!rights.isOpen(peer)) this.drop(peer);
		for (const peer of rights.mics.keys()) if (peer !== me) this.ask(peer);
		this.changed();
	}

	onEvent(event) {
		const state = this.room.state;
		const open = state.voice.isOpen(this.me);
		// Someone else closed my mic (mute, mute-all, a withdrawn right): say so, and stop wanting it.
		if (this.wasOpen && !open && event.author !== this.me) {
			this.wanted = false;
			this.pushing = false;
			this.stopSending();
			this.notify(`Your microphone was closed: ${state.voice.reason(state, this.me) ?? 'by the instructor'}`, 'warn');
		}
		this.wasOpen = open;
	}

	/** A (new) snapshot: a first join or a reconnect. Calls that survived keep going; a mic I still want and
	 * that the room closed when my connection dropped opens again. */
	onSnapshot() {
		const state = this.room.state;
		this.joinedAt ??= performance.now();
		this.wasOpen = state.voice.isOpen(this.me);
		if (this.wanted && !state.voice.isOpen(this.me) && state.voice.reason(state, this.me) === null) this.sendMic(true);
	}

	// ---- signalling -----------------------------------------------------------------------------------------

	signal(to, data) {
		this.room.socket.timeout(ACK_MS).emit('signal', { to, data }, () => {}); // a refusal: the state explains it
	}

	/** Ask `speaker` for their audio, unless a call is up or I asked a moment ago. */
	ask(speaker, now = performance.now()) {
		const link = this.receiving.get(speaker);
		if (link && !link.closed && link.state !== 'failed') return;
		const last = this.asked.get(speaker);
		if (last !== undefined && now - last < ASK_AGAIN_MS) return;
		this.asked.set(speaker, now);
		this.signal(speaker, { type: 'request', link: 0 });
	}

	onSignal({ from, data }) {
		const state = this.room.state;
		if (!state || !data) return;
		if (data.type === 'request') {
			if (this.open && this.microphone.track) this.startSending(from);
		} else if (data.type === 'offer') {
			if (!state.voice.isOpen(from)) {
				this.refusedOffers += 1; // the room says they are silent: not played
				return;
			}
			this.receive(from, data);
		} else if (data.type === 'answer') {
			const link = this.sending.get(from);
			if (link?.link === data.link) link.accept(data.sdp).catch(() => this.closeSending(from, link));
		} else if (data.type === 'candidate') {
			const link = [this.sending.get(from), this.receiving.get(from)].find((l) => l?.link === data.link);
			link?.candidate(data.candidate);
		}
	}

	// ---- my microphone to each listener -------------------------------------------------------------------------

	startSending(peer) {
		const old = this.sending.get(peer);
		if (old) old.close();
		const link = new VoiceLink({ peer, link: this.nextLink++, direction: 'send', iceServers: this.iceServers, send: (data) => this.signal(peer, data) });
		this.sending.set(peer, link);
		link.addEventListener('state', () => {
			if (link.state === 'failed') this.closeSending(peer, link); // the listener asks again
			this.changed();
		});
		link.offer(this.microphone.track, this.microphone.stream).catch(() => this.closeSending(peer, link));
	}

	closeSending(peer, link) {
		link.close();
		if (this.sending.get(peer) === link) this.sending.delete(peer);
	}

	stopSending() {
		for (const [peer, link] of this.sending) this.closeSending(peer, link);
	}

	// ---- their voices to me ---------------------------------------------------------------------------------

	receive(peer, offer) {
		this.drop(peer);
		const link = new VoiceLink({ peer, link: offer.link, direction: 'receive', iceServers: this.iceServers, send: (data) => this.signal(peer, data) });
		this.receiving.set(peer, link);
		link.addEventListener('track', (e) => {
			if (this.receiving.get(peer) !== link || !this.room.state?.voice.isOpen(peer)) return;
			this.activity.set(peer, new VoiceActivity(this.mixer.add(peer, e.data.stream)));
			this.changed();
		});
		link.addEventListener('state', () => {
			if (link.state === 'failed' && this.receiving.get(peer) === link) {
				this.drop(peer);
				this.asked.set(peer, performance.now()); // ask again in a moment, if their mic is still open
			}
			this.changed();
		});
		link.answer(offer.sdp).catch(() => {
			if (this.receiving.get(peer) === link) this.drop(peer);
		});
	}

	/** Stop hearing `peer` at once. */
	drop(peer) {
		const link = this.receiving.get(peer);
		this.receiving.delete(peer);
		link?.close();
		this.mixer.remove(peer);
		this.activity.delete(peer);
		if (this.speaking.delete(peer)) this.dispatchEvent(new Event('speaking'));
	}

	// ---- what the person does -------------------------------------------------------------------------------

	/** Open or close my mic (push: by push-to-talk). Resolves to whether the room did it. */
	async setMic(on, { push = false } = {}) {
		this.mixer.resume();
		if (!on) {
			this.wanted = false;
			this.pushing = false;
			this.stopSending();
			return this.open ? this.sendMic(false) : true;
		}
		const why = this.reason();
		if (why) {
			this.notify(`You cannot talk now: ${why}`, 'warn');
			return false;
		}
		this.wanted = true;
		this.pushing = push;
		this.changed();
		try {
			await this.microphone.acquire();
		} catch (error) {
			this.wanted = false;
			this.notify(error.message, 'error');
			return false;
		}
		if (!this.activity.has(ME)) this.activity.set(ME, new VoiceActivity(this.mixer.listenTo(this.microphone.stream)));
		if (!this.wanted) return false; // let go while the browser was asking
		return this.sendMic(true);
	}

	async sendMic(on) {
		try {
			await this.room.op('voice.mic', { on });
			return true;
		} catch (error) {
			if (on) this.wanted = false;
			this.notify(`Microphone: ${error.message}`, 'warn');
			return false;
		} finally {
			this.changed();
		}
	}

	toggleMic() {
		return this.setMic(!(this.wanted || this.open));
	}

	/** Push-to-talk: talk while held (a key, a controller button). */
	pushToTalk(down) {
		if (down && !this.wanted && !this.open) this.setMic(true, { push: true });
		else if (!down && this.pushing) this.setMic(false);
	}

	op(kind, fields = {}) {
		this.mixer.resume();
		return this.room.op(kind, fields).catch((error) => this.notify(error.message, 'warn'));
	}

	raiseHand() {
		return this.op('hand.raise');
	}

	lowerHand() {
		return this.op('hand.lower');
	}

	/** Instructor: give (or withdraw) `participant` the floor; deny a raised hand with allowed false. */
	allow(participant, allowed) {
		return this.op('voice.allow', { participant, allowed });
	}

	muteAll() {
		return this.op('voice.mute_all');
	}

	setVolume(participant, volume) {
		this.mixer.setVolume(participant, volume);
		this.changed();
	}

	// ---- every tick and every frame -------------------------------------------------------------------------

	tick() {
		const now = performance.now();
		let changed = false;
		for (const [id, activity] of this.activity) {
			if (activity.update(now)) {
				changed = true;
				if (activity.speaking) this.speaking.add(id);
				else this.speaking.delete(id);
			}
			if (id !== ME && activity.speaking && !this.heardAt.has(id)) this.heardAt.set(id, now);
		}
		if (changed) this.dispatchEvent(new Event('speaking'));
		const state = this.room.state;
		if (state && this.room.status === 'live') {
			for (const peer of [...this.receiving.keys()]) if (!state.voice.isOpen(peer)) this.drop(peer);
			for (const peer of state.voice.mics.keys()) if (peer !== this.me) this.ask(peer, now);
		}
	}

	/** Per frame: voices follow the avatars, the ears follow the camera. */
	update(camera) {
		this.mixer.update(camera, this.headOf);
	}

	changed() {
		this.dispatchEvent(new Event('change'));
	}

	// ---- for tests and the curious ----------------------------------------------------------------------------

	/** The level (dB) at `hz` of what I hear: of one speaker, or of everyone together. */
	level(hz, peer = null) {
		const voice = peer === null ? null : this.mixer.voices.get(peer);
		if (peer !== null && !voice) return -Infinity;
		return this.mixer.levelAt(voice ? voice.analyser : this.mixer.mix, hz);
	}

	/** The level (dB) at `hz` in my left and right ear (after the spatial panning). */
	channels(hz) {
		return { left: this.mixer.levelAt(this.mixer.left, hz), right: this.mixer.levelAt(this.mixer.right, hz) };
	}

	/** What this page is doing: its mic, its calls, whom it plays. */
	summary() {
		const states = (links) => Object.fromEntries([...links].map(([peer, link]) => [peer, link.state]));
		return {
			me: this.me, open: this.open, wanted: this.wanted, microphone: this.microphone.state, context: this.mixer.context.state,
			sending: states(this.sending), receiving: states(this.receiving), playing: [...this.mixer.voices.keys()],
			speaking: [...this.speaking], refusedOffers: this.refusedOffers,
		};
	}
}
