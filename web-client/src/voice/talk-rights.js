// Talk rights as the client holds them: who has an open mic, the raised hands in order, the instructor's
// allows. This mirrors sessions/voice.py: the same events give the same floor, and after every event an open mic
// of someone who may no longer talk is closed (a mute, a kick, a leave, a role change, the room's close).
// The server enforces all of it; the client uses it to say why, to show the queue, and to refuse to play a
// stream whose sender the room says is silent.

export class TalkRights {
	/** The `voice` of a snapshot's state (absent in a replay of a room from before voice: all quiet). */
	constructor(voice = null) {
		this.mics = new Map((voice?.mics ?? []).map((m) => [m.participant, m.at]));
		this.hands = new Map((voice?.hands ?? []).map((h) => [h.participant, h.at]));
		this.allowed = new Map(Object.entries(voice?.allowed ?? {}));
	}

	/** Whether `id`'s mic is open: they publish audio. */
	isOpen(id) {
		return this.mics.has(id);
	}

	/** null if participant `id` may open their mic in `state` (a RoomState), else why not. */
	reason(state, id) {
		const p = state.participants.get(id);
		if (!p || !p.present || p.kicked || state.room.closed) return 'you are not in this room';
		if (p.role === 'instructor') return null;
		if (p.role === 'observer') return 'observers listen but do not talk';
		if (p.muted) return 'you are muted by the instructor';
		const consult = state.room.mode === 'consult';
		if (!(this.allowed.get(id) ?? consult)) {
			return consult ? 'the instructor has withdrawn your voice' : 'in a training room the instructor gives the floor: raise your hand';
		}
		return null;
	}

	/** Apply `event` (already applied to the rest of `state`), then close the mics that may no longer talk. */
	apply(state, event) {
		const { kind, data, author, at } = event;
		if (kind === 'voice.mic') {
			if (data.on) {
				if (!this.mics.has(author)) this.mics.set(author, at);
				this.hands.delete(author);
			} else {
				this.mics.delete(author);
			}
		} else if (kind === 'hand.raise') {
			if (!this.hands.has(author)) this.hands.set(author, at);
		} else if (kind === 'hand.lower') {
			this.hands.delete(author);
		} else if (kind === 'voice.allow') {
			this.allowed.set(data.participant, data.allowed);
			this.hands.delete(data.participant);
			if (!data.allowed) this.mics.delete(data.participant);
		} else if (kind === 'voice.mute_all') {
			for (const id of [...this.mics.keys()]) {
				if (state.participants.get(id)?.role !== 'instructor') this.mics.delete(id);
			}
			if (state.room.mode !== 'consult') this.allowed.clear();
		} else if (kind === 'participant.leave' || kind === 'participant.kick') {
			this.hands.delete(data.participant);
		} else if (kind === 'room.close') {
			this.hands.clear();
		}
		for (const id of [...this.mics.keys()]) if (this.reason(state, id) !== null) this.mics.delete(id);
	}
}
