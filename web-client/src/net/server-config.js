// What the server says the client should offer (GET /api/config, once per page, with the admin token or a room
// invite): the reconstruction presets of each modality and the ones that can show a face, the triangle
// budgets, the room limits (text lengths, capacities that size preallocated buffers), the permissions and the
// slice images' sizes.
// The client keeps none of these tables itself.
import { Permissions } from './permissions.js';

export class ServerConfig {
	constructor(served) {
		this.modalities = served.modalities; // {modality: {presets, default_presets}}
		this.identifyingPresets = new Set(served.identifying_presets);
		this.targetTriangles = served.target_triangles; // {default, min, max, choices}
		this.limits = served.room_limits; // every RoomLimits field, by its server name
		this.permissions = new Permissions(served.permissions);
		this.slices = served.slices; // {windows: {CT: [{name, window, level}], MR: [...]}, px: {min, max, coarse, full}}
		this.pacs = served.pacs ?? { configured: false }; // whether THEATRUM_PACS_URL names a PACS to search
	}

	/** The config, through `api` (an Api with the admin token or an invite). */
	static async load(api) {
		return new ServerConfig(await api.get('/api/config'));
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
