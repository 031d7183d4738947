// The room's shared state as the client holds it: a snapshot, then the events applied in seq order.
// This mirrors sessions/state.py (RoomState.apply); the server is the authority, the client only replays.
import { TalkRights } from '../voice/talk-rights.js';

export class RoomState {
	/** The state a `snapshot` message describes. */
	constructor(snapshot) {
		this.room = { ...snapshot.room };
		this.you = snapshot.you ? { ...snapshot.you } : null;
		this.participants = new Map(Object.entries(snapshot.participants).map(([id, p]) => [id, { ...p }]));
		const state = snapshot.state;
		this.annotations = new Map(Object.entries(state.annotations).map(([id, a]) => [id, { ...a }]));
		this.clips = new Map(Object.entries(state.clips).map(([id, c]) => [id, { ...c }]));
		this.slices = new Map(Object.entries(state.slices ?? {}).map(([id, p]) => [id, { ...p, versions: { ...p.versions } }]));
		this.model = { ...state.model };
		this.locked = Boolean(state.locks?.model);
		this.follow = state.follow ?? null;
		this.structures = new Map(Object.entries(state.structures ?? {}).map(([id, t]) => [id, { ...t, versions: { ...t.versions } }]));
		this.growing = new Map(Object.entries(state.growing ?? {}).map(([id, g]) => [id, { ...g }]));
		this.voice = new TalkRights(state.voice);
		this.seq = snapshot.seq;
		this.head = snapshot.head ?? null;
	}

	/** My participant record (role, muted) as the log has it now. */
	me() {
		return (this.you && this.participants.get(this.you.id)) || this.you;
	}

	/** Apply the next event. Requires event.seq === this.seq + 1. Returns the event's kind. */
	apply(event) {
		if (event.seq !== this.seq + 1) throw new Error(`event ${event.seq} does not follow ${this.seq}`);
		const handler = APPLY[event.kind];
		if (handler) handler(this, event);
		this.voice.apply(this, event);
		this.seq = event.seq;
		return event.kind;
	}

	/** My newest annotation that still exists (what "undo" removes), or null. */
	newestOwnAnnotation() {
		let best = null;
		let bestSeq = -1;
		for (const annotation of this.annotations.values()) {
			if (annotation.author !== this.you?.id) continue;
			const seq = Number(annotation.id.slice(1));
			if (seq > bestSeq) {
				best = annotation;
				bestSeq = seq;
			}
		}
		return best;
	}
}

function absent(state, pid) {
	const p = state.participants.get(pid);
	if (p) p.present = false;
	if (state.follow === pid) state.follow = null;
}

const APPLY = {
	'room.open': (s, e) => {
		const { structures = [], ...room } = e.data;
		Object.assign(s.room, room);
		for (const t of structures) s.structures.set(t.id, structureEntry(t, e.seq));
	},
	'room.close': (s) => {
		s.room.closed = true;
		s.follow = null;
		for (const p of s.participants.values()) p.present = false;
	},
	'participant.join': (s, e) => {
		const { participant, name, role, seat } = e.data; // the server logs the seat it gives (sessions/seats.py)
		const known = s.participants.get(participant);
		if (known) Object.assign(known, { name, role, present: true, seat: seat ?? known.seat });
		else s.participants.set(participant, { id: participant, name, role, muted: false, present: true, kicked: false, seat });
	},
	'participant.leave': (s, e) => absent(s, e.data.participant),
	'annotation.create': (s, e) => {
		const { id, type, layer, ...fields } = e.data;
		const versions = Object.fromEntries(Object.keys(fields).map((k) => [k, e.seq]));
		s.annotations.set(id, { id, type, author: e.author, layer, ...fields, version: e.seq, versions });
	},
	'annotation.update': (s, e) => {
		const annotation = s.annotations.get(e.data.id);
		if (!annotation) return;
		for (const [key, value] of Object.entries(e.data)) {
			if (key === 'id') continue;
			if (value === null) delete annotation[key];
			else annotation[key] = value;
			annotation.versions[key] = e.seq;
		}
		annotation.version = e.seq;
	},
	'annotation.delete': (s, e) => s.annotations.delete(e.data.id),
	'clip.set': (s, e) => {
		const { id, normal, constant } = e.data;
		s.clips.set(id, { id, normal, constant, author: e.author, version: e.seq });
	},
	'clip.clear': (s, e) => {
		if ('id' in e.data) s.clips.delete(e.data.id);
		else s.clips.clear();
	},
	'slice.set': (s, e) => {
		const { id, ...fields } = e.data;
		const plane = s.slices.get(id) ?? { id, author: e.author, versions: {} };
		Object.assign(plane, fields, { version: e.seq });
		for (const key of Object.keys(fields)) plane.versions[key] = e.seq;
		s.slices.set(id, plane);
	},
	'slice.clear': (s, e) => {
		if ('id' in e.data) s.slices.delete(e.data.id);
		else s.slices.clear();
	},
	'model.transform': (s, e) => {
		const versions = { ...s.model.versions };
		for (const key of Object.keys(e.data)) versions[key] = e.seq;
		s.model = { ...s.model, ...e.data, version: e.seq, versions };
	},
	'room.lock': (s) => {
		s.locked = true;
	},
	'room.unlock': (s) => {
		s.locked = false;
	},
	'participant.role': (s, e) => {
		const p = s.participants.get(e.data.participant);
		if (!p) return;
		p.role = e.data.role;
		if (p.role === 'instructor') p.muted = false;
		if (s.follow === p.id && p.role !== 'instructor') s.follow = null;
	},
	'participant.mute': (s, e) => {
		const p = s.participants.get(e.data.participant);
		if (p) p.muted = e.data.muted;
	},
	'participant.kick': (s, e) => {
		const p = s.participants.get(e.data.participant);
		if (p) p.kicked = true;
		absent(s, e.data.participant);
	},
	'follow.start': (s, e) => {
		s.follow = e.author;
	},
	'follow.stop': (s) => {
		s.follow = null;
	},
	'structure.grow': (s, e) => s.growing.set(e.data.request, { author: e.author, name: e.data.name }),
	'structure.add': (s, e) => {
		s.growing.delete(e.data.request);
		s.structures.set(e.data.id, structureEntry(e.data, e.seq));
	},
	'structure.fail': (s, e) => s.growing.delete(e.data.request),
	'structure.style': (s, e) => {
		const structure = s.structures.get(e.data.mesh);
		if (!structure) return;
		for (const key of STYLE_FIELDS) {
			if (!(key in e.data)) continue;
			structure[key] = e.data[key];
			structure.versions[key] = e.seq;
		}
		structure.version = e.seq;
	},
};

const STYLE_FIELDS = ['visible', 'opacity', 'color'];

/** A named structure as the state keeps it (sessions/state.py structure_entry): shown, opaque, in its colour. */
function structureEntry({ id, mesh, name, color, volume_ml }, seq) {
	return { id, mesh, name, color, volume_ml, visible: true, opacity: 1, version: seq, versions: {} };
}
