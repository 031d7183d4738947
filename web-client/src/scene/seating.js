// Seats around the table, as the server gives them (participant.seat {index, tier, angle}; sessions/seats.py):
// the rings of an anatomical theatre. Tier 0 stands SEAT_RADIUS from the table's centre, each further tier
// TIER_DEPTH further out and TIER_RISE higher, so that its row looks over the heads of the row inside it. The
// angle turns counter-clockwise seen from above, 0 in front of the patient (+Z, where the patient faces).
import { Vector3 } from 'three';

export const SEAT_RADIUS = 0.6; // m, tier 0: neighbours 60 degrees apart stand 0.6 m from each other
export const TIER_DEPTH = 0.6; // m between tiers
export const TIER_RISE = 0.3; // m, each tier above the one inside it

/** My seat in `state` (a RoomState). A reviewer of a replay, who has none, stands in front of the patient one
 * tier behind everyone the room ever seated (higher than them, so looking over their heads). */
export function mySeat(state) {
	const me = state.me();
	if (me?.seat) return me.seat;
	let tier = -1;
	for (const p of state.participants.values()) tier = Math.max(tier, p.seat?.tier ?? 0);
	return { index: null, tier: tier + 1, angle: 0 };
}

/** How far from the centre a seat's head stands (m), at least `closest`. */
export function seatRadius(seat, closest = 0) {
	return Math.max(closest, SEAT_RADIUS) + TIER_DEPTH * (seat?.tier ?? 0);
}

/** The unit direction from the table's centre toward a seat (horizontal), into `target`. */
export function seatDirection(seat, target = new Vector3()) {
	const a = ((seat?.angle ?? 0) * Math.PI) / 180;
	return target.set(Math.sin(a), 0, Math.cos(a));
}

/** The yaw (radians about +Y) that turns -Z (where a viewer looks) from the seat toward the centre. */
export function seatYaw(seat) {
	return ((seat?.angle ?? 0) * Math.PI) / 180;
}
