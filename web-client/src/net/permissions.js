// Who may do what in a room, as the server serves it (GET /api/config `permissions`): the roles, each role's
// grants by op kind, the kinds a muted participant may not use, and the words for each kind. The client asks
// only to disable a control and say why, in the words the server would use; the server judges every op.

// Grants: 'always', and these two conditions.
const OWN = 'own'; // only the participant's own annotations
const UNLESS_LOCKED = 'unless_locked'; // only while the model is not locked

export class Permissions {
	/** The served `permissions`: {roles, matrix: {role: {kind: grant}}, tool_kinds, nouns}. */
	constructor({ roles, matrix, tool_kinds: toolKinds, nouns }) {
		this.roles = roles;
		this.matrix = matrix;
		this.toolKinds = new Set(toolKinds);
		this.nouns = nouns;
	}

	/** null if `role` may perform op `kind`, else the reason in a participant's words. A kind missing from a
	 * role's row is not allowed; a role with an empty row is read-only. */
	may(role, kind, { own = true, locked = false, muted = false } = {}) {
		const row = this.matrix[role] ?? {};
		if (Object.keys(row).length === 0) return `${role}s are read-only`;
		const grant = row[kind];
		if (grant === undefined) return `${role}s may not ${this.nouns[kind] ?? kind}`;
		if (muted && this.toolKinds.has(kind)) return 'you are muted by the instructor';
		if (grant === OWN && !own) return `${role}s may only edit their own annotations`;
		if (grant === UNLESS_LOCKED && locked) return 'the model is locked by the instructor';
		return null;
	}
}
