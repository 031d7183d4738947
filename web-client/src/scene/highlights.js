// The pulses of pointer.highlight events: a deliberate "look here" shows for a few seconds at the spot, in the
// author's role colour, in model space. At most CAPACITY at once (the oldest makes way), one instanced draw call.
import { Color, Matrix4, MeshBasicMaterial, SphereGeometry, Vector3 } from 'three';

import { ROLE_COLORS } from '../role-colors.js';
import { coloredInstances } from './colored-instances.js';

const CAPACITY = 16;
const LIFETIME_S = 3;
const _m = new Matrix4();
const _color = new Color();

export class Highlights {
	constructor(stage) {
		this.mesh = coloredInstances(
			new SphereGeometry(1, 16, 12),
			new MeshBasicMaterial({ transparent: true, opacity: 0.55, depthTest: false }),
			CAPACITY,
		);
		this.mesh.renderOrder = 10;
		this.pulses = Array.from({ length: CAPACITY }, () => ({ at: new Vector3(), born: -1, color: new Color() }));
		this.next = 0;
		this.now = 0;
		this.stage = stage;
		stage.modelFrame.add(this.mesh);
	}

	/** Show a pulse for a pointer.highlight event. */
	add(event, state) {
		const pulse = this.pulses[this.next];
		this.next = (this.next + 1) % CAPACITY;
		pulse.at.fromArray(event.data.position);
		pulse.born = this.now;
		pulse.color.set(ROLE_COLORS[state.participants.get(event.author)?.role] ?? '#ffffff');
	}

	update(timeMs) {
		this.now = timeMs / 1000;
		let n = 0;
		for (let i = 0; i < CAPACITY; i++) {
			const pulse = this.pulses[i];
			if (pulse.born < 0) continue;
			const age = this.now - pulse.born;
			if (age > LIFETIME_S || age < 0) {
				pulse.born = -1;
				continue;
			}
			const r = 0.004 + 0.006 * (0.5 + 0.5 * Math.sin(age * 10));
			_m.makeScale(r, r, r).setPosition(pulse.at);
			this.mesh.setMatrixAt(n, _m);
			this.mesh.setColorAt(n, _color.copy(pulse.color));
			n += 1;
		}
		if (n === 0 && this.mesh.count === 0) return;
		this.mesh.count = n;
		this.stage.invalidate(); // pulses animate
		this.mesh.instanceMatrix.needsUpdate = true;
		this.mesh.instanceColor.needsUpdate = true;
	}
}
