// Avatars: every other participant as a head and controllers with a ray, a name tag and their role colour,
// interpolated between the server's pose ticks (~20 Hz). Poses arrive in model space and are placed through
// the model's current transform, so they line up on every client. All avatars share five draw calls (heads,
// visors, hands, rays, name tags); a frame writes into buffers preallocated for the room's capacity and
// allocates nothing.
import {
	BoxGeometry, BufferAttribute, BufferGeometry, DynamicDrawUsage, LineBasicMaterial, LineSegments, Matrix4,
	MeshStandardMaterial, Quaternion, SphereGeometry, Vector3,
} from 'three';

import { Avatar, AVATAR_PARTS } from './avatar.js';
import { coloredInstances } from './colored-instances.js';
import { LabelLayer } from './label-layer.js';

const BLEND_S = 0.07; // a little more than one pose tick
const RAY_LENGTH = 0.6;
export const FADE_WITHIN = 0.5; // m: a head this close to my camera is drawn as a faint ghost, without its tag
const HIDE_WITHIN = 0.15; // m: and not at all this close (the camera would be inside it)

const _m = new Matrix4();
const _p = new Vector3();
const _q = new Quaternion();
const _modelQ = new Quaternion();
const _one = new Vector3(1, 1, 1);
const _visorOffset = new Vector3(0, 0.01, -0.085);
const _forward = new Vector3();
const _eye = new Vector3();

export class Avatars {
	/** `capacity`: the participants present at once (the room limits' max_participants). */
	constructor(stage, atlas, capacity) {
		this.stage = stage;
		this.avatars = new Map();
		this.list = []; // the same avatars, for an iteration that allocates nothing
		this.me = null;
		this.now = 0;
		const standard = (color) => new MeshStandardMaterial({ color, roughness: 0.6 });
		const headGeometry = new SphereGeometry(0.1, 20, 14).scale(0.85, 1.05, 1);
		this.heads = coloredInstances(headGeometry, standard(0xffffff), capacity);
		const ghost = new MeshStandardMaterial({ color: 0xffffff, roughness: 0.6, transparent: true, opacity: 0.18, depthWrite: false });
		this.ghosts = coloredInstances(headGeometry, ghost, capacity); // heads within FADE_WITHIN of my camera
		this.faded = new Set(); // their ids (the tests read it)
		this.visors = coloredInstances(new BoxGeometry(0.15, 0.05, 0.05), standard(0x15181d), capacity);
		this.hands = coloredInstances(new BoxGeometry(0.035, 0.03, 0.11), standard(0xffffff), capacity * 2);
		const rayGeometry = new BufferGeometry();
		rayGeometry.setAttribute('position', new BufferAttribute(new Float32Array(capacity * 2 * 2 * 3), 3).setUsage(DynamicDrawUsage));
		rayGeometry.setAttribute('color', new BufferAttribute(new Float32Array(capacity * 2 * 2 * 3), 3).setUsage(DynamicDrawUsage));
		this.rays = new LineSegments(rayGeometry, new LineBasicMaterial({ vertexColors: true, transparent: true, opacity: 0.7 }));
		this.tags = new LabelLayer(atlas, capacity, { height: 0.035, lift: 0.13, near: 1.2 }); // bounded close up
		this.rays.frustumCulled = false;
		stage.scene.add(this.heads, this.ghosts, this.visors, this.hands, this.rays, this.tags);
	}

	/** Apply a `poses` frame {poses: {id: pose}, gone: [id]}; my own pseudonym is ignored. */
	receive(frame, state) {
		let changed = false;
		for (const [id, pose] of Object.entries(frame.poses || {})) {
			if (id === this.me) continue;
			let avatar = this.avatars.get(id);
			if (!avatar) {
				avatar = new Avatar(id);
				this.avatars.set(id, avatar);
				this.list.push(avatar);
				avatar.describe(state.participants.get(id));
			}
			avatar.receive(pose, this.now);
			changed = true;
		}
		for (const id of frame.gone || []) this.remove(id);
		if (changed) this.stage.invalidate();
	}

	/** Refresh names and role colours (after a join, a role change ...). */
	render(state) {
		for (const avatar of this.avatars.values()) {
			const participant = state.participants.get(avatar.id);
			if (!participant || !participant.present) this.remove(avatar.id);
			else avatar.describe(participant);
		}
	}

	remove(id) {
		const avatar = this.avatars.get(id);
		if (!avatar) return;
		this.avatars.delete(id);
		this.list.splice(this.list.indexOf(avatar), 1);
		this.tags.remove(id);
		this.stage.invalidate();
	}

	/** The participant's interpolated head in world space (for follow-me); false if not known. */
	headWorld(id, position, quaternion) {
		const avatar = this.avatars.get(id);
		if (!avatar || !avatar.parts.head.has) return false;
		const head = avatar.parts.head;
		position.copy(head.p).applyMatrix4(this.stage.modelFrame.matrixWorld);
		quaternion.copy(this.stage.modelWorldQuaternion(_modelQ)).multiply(head.q);
		return true;
	}

	/** Per frame: interpolate and write the instance buffers. */
	update(timeMs) {
		this.now = timeMs / 1000;
		const modelMatrix = this.stage.modelFrame.matrixWorld;
		this.stage.modelWorldQuaternion(_modelQ);
		this.stage.camera.getWorldPosition(_eye);
		const positions = this.rays.geometry.attributes.position;
		const colors = this.rays.geometry.attributes.color;
		let heads = 0;
		let ghosts = 0;
		let hands = 0;
		let rayVertex = 0;
		const list = this.list;
		if (list.length === 0 && this.heads.count === 0 && this.ghosts.count === 0) return;
		this.faded.clear();
		for (let k = 0; k < list.length; k++) {
			const avatar = list[k];
			const t = Math.min(1, (this.now - avatar.since) / BLEND_S);
			if (t < 1) this.stage.invalidate(); // still gliding toward the last pose
			for (let i = 0; i < AVATAR_PARTS.length; i++) {
				const part = avatar.parts[AVATAR_PARTS[i]];
				if (!part.has) continue;
				part.blend(t);
				_p.copy(part.p).applyMatrix4(modelMatrix);
				_q.copy(_modelQ).multiply(part.q);
				_m.compose(_p, _q, _one);
				if (i === 0 && _p.distanceTo(_eye) < FADE_WITHIN) {
					// Too close to my eyes: a faint ghost (nothing at all closer still), no visor, no name tag.
					this.faded.add(avatar.id);
					this.tags.remove(avatar.id);
					if (_p.distanceTo(_eye) >= HIDE_WITHIN) {
						this.ghosts.setMatrixAt(ghosts, _m);
						this.ghosts.setColorAt(ghosts, avatar.color);
						ghosts += 1;
					}
				} else if (i === 0) {
					this.heads.setMatrixAt(heads, _m);
					this.heads.setColorAt(heads, avatar.color);
					_forward.copy(_visorOffset).applyQuaternion(_q).add(_p);
					_m.compose(_forward, _q, _one);
					this.visors.setMatrixAt(heads, _m);
					heads += 1;
					this.tags.set(avatar.id, avatar.tag, avatar.tagColor, _p.x, _p.y, _p.z);
				} else {
					this.hands.setMatrixAt(hands, _m);
					this.hands.setColorAt(hands, avatar.color);
					hands += 1;
					_forward.set(0, 0, -RAY_LENGTH).applyQuaternion(_q).add(_p);
					positions.setXYZ(rayVertex, _p.x, _p.y, _p.z);
					positions.setXYZ(rayVertex + 1, _forward.x, _forward.y, _forward.z);
					colors.setXYZ(rayVertex, avatar.color.r, avatar.color.g, avatar.color.b);
					colors.setXYZ(rayVertex + 1, avatar.color.r * 0.2, avatar.color.g * 0.2, avatar.color.b * 0.2);
					rayVertex += 2;
				}
			}
		}
		this.heads.count = heads;
		this.ghosts.count = ghosts;
		this.visors.count = heads;
		this.hands.count = hands;
		this.rays.geometry.setDrawRange(0, rayVertex);
		touch(this.heads);
		touch(this.ghosts);
		touch(this.visors);
		touch(this.hands);
		positions.needsUpdate = true;
		colors.needsUpdate = true;
	}
}

function touch(mesh) {
	mesh.instanceMatrix.needsUpdate = true;
	mesh.instanceColor.needsUpdate = true;
}
