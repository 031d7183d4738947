// Where a pick met the patient's surface: the point in world and model space, how far along the ray, and the
// mesh it belongs to. A tool keeps one and the Picker writes into it, so picking allocates nothing.
import { Vector3 } from 'three';

export class Hit {
	constructor() {
		this.point = new Vector3(); // world
		this.modelPoint = new Vector3(); // model space (glTF metres)
		this.distance = 0;
		this.meshId = null;
		this.object = null; // the three.js mesh met (its userData names a structure)
	}
}
