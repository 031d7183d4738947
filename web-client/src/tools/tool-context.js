// What every tool acts through: the stage, the room's state and limits, picking, the patient's frame, the Label
// box, messages, and ops. A refused op is said and resolves to null, so a tool only checks for an ack.
import { Matrix4, Quaternion } from 'three';

export class ToolContext {
	/** `label`: the LabelField; `limits`: the room limits; `notify(text, level)`: a message. */
	constructor({ stage, room, meshes, picker, preview, label, limits, notify }) {
		this.stage = stage;
		this.room = room;
		this.meshes = meshes;
		this.picker = picker;
		this.preview = preview;
		this.label = label;
		this.limits = limits;
		this.notify = notify;
		this.inverse = new Matrix4();
		this.modelQ = new Quaternion();
	}

	/** The room's state (null before the snapshot). */
	state() {
		return this.room.state;
	}

	/** The PatientFrame of the room's meshes (LPS mm <-> model space). */
	patient() {
		return this.meshes.patient;
	}

	/** The first visible surface point along `ray` (world) into `hit`; false if none. */
	pick(ray, hit, options) {
		return this.picker.pick(ray, hit, options);
	}

	/** A world point in model space, into `target`. */
	toModel(world, target) {
		return target.copy(world).applyMatrix4(this.inverse.copy(this.stage.modelFrame.matrixWorld).invert());
	}

	/** A world direction turned into model space, in place. */
	directionToModel(direction) {
		return direction.applyQuaternion(this.stage.modelWorldQuaternion(this.modelQ).invert()).normalize();
	}

	/** The label (or a note's text) for the next annotation of `type`. */
	nextLabel(type) {
		return this.label.take(type, this.room.state);
	}

	/** Send an op; resolves to its ack, or to null once a refusal is said. */
	send(kind, fields = {}) {
		return this.room.op(kind, fields).catch((error) => {
			this.notify(error.message, 'error');
			return null;
		});
	}
}
