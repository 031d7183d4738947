// The PACS, when the server has one (THEATRUM_PACS_URL): search its studies (GET /api/pacs/search, answered
// de-identified: date, description, modalities, counts, and an opaque ref) and import one into the library
// (POST /api/pacs/import {ref}), with the retrieval's progress from the admin socket's `pacs` events.
import { fill, h } from '../ui/dom.js';

const FILTERS = [
	['PatientID', 'Patient ID', 'exact, or with * and ?'],
	['AccessionNumber', 'Accession number', ''],
	['StudyDate', 'Study date', 'YYYYMMDD or YYYYMMDD-YYYYMMDD'],
	['ModalitiesInStudy', 'Modality', 'CT, MR, …'],
];

export class PacsSearch {
	constructor(lobby) {
		this.lobby = lobby;
		this.inputs = FILTERS.map(([name, title, hint]) => h('input', { type: 'text', name, id: `pacs-${name}`, placeholder: hint, autocomplete: 'off' }));
		this.results = h('ul', { id: 'pacs-results', class: 'studies' });
		this.status = h('p', { class: 'muted', id: 'pacs-status', role: 'status' });
		const form = h('form', { id: 'pacs-form', onsubmit: (e) => {
			e.preventDefault();
			this.search();
		} },
		FILTERS.map(([, title], i) => h('label', { class: 'field' }, title, ' ', this.inputs[i])),
		h('button', { type: 'submit', class: 'primary', id: 'pacs-search' }, 'Search the PACS'));
		this.element = h('section', { class: 'card', id: 'pacs-section' }, h('h2', {}, 'PACS'), form, this.status, this.results);
		lobby.socket.on('pacs', (progress) => this.onProgress(progress));
	}

	async search() {
		const query = new URLSearchParams();
		for (const input of this.inputs) if (input.value.trim()) query.set(input.name, input.value.trim());
		this.status.textContent = 'Searching…';
		try {
			const { studies } = await this.lobby.api.get(`/api/pacs/search?${query}`);
			this.status.textContent = studies.length ? `${studies.length} studies` : 'No study matches';
			fill(this.results, studies.map((study) => this.row(study)));
		} catch (error) {
			this.status.textContent = `The search failed: ${error.message}`;
		}
	}

	row(study) {
		const button = h('button', { class: 'pacs-import primary', onclick: () => this.import(study, button) }, 'Import');
		return h('li', { class: 'study pacs-study' },
			h('strong', {}, study.description || 'Untitled study'),
			h('span', { class: 'muted' }, ` ${study.study_date ?? 'no date'} · ${study.modalities.join('/') || '?'} · ${study.series ?? '?'} series · ${study.instances ?? '?'} instances `),
			button);
	}

	async import(study, button) {
		button.disabled = true;
		this.status.textContent = 'Retrieving from the PACS…';
		try {
			const result = await this.lobby.api.post('/api/pacs/import', { ref: study.ref });
			this.status.textContent = `Imported: ${result.instances.added} new instances`;
			await this.lobby.uploaded({ study_id: result.study_id });
		} catch (error) {
			this.status.textContent = `The import failed: ${error.message}`;
			button.disabled = false;
		}
	}

	onProgress({ stage, done, total }) {
		if (stage === 'done' || stage === 'failed') return;
		this.status.textContent = `PACS ${stage}: ${done}${total ? ` of ${total}` : ''} instances`;
	}
}
