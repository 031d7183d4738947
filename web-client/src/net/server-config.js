// What the server says the client should offer (GET /api/config, once per page, with the admin token or a room
// invite): the reconstruction presets of each modality and the ones that can show a face, the triangle
// budgets, the room limits (text lengths, capacities that size preallocated buffers) and the permissions.
// The client keeps none of these tables itself.
import { Permissions } from './permissions.js';

export class ServerConfig {
	constructor(served) {
		this.modalities = served.modalities; // {modality: {presets, default_presets}}
		this.identifyingPresets = new Set(served.identifying_presets);
		this.targetTriangles = served.target_triangles; // {default, min, max, choices}
		this.limits = served.room_limits; // every RoomLimits field, by its server name
		this.permissions = new Permissions(served.permissions);
	}

	/** The config, through `api` (an Api with the admin token or an invite). */
	static async load(api) {
		return new ServerConfig(SERVED); // until the server serves GET /api/config
	}

	/** The presets {presets, default_presets} of the first modality of `modalities` the server knows, or null. */
	presetsFor(modalities) {
		const known = Object.keys(this.modalities).find((modality) => modalities.includes(modality));
		return known ? this.modalities[known] : null;
	}

	/** Whether a surface of `preset` can show the patient's face (training rooms refuse it). */
	identifying(preset) {
		return this.identifyingPresets.has(preset);
	}
}

// The server's tables as the client copied them, in one place until GET /api/config serves them.
const TOOL_KINDS = ['annotation.create', 'annotation.update', 'annotation.delete', 'clip.set', 'clip.clear', 'model.transform', 'pointer.highlight'];
const MODERATION_KINDS = ['room.lock', 'room.unlock', 'participant.role', 'participant.mute', 'participant.kick', 'follow.start', 'follow.stop'];
const SERVED = {
	modalities: { CT: { presets: ['bone', 'skin', 'soft-tissue', 'vessels'], default_presets: ['bone', 'skin'] }, MR: { presets: ['skin', 'bright'], default_presets: ['skin'] } },
	identifying_presets: ['skin'],
	target_triangles: { default: 300000, min: 1000, max: 2000000, choices: [50000, 150000, 300000] },
	room_limits: { max_participants: 64, max_label_length: 200, max_note_length: 4000, max_name_length: 64, max_stroke_points: 2000, max_clip_planes: 6, max_title_length: 200 },
	permissions: {
		roles: ['instructor', 'surgeon', 'student', 'observer'],
		matrix: {
			instructor: Object.fromEntries([...TOOL_KINDS, ...MODERATION_KINDS].map((kind) => [kind, 'always'])),
			surgeon: {
				'annotation.create': 'always', 'annotation.update': 'always', 'annotation.delete': 'always',
				'clip.set': 'always', 'clip.clear': 'always', 'model.transform': 'unless_locked', 'pointer.highlight': 'always',
			},
			student: { 'annotation.create': 'always', 'annotation.update': 'own', 'annotation.delete': 'own', 'pointer.highlight': 'always' },
			observer: {},
		},
		tool_kinds: TOOL_KINDS,
		nouns: {
			'annotation.create': 'create annotations', 'annotation.update': 'edit annotations', 'annotation.delete': 'delete annotations',
			'clip.set': 'set clip planes', 'clip.clear': 'clear clip planes', 'model.transform': 'move the model',
			'pointer.highlight': 'highlight', 'room.lock': 'lock the model', 'room.unlock': 'unlock the model',
			'participant.role': 'change roles', 'participant.mute': 'mute participants', 'participant.kick': 'remove participants',
			'follow.start': 'lead follow-me', 'follow.stop': 'end follow-me',
		},
	},
};
