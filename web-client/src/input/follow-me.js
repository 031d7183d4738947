// Follow-me: while an instructor leads (state.follow), everyone else's view follows the leader's head.
// On a desktop the camera takes the leader's head pose; in a headset the user's rig is carried so that
// their head sits where the leader's is (position only: turning someone's head for them makes people sick).
import { Quaternion, Vector3 } from 'three';

const _p = new Vector3();
const _q = new Quaternion();
const _target = new Vector3();

export class FollowMe {
	constructor(stage, avatars, desktop) {
		this.stage = stage;
		this.avatars = avatars;
		this.desktop = desktop;
		this.leader = null;
		stage.onFrame(() => this.update());
	}

	/** After a state change: whom to follow (null: nobody, or I lead). */
	render(state) {
		const me = state.me();
		const leader = state.follow && state.follow !== me?.id ? state.follow : null;
		if (leader === this.leader) return;
		this.leader = leader;
		this.desktop?.setFollowing(Boolean(leader));
		if (!leader) {
			this.stage.rig.position.set(0, 0, 0);
			if (!this.stage.renderer.xr.isPresenting) this.desktop?.frame();
		}
	}

	update() {
		if (!this.leader || !this.avatars.headWorld(this.leader, _p, _q)) return;
		const stage = this.stage;
		stage.invalidate();
		if (stage.renderer.xr.isPresenting) {
			_target.copy(_p).sub(stage.camera.position);
			stage.rig.position.lerp(_target, 0.2);
		} else {
			stage.camera.position.copy(_p);
			stage.camera.quaternion.copy(_q);
		}
	}
}
