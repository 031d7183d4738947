// Credentials. The admin login URL is /?token=<admin token>; an invite link is /?invite=<invite token>.
// A token is read from the address bar once, kept in this tab's sessionStorage (so a reload keeps working),
// and taken out of the URL at once (history.replaceState), so it does not linger in the history, a
// screenshot or a shared link. A replay (a closed room played back, from the lobby) is kept beside the
// invite: {speed, max_gap?}, the request RoomConnection sends.

const KEYS = { admin: 'theatrum.admin', invite: 'theatrum.invite', replay: 'theatrum.replay' };

/** Read and strip ?token= / ?invite=; returns {admin, invite, replay, view} where view is 'room', 'lobby' or
 * 'join', and replay is null (the live room) or the replay request. */
export function takeCredentials() {
	const url = new URL(window.location.href);
	const admin = url.searchParams.get('token');
	const invite = url.searchParams.get('invite');
	if (admin) sessionStorage.setItem(KEYS.admin, admin);
	if (invite) sessionStorage.setItem(KEYS.invite, invite);
	if (admin || invite) {
		url.searchParams.delete('token');
		url.searchParams.delete('invite');
		window.history.replaceState(null, '', url.pathname + url.search + url.hash);
		sessionStorage.removeItem(KEYS.replay); // a link opens the live room
	}
	if (admin && !invite) sessionStorage.removeItem(KEYS.invite); // a login URL opens the lobby
	const stored = { admin: sessionStorage.getItem(KEYS.admin), invite: sessionStorage.getItem(KEYS.invite) };
	const view = stored.invite ? 'room' : stored.admin ? 'lobby' : 'join';
	return { ...stored, replay: stored.invite ? storedReplay() : null, view };
}

/** Open a room in this tab with an invite token (the token never appears in the address bar); with
 * `replay` ({speed, max_gap?}) the room is played back read-only instead (a closed room only). */
export function enterRoom(inviteToken, { replay = null } = {}) {
	sessionStorage.setItem(KEYS.invite, inviteToken);
	if (replay) sessionStorage.setItem(KEYS.replay, JSON.stringify(replay));
	else sessionStorage.removeItem(KEYS.replay);
	window.location.reload();
}

/** Sign in to the lobby with an admin token typed by hand (the login URL's token was wrong or stale). */
export function signIn(adminToken) {
	sessionStorage.setItem(KEYS.admin, adminToken.trim());
	sessionStorage.removeItem(KEYS.invite);
	window.location.reload();
}

/** Leave the room view: back to the lobby (admin) or the join page. */
export function leaveRoom() {
	sessionStorage.removeItem(KEYS.invite);
	sessionStorage.removeItem(KEYS.replay);
	window.location.reload();
}

function storedReplay() {
	try {
		const replay = JSON.parse(sessionStorage.getItem(KEYS.replay));
		return replay && typeof replay === 'object' ? replay : null;
	} catch {
		return null; // not ours: the live room
	}
}

/** An invite token's payload ({exp, kind?, name, nonce, role, room}), or null for anything else. */
export function invitePayload(token) {
	try {
		const payload = String(token).split('.')[0].replace(/-/g, '+').replace(/_/g, '/');
		const data = JSON.parse(atob(payload.padEnd(Math.ceil(payload.length / 4) * 4, '=')));
		return data && typeof data === 'object' ? data : null;
	} catch {
		return null;
	}
}

/** Whether a token is a room's role link (shared by everyone of a role: it is exchanged for a personal invite). */
export function isRoleLink(token) {
	return invitePayload(token)?.kind === 'role';
}

const PERSONAL = 'theatrum.personal.'; // + the role link: the personal invite this browser got for it

/** The personal invite this browser got for a role link earlier (the same person again), or null. */
export function personalInviteFor(roleLink) {
	const personal = localStorage.getItem(PERSONAL + roleLink);
	const exp = invitePayload(personal)?.exp;
	return personal && exp && exp * 1000 > Date.now() ? personal : null;
}

/** Remember the personal invite a role link was exchanged for, and open the room with it. */
export function enterWithPersonalInvite(roleLink, personal) {
	localStorage.setItem(PERSONAL + roleLink, personal);
	enterRoom(personal);
}

/** The room an invite token is for (its payload is base64url JSON, docs/protocol.md "Invites"), or null. The
 * socket.io query carries it (`room=`) so that a proxy in front of several server processes routes every
 * socket of a room to the same one; the server still checks the token's signature. */
export function roomOfInvite(token) {
	const room = invitePayload(token)?.room;
	return typeof room === 'string' ? room : null;
}
