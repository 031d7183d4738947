// One other participant as the avatars draw them: head and controllers (AvatarParts), role colour and name tag.
import { Color } from 'three';

import { ROLE_COLORS } from '../role-colors.js';
import { AvatarPart } from './avatar-part.js';

export const AVATAR_PARTS = ['head', 'left', 'right'];

export class Avatar {
	constructor(id) {
		this.id = id; // the participant's
		this.parts = { head: new AvatarPart(), left: new AvatarPart(), right: new AvatarPart() };
		this.since = 0; // s, when the latest pose arrived
		this.color = new Color();
		this.tag = '';
		this.tagColor = '';
	}

	/** A pose {head?, left?, right?} that arrived at `now` (s). */
	receive(pose, now) {
		for (const name of AVATAR_PARTS) this.parts[name].receive(pose[name]);
		this.since = now;
	}

	/** Name tag and colour of the participant (who may be unknown yet: then a grey tag with the id). */
	describe(participant) {
		const role = participant?.role ?? 'observer';
		this.color.set(ROLE_COLORS[role]);
		this.tag = participant ? `${participant.name} · ${role}` : this.id;
		this.tagColor = ROLE_COLORS[role];
	}
}
