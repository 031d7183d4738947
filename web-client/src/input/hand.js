// One of the headset's two hands: three.js' controller (target ray), grip and hand-tracking spaces for one
// input source, with a ray pointer, a hover reticle, a controller body and a hand model, and what the session
// tracks of it (pressed, the buttons seen last frame, the hover hit).
import { Line, Mesh, Ray, SphereGeometry } from 'three';

import { Hit } from '../scene/hit.js';

const RAY_LENGTH = 3;

export class Hand {
	/** `looks`: the parts every hand shares {rayGeometry, rayMaterial, reticleMaterial, bodyGeometry,
	 * bodyMaterial, handFactory}. */
	constructor(stage, index, looks) {
		const xr = stage.renderer.xr;
		this.index = index;
		this.controller = xr.getController(index);
		this.grip = xr.getControllerGrip(index);
		this.hand = xr.getHand(index);
		this.handedness = index === 0 ? 'right' : 'left';
		this.inputSource = null;
		this.input = { source: this.handedness, ray: new Ray(), controller: this.controller, event: null, tool: null };
		this.pressed = false;
		this.buttons = [false, false, false, false, false, false, false];
		this.hit = new Hit();
		this.hovering = false;

		this.ray = new Line(looks.rayGeometry, looks.rayMaterial);
		this.ray.scale.z = RAY_LENGTH;
		this.ray.frustumCulled = false;
		this.reticle = new Mesh(new SphereGeometry(0.004, 10, 8), looks.reticleMaterial);
		this.reticle.visible = false;
		this.reticle.renderOrder = 30;
		this.controller.add(this.ray);
		stage.scene.add(this.reticle);
		this.grip.add(new Mesh(looks.bodyGeometry, looks.bodyMaterial));
		this.hand.add(looks.handFactory.createHandModel(this.hand, 'spheres'));
		stage.rig.add(this.controller, this.grip, this.hand);
		this.controller.addEventListener('connected', (e) => this.connected(e.data));
	}

	connected(inputSource) {
		this.inputSource = inputSource;
		this.handedness = inputSource.handedness || this.handedness;
		this.input.source = this.handedness;
		this.ray.visible = inputSource.targetRayMode === 'tracked-pointer' || Boolean(inputSource.hand);
	}

	/** The input of this hand, its ray where the controller points now. */
	aim() {
		this.controller.updateWorldMatrix(true, false);
		this.input.ray.origin.setFromMatrixPosition(this.controller.matrixWorld);
		this.input.ray.direction.set(0, 0, -1).transformDirection(this.controller.matrixWorld);
		return this.input;
	}

	/** Show where the hover pick met the anatomy (the reticle, a ray that stops there), or nothing. */
	showHover(hovering) {
		this.hovering = hovering;
		this.reticle.visible = hovering;
		if (hovering) {
			this.reticle.position.copy(this.hit.point);
			this.ray.scale.z = Math.max(0.01, this.hit.distance / Math.max(1e-6, this.controller.matrixWorld.getMaxScaleOnAxis()));
		} else {
			this.ray.scale.z = RAY_LENGTH;
		}
	}
}
