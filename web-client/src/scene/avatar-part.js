// One tracked part of an avatar (head or a controller), gliding from where it was drawn toward its latest pose.
import { Quaternion, Vector3 } from 'three';

export class AvatarPart {
	constructor() {
		this.has = false;
		this.fromP = new Vector3();
		this.fromQ = new Quaternion();
		this.toP = new Vector3();
		this.toQ = new Quaternion();
		this.p = new Vector3(); // model space, as drawn now
		this.q = new Quaternion();
	}

	/** A new pose {position, quaternion} (model space) to glide to; none: the part is not tracked now. */
	receive(pose) {
		if (!pose) {
			this.has = false;
			return;
		}
		if (this.has) {
			this.fromP.copy(this.p);
			this.fromQ.copy(this.q);
		} else {
			this.fromP.fromArray(pose.position);
			this.fromQ.fromArray(pose.quaternion);
		}
		this.toP.fromArray(pose.position);
		this.toQ.fromArray(pose.quaternion);
		this.has = true;
	}

	/** Where the glide is at `t` in [0, 1]. */
	blend(t) {
		this.p.lerpVectors(this.fromP, this.toP, t);
		this.q.slerpQuaternions(this.fromQ, this.toQ, t);
	}
}
