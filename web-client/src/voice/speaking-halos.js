// Who speaks, seen in the room: a green halo over the head of each avatar whose voice is heard, and
// a yellow marker over each raised hand (so an instructor in a headset sees the queue too). One draw call each.
import { Color, InstancedMesh, Matrix4, MeshBasicMaterial, Quaternion, SphereGeometry, TorusGeometry, Vector3 } from 'three';

const LIFT = 0.2; // m above the head's centre
const _m = new Matrix4();
const _p = new Vector3();
const _q = new Quaternion();
const _flat = new Quaternion().setFromAxisAngle(new Vector3(1, 0, 0), Math.PI / 2);
const _s = new Vector3();

export class SpeakingHalos {
	/** `capacity`: participants present at once. */
	constructor(stage, avatars, voice, capacity) {
		this.avatars = avatars;
		this.voice = voice;
		this.stage = stage;
		this.state = null;
		this.halos = new InstancedMesh(new TorusGeometry(0.07, 0.008, 8, 32), new MeshBasicMaterial({ color: new Color(0x5be08a) }), capacity);
		this.hands = new InstancedMesh(new SphereGeometry(0.025, 12, 8), new MeshBasicMaterial({ color: new Color(0xf0b849) }), capacity);
		for (const mesh of [this.halos, this.hands]) {
			mesh.count = 0;
			mesh.frustumCulled = false;
			stage.scene.add(mesh);
		}
		voice.addEventListener('speaking', () => stage.invalidate());
	}

	render(state) {
		this.state = state;
	}

	/** Per frame: place the halos and the hands (they move with the avatars, which redraw when they move). */
	update() {
		const speaking = this.voice.speaking;
		const hands = this.state?.voice.hands;
		let halos = 0;
		let raised = 0;
		for (const avatar of this.avatars.list) {
			const id = avatar.id;
			const talking = speaking.has(id);
			const hand = hands?.has(id);
			if (!(talking || hand) || !this.avatars.headWorld(id, _p, _q)) continue;
			_p.y += LIFT;
			if (talking) {
				_m.compose(_p, _flat, _s.set(1, 1, 1));
				this.halos.setMatrixAt(halos++, _m);
			}
			if (hand) {
				_p.y += 0.06;
				_m.compose(_p, _q.identity(), _s.set(1, 1, 1));
				this.hands.setMatrixAt(raised++, _m);
			}
		}
		if (halos !== this.halos.count || raised !== this.hands.count) this.stage.invalidate();
		this.halos.count = halos;
		this.hands.count = raised;
		this.halos.instanceMatrix.needsUpdate = true;
		this.hands.instanceMatrix.needsUpdate = true;
	}
}
