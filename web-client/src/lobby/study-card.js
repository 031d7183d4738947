// One study in the lobby: its series, reconstruction (presets and triangle budget as the server offers them,
// live progress), its meshes (a training room refuses those that can show a face), a 3D preview, and room
// creation.
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';

import { MeshLoader } from '../scene/mesh-loader.js';
import { Stage } from '../scene/stage.js';
import { confirmButton } from '../ui/confirm.js';
import { fill, h } from '../ui/dom.js';
import { ProgressBar } from '../ui/progress-bar.js';

const JOB_POLL_MS = 1000;

export class StudyCard {
	constructor(lobby, study) {
		this.lobby = lobby;
		this.element = h('li', { class: 'study', 'data-id': study.id });
		this.preview = null;
		// One preview box for the card's life: an update (a refresh after an upload, a new mesh) keeps its view.
		this.previewBox = h('div', { class: 'preview', hidden: true, role: 'img', 'aria-label': '3D preview of the study\'s meshes (drag to turn)' });
		// So does a running reconstruction's progress and its Cancel button.
		this.jobBox = h('div', { class: 'job row' });
		this.jobProgress = new ProgressBar(this.jobBox, { className: 'job-progress', label: 'Reconstruction' });
		this.jobProgress.hide();
		this.cancelButton = h('button', { class: 'cancel-job', hidden: true, onclick: () => this.cancel() }, 'Cancel');
		this.jobBox.append(this.cancelButton);
		this.update(study);
	}

	update(study) {
		this.study = study;
		const config = this.lobby.config;
		const series = study.series[0];
		// The tissues the server reconstructs for this study's modality (none known: the server chooses).
		const offered = config.presetsFor(study.modalities);
		this.presetBoxes = (offered?.presets ?? []).map((p) => h('input', { type: 'checkbox', name: 'preset', value: p, checked: offered.default_presets.includes(p) }));
		const budgets = config.targetTriangles;
		this.budget = h('select', { class: 'budget', 'aria-label': 'Triangle budget per tissue' },
			budgets.choices.map((b) => h('option', { value: b, selected: b === budgets.default }, `${b / 1000}k triangles`)));
		this.reconstructButton = h('button', { class: 'reconstruct primary', onclick: () => this.reconstruct() }, 'Reconstruct');
		// Separate pieces (a CT's head holder beside the skull, markers, noise) are left out when asked.
		this.largestOnly = h('input', { type: 'checkbox', class: 'largest-only' });
		const largest = h('label', { class: 'check', title: 'Keep only the largest connected surface of each tissue: leaves out the head holder, markers and other separate parts' },
			this.largestOnly, 'largest part only');
		this.meshList = h('ul', { class: 'meshes' });
		this.roomTitle = h('input', { class: 'room-title', 'aria-label': 'Room title', placeholder: 'Room title (no patient names)', value: study.description || '' });
		this.roomMode = h('select', { class: 'room-mode', 'aria-label': 'Room mode', onchange: () => this.renderMeshes() },
			h('option', { value: 'training' }, 'Training (de-identified)'), h('option', { value: 'consult' }, 'Consult'));
		this.createButton = h('button', { class: 'create-room primary', onclick: () => this.createRoom() }, 'Create room');
		fill(this.element,
			h('div', { class: 'study-head row' },
				h('strong', {}, study.description || 'Untitled study'),
				h('span', { class: 'muted' }, ` ${study.modalities.join('/')} · ${study.instances} instances`
					+ (series ? ` · ${series.description || 'series'}: ${series.slices} slices ${series.rows}×${series.columns}` : '')),
				confirmButton({ label: 'Delete study', className: 'delete-study', yes: 'Delete it',
					question: 'Delete the study, its images and meshes from this server? Rooms made from it keep their logs.',
					onConfirm: () => this.remove() })),
			this.warnings(study),
			h('div', { class: 'row reconstruct-row' }, this.presetBoxes.map((box) => h('label', { class: 'check' }, box, box.value)), largest, this.budget, this.reconstructButton),
			this.jobBox,
			this.meshList,
			this.previewBox,
			h('div', { class: 'row create-row' }, this.roomTitle, this.roomMode, this.createButton));
		this.renderMeshes();
		if (study.meshes?.length) this.showPreview();
	}

	/** What the reconstruction of each series warns of (uneven spacing, gaps allowed, duplicates dropped). */
	warnings(study) {
		const said = study.series.flatMap((s) => (s.warnings ?? []).map((w) => `${s.description || 'series'}: ${w}`));
		if (!said.length) return null;
		return h('ul', { class: 'warnings', 'aria-label': 'Reconstruction warnings' }, said.map((w) => h('li', {}, `⚠ ${w}`)));
	}

	/** The meshes to choose for a room; a training room takes none that can show the face (the server's
	 * identifying presets). */
	renderMeshes() {
		const training = this.roomMode.value === 'training';
		const forbidden = (mesh) => training && this.lobby.config.identifying(mesh.preset);
		fill(this.meshList, (this.study.meshes || []).map((m) => {
			const refused = forbidden(m);
			return h('li', {},
				h('label', { class: 'check', title: refused ? `a ${m.preset} surface can show the face: training rooms take de-identified data only` : '' },
					h('input', { type: 'checkbox', class: 'mesh-choice', value: m.id, checked: !refused, disabled: refused }),
					`${m.preset} · ${m.triangles.toLocaleString()} triangles`),
				refused ? h('small', { class: 'reason' }, 'not in training rooms (can show the face)') : null);
		}));
		this.createButton.disabled = !(this.study.meshes || []).some((m) => !forbidden(m));
	}

	async reconstruct() {
		const presets = this.presetBoxes.filter((b) => b.checked).map((b) => b.value);
		if (this.presetBoxes.length && !presets.length) {
			this.lobby.toasts.say('Choose at least one tissue', 'warn');
			return;
		}
		this.reconstructButton.disabled = true;
		this.jobProgress.set(0, 'Queued');
		try {
			const answer = await this.lobby.api.post(`/api/studies/${this.study.id}/meshes`, {
				...(presets.length ? { presets } : {}), target_triangles: Number(this.budget.value),
				...(this.largestOnly.checked ? { largest_only: true } : {}),
			});
			if (answer.meshes) await this.done();
			else {
				this.job = answer.job;
				this.lobby.watch(answer.job.id, this);
				this.onJob(answer.job);
				this.poll(answer.job.id);
			}
		} catch (error) {
			this.jobProgress.set(0, `Failed: ${error.message}`);
			this.reconstructButton.disabled = false;
		}
	}

	/** A fallback to the socket's job events: the job's state over HTTP, once a second, until it ends. */
	async poll(jobId) {
		while (this.job?.id === jobId && !['done', 'failed', 'cancelled'].includes(this.job.state)) {
			await new Promise((resolve) => setTimeout(resolve, JOB_POLL_MS));
			if (this.job?.id !== jobId || ['done', 'failed', 'cancelled'].includes(this.job.state)) break;
			try {
				this.onJob(await this.lobby.api.get(`/api/jobs/${jobId}`));
			} catch {
				// the socket may still tell us
			}
		}
	}

	/** Stop the running reconstruction (DELETE /api/jobs/{id}); the job's event says it is cancelled. */
	async cancel() {
		if (!this.job) return;
		this.cancelButton.disabled = true;
		try {
			this.onJob(await this.lobby.api.delete(`/api/jobs/${this.job.id}`));
		} catch (error) {
			this.lobby.toasts.say(`Cannot cancel: ${error.message}`, 'error');
		} finally {
			this.cancelButton.disabled = false;
		}
	}

	/** Delete the study from the server (DELETE /api/studies/{id}: its running jobs are cancelled first). */
	async remove() {
		try {
			await this.lobby.api.delete(`/api/studies/${this.study.id}`);
			this.lobby.removed(this.study.id);
			this.lobby.toasts.say(`Study "${this.study.description || 'Untitled study'}" deleted`, 'info');
		} catch (error) {
			this.lobby.toasts.say(`Cannot delete the study: ${error.message}`, 'error');
		}
	}

	onJob(job) {
		if (this.job?.id !== job.id || this.job.finished) return;
		this.job = job;
		this.cancelButton.hidden = !['queued', 'running'].includes(job.state);
		this.jobProgress.set((job.percent ?? 0) / 100, `${job.state}${job.stage ? `: ${job.stage}` : ''}`);
		this.jobProgress.element.dataset.state = job.state;
		if (job.state === 'done') {
			job.finished = true;
			this.done();
		} else if (job.state === 'failed' || job.state === 'cancelled') {
			job.finished = true;
			this.cancelButton.hidden = true;
			this.jobProgress.set(0, `${job.state}: ${job.error ?? ''}`);
			this.reconstructButton.disabled = false;
		}
	}

	async done() {
		this.jobProgress.set(1, 'Meshes ready');
		this.jobProgress.element.dataset.state = 'done';
		this.reconstructButton.disabled = false;
		this.update(await this.lobby.api.get(`/api/studies/${this.study.id}`));
		this.jobProgress.set(1, 'Meshes ready');
		this.jobProgress.element.dataset.state = 'done';
	}

	/** A small 3D view of the study's meshes (coarse level), turned with the mouse. */
	async showPreview() {
		const ids = this.study.meshes.map((m) => m.id).join(',');
		if (this.previewIds === ids) return;
		this.previewIds = ids;
		this.previewBox.hidden = false;
		if (!this.preview) {
			const stage = new Stage(this.previewBox);
			const controls = new OrbitControls(stage.camera, stage.renderer.domElement);
			this.preview = { stage, controls };
			stage.start();
		}
		const { stage, controls } = this.preview;
		for (const child of [...stage.modelFrame.children]) stage.modelFrame.remove(child);
		const loader = new MeshLoader(stage, this.lobby.token);
		await loader.load(this.study.meshes.map((m) => m.id), { coarseOnly: true });
		stage.fitCamera(controls);
		this.previewBox.dataset.loaded = 'true';
	}

	async createRoom() {
		const mesh_ids = [...this.meshList.querySelectorAll('.mesh-choice:checked')].map((b) => b.value);
		this.createButton.disabled = true;
		try {
			const created = await this.lobby.api.post('/api/rooms', {
				study_id: this.study.id, mesh_ids, mode: this.roomMode.value, title: this.roomTitle.value.trim(),
			});
			this.lobby.toasts.say(`Room "${created.room.title}" created`, 'info');
			await this.lobby.showRoom(created.room.id, created.invites);
		} catch (error) {
			this.lobby.toasts.say(`Cannot create the room: ${error.message}`, 'error');
		} finally {
			this.createButton.disabled = false;
		}
	}
}
