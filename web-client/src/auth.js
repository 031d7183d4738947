// Credentials. The admin login URL is /?token=<admin token>; an invite link is /?invite=<invite token>.
// A token is read from the address bar once, kept in this tab's sessionStorage (so a reload keeps working),
// and taken out of the URL at once (history.replaceState), so it does not linger in the history, a
// screenshot or a shared link.

const KEYS = { admin: 'theatrum.admin', invite: 'theatrum.invite' };

/** Read and strip ?token= / ?invite=; returns {admin, invite, view} where view is 'room', 'lobby' or 'join'. */
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
	}
	if (admin && !invite) sessionStorage.removeItem(KEYS.invite); // a login URL opens the lobby
	const stored = { admin: sessionStorage.getItem(KEYS.admin), invite: sessionStorage.getItem(KEYS.invite) };
	const view = stored.invite ? 'room' : stored.admin ? 'lobby' : 'join';
	return { ...stored, view };
}

/** Open a room in this tab with an invite token (the token never appears in the address bar). */
export function enterRoom(inviteToken) {
	sessionStorage.setItem(KEYS.invite, inviteToken);
	window.location.reload();
}

/** Leave the room view: back to the lobby (admin) or the join page. */
export function leaveRoom() {
	sessionStorage.removeItem(KEYS.invite);
	window.location.reload();
}
