// Roles and the permission matrix: the client's copy of sessions/roles.py, so that a tool the role does not
// allow is disabled with the same reason the server would give. The server stays the authority.

export const ROLE_COLORS = {
	instructor: '#e8a33d',
	surgeon: '#3d9be8',
	student: '#46c28e',
	observer: '#9aa0a6',
};

const ALWAYS = 'always';
const OWN = 'own';
const UNLESS_LOCKED = 'unless_locked';

const TOOL_KINDS = new Set([
	'annotation.create', 'annotation.update', 'annotation.delete',
	'clip.set', 'clip.clear', 'model.transform', 'pointer.highlight',
]);

const MATRIX = {
	surgeon: {
		'annotation.create': ALWAYS, 'annotation.update': ALWAYS, 'annotation.delete': ALWAYS,
		'clip.set': ALWAYS, 'clip.clear': ALWAYS, 'model.transform': UNLESS_LOCKED, 'pointer.highlight': ALWAYS,
	},
	student: {
		'annotation.create': ALWAYS, 'annotation.update': OWN, 'annotation.delete': OWN, 'pointer.highlight': ALWAYS,
	},
	observer: {},
};

const NOUNS = {
	'annotation.create': 'create annotations',
	'annotation.update': 'edit annotations',
	'annotation.delete': 'delete annotations',
	'clip.set': 'set clip planes',
	'clip.clear': 'clear clip planes',
	'model.transform': 'move the model',
	'pointer.highlight': 'highlight',
	'room.lock': 'lock the model',
	'room.unlock': 'unlock the model',
	'participant.role': 'change roles',
	'participant.mute': 'mute participants',
	'participant.kick': 'remove participants',
	'follow.start': 'lead follow-me',
	'follow.stop': 'end follow-me',
};

/** null if `role` may perform op `kind`, else the reason in a participant's words (as sessions/roles.may). */
export function may(role, kind, { own = true, locked = false, muted = false } = {}) {
	if (role === 'observer') return 'observers are read-only';
	const grant = role === 'instructor' ? ALWAYS : MATRIX[role]?.[kind];
	if (grant === undefined) return `${role}s may not ${NOUNS[kind] ?? kind}`;
	if (muted && TOOL_KINDS.has(kind)) return 'you are muted by the instructor';
	if (grant === OWN && !own) return `${role}s may only edit their own annotations`;
	if (grant === UNLESS_LOCKED && locked) return 'the model is locked by the instructor';
	return null;
}
