// Where my view stands: at my seat around the table, or, while an instructor leads (state.follow), beside and
// behind the leader, looking where the leader looks, never inside the leader's head.
// On a desktop the camera starts at my seat (DesktopInput.frame) and, following, takes its place beside the
// leader's head, aimed at the leader's focus: the point along the leader's gaze as far away as the patient. In a headset the rig (the origin of my reference space) stands at my seat,
// turned toward the table; following turns it once (a snap turn, as VR apps turn people) so that I face the
// leader's focus, then carries it so that my head stays at my place beside the leader (position only: turning
// someone's head continuously for them makes people sick).
// Followers take places by rank (their seats' order), in rows behind the leader (followerOffset).
import { Quaternion, Vector3 } from 'three';

import { mySeat, seatDirection, seatRadius, seatYaw, TIER_RISE } from '../scene/seating.js';

export const FOLLOW_SIDE = 0.6; // m beside the leader
export const FOLLOW_BACK = 0.45; // m behind the leader, first row
export const FOLLOW_ROW = 0.5; // m between rows
export const FOLLOW_RISE = 0.2; // m each row stands above the one before

const _p = new Vector3();
const _q = new Quaternion();
const _forward = new Vector3();
const _place = new Vector3();
const _head = new Vector3();
const _up = new Vector3(0, 1, 0);
const _focus = new Vector3();
const _turn = new Quaternion();

/** The place of the follower of `rank` (0, 1, ...) in the leader's frame: x to the leader's right, z behind, y up.
 * Rows of two, right and left, each row further back and higher than the one before, so that everyone sees past
 * the leader's head and over the row in front. Places stand 0.54 m or more apart, and 0.75 m from the leader. */
export function followerOffset(rank, target = new Vector3()) {
	const row = Math.floor(rank / 2);
	return target.set(rank % 2 ? -FOLLOW_SIDE : FOLLOW_SIDE, FOLLOW_RISE * row, FOLLOW_BACK + FOLLOW_ROW * row);
}

/** My rank among the followers: present participants other than the leader, in their seats' order (a reviewer
 * of a replay comes last). */
export function followerRank(state, leader) {
	const me = state.me();
	const followers = [...state.participants.values()]
		.filter((p) => p.present && p.id !== leader)
		.sort((a, b) => (a.seat?.index ?? 0) - (b.seat?.index ?? 0));
	const rank = me ? followers.findIndex((p) => p.id === me.id) : -1;
	return rank >= 0 ? rank : followers.length;
}

export class FollowMe {
	constructor(stage, avatars, desktop) {
		this.stage = stage;
		this.avatars = avatars;
		this.desktop = desktop;
		this.leader = null;
		this.rank = 0;
		this.seat = null;
		this.offset = new Vector3();
		this.place = new Vector3(); // where my head should be while following (world)
		this.snap = false; // a headset turns once toward the leader's focus when following starts
		stage.onFrame(() => this.update());
		stage.renderer.xr.addEventListener('sessionstart', () => {
			this.snap = Boolean(this.leader);
			this.toSeat();
		});
		stage.renderer.xr.addEventListener('sessionend', () => this.toSeat());
	}

	/** After a state change: my seat, and whom to follow (null: nobody, or I lead). */
	render(state) {
		this.seat = mySeat(state);
		const me = state.me();
		const leader = state.follow && state.follow !== me?.id ? state.follow : null;
		if (leader) followerOffset(followerRank(state, leader), this.offset);
		if (leader === this.leader) return;
		this.leader = leader;
		this.snap = Boolean(leader);
		this.desktop?.setFollowing(Boolean(leader));
		if (!leader) this.toSeat();
	}

	/** Back to my seat: in a headset the rig stands there facing the table; on a desktop the rig is the room's
	 * origin and the camera goes to the seat. */
	toSeat() {
		const stage = this.stage;
		const rig = stage.rig;
		if (stage.renderer.xr.isPresenting) {
			const table = stage.table.position;
			rig.position.copy(seatDirection(this.seat, _place)).multiplyScalar(seatRadius(this.seat));
			rig.position.x += table.x;
			rig.position.z += table.z;
			rig.position.y = TIER_RISE * (this.seat?.tier ?? 0);
			rig.quaternion.setFromAxisAngle(_up, seatYaw(this.seat));
		} else {
			rig.position.set(0, 0, 0);
			rig.quaternion.identity();
			if (this.leader === null && !this.stage.bounds.isEmpty()) this.desktop?.frame();
		}
		rig.updateMatrixWorld(true);
		stage.invalidate();
	}

	/** My place beside the leader (world), from the leader's head `p`, `q`, into `target`. */
	placeBeside(p, q, target) {
		_forward.set(0, 0, -1).applyQuaternion(q);
		_forward.y = 0;
		if (_forward.lengthSq() < 1e-8) _forward.set(0, 0, -1); // looking straight down or up
		_forward.normalize();
		// right = forward x up; behind = -forward
		target.copy(p);
		target.x += -_forward.z * this.offset.x - _forward.x * this.offset.z;
		target.z += _forward.x * this.offset.x - _forward.z * this.offset.z;
		target.y += this.offset.y;
		return target;
	}

	/** Where the leader (head `p`, `q`) looks: along the gaze, as far as the patient's centre is (at least 0.3 m). */
	focus(p, q, target) {
		const distance = Math.max(0.3, p.distanceTo(this.stage.patientCentre(target)));
		return target.set(0, 0, -1).applyQuaternion(q).multiplyScalar(distance).add(p);
	}

	/** Turn the rig about the vertical through my head (`head`, world) so that my gaze faces `direction`. */
	turnToward(direction, head) {
		const rig = this.stage.rig;
		const gaze = this.stage.camera.getWorldDirection(_forward);
		const turn = Math.atan2(-direction.x, -direction.z) - Math.atan2(-gaze.x, -gaze.z);
		_turn.setFromAxisAngle(_up, turn);
		rig.position.sub(head).applyQuaternion(_turn).add(head);
		rig.quaternion.premultiply(_turn);
		rig.updateMatrixWorld(true);
		this.snap = false;
	}

	update() {
		if (!this.leader || !this.avatars.headWorld(this.leader, _p, _q)) return;
		const stage = this.stage;
		stage.invalidate();
		this.placeBeside(_p, _q, _place);
		this.place.copy(_place);
		if (stage.renderer.xr.isPresenting) {
			stage.camera.getWorldPosition(_head);
			if (this.snap) this.turnToward(this.focus(_p, _q, _focus).sub(_place), _head);
			stage.rig.position.addScaledVector(_place.sub(_head), 0.2);
		} else {
			stage.camera.position.copy(_place);
			stage.camera.lookAt(this.focus(_p, _q, _focus));
		}
	}
}
