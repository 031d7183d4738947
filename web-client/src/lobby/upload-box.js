// Uploading DICOM to the library (POST /api/studies): a drop zone for files, folders or a .zip, file and
// folder pickers, a progress bar, and what the server made of the upload.
import { h } from '../ui/dom.js';
import { ProgressBar } from '../ui/progress-bar.js';

export class UploadBox {
	/** `onUploaded(result)`: after the server took an upload (its answer: study_id, instances, skipped). */
	constructor(api, toasts, { onUploaded }) {
		this.api = api;
		this.toasts = toasts;
		this.onUploaded = onUploaded;
		// The pickers are buttons (the keyboard reaches them) that open the hidden file inputs.
		this.fileInput = h('input', { id: 'upload-input', type: 'file', multiple: true, 'aria-label': 'DICOM files or a .zip', onchange: () => this.upload([...this.fileInput.files]) });
		this.folderInput = h('input', { id: 'upload-folder', type: 'file', webkitdirectory: true, 'aria-label': 'A folder of DICOM files', onchange: () => this.upload([...this.folderInput.files]) });
		const drop = h('div', { id: 'dropzone', class: 'dropzone' },
			h('p', {}, 'Drop DICOM files, folders or a .zip here, or'),
			h('p', { class: 'row centred' },
				h('button', { type: 'button', id: 'upload-files', onclick: () => this.fileInput.click() }, 'Choose files'),
				h('button', { type: 'button', id: 'upload-folder-button', onclick: () => this.folderInput.click() }, 'Choose a folder'),
				this.fileInput, this.folderInput));
		drop.addEventListener('dragover', (e) => {
			e.preventDefault();
			drop.classList.add('over');
		});
		drop.addEventListener('dragleave', () => drop.classList.remove('over'));
		drop.addEventListener('drop', async (e) => {
			e.preventDefault();
			drop.classList.remove('over');
			this.upload(await droppedFiles(e.dataTransfer));
		});
		const progressBox = h('div', { class: 'upload' });
		this.progress = new ProgressBar(progressBox, { id: 'upload-progress', label: 'Upload' });
		this.progress.hide();
		this.result = h('p', { id: 'upload-result', class: 'muted' });
		this.elements = [drop, progressBox, this.result];
	}

	async upload(files) {
		if (!files.length) return;
		const total = files.reduce((sum, f) => sum + f.size, 0);
		this.progress.set(0, `Uploading ${files.length} file(s)`);
		try {
			const result = await this.api.upload('/api/studies', files, (sent, size) => {
				this.progress.set(sent / (size || total || 1), `Uploading ${files.length} file(s)`);
			});
			this.progress.set(1, 'Uploaded');
			const added = result.instances?.added ?? 0;
			this.result.textContent = `Study ${result.study_id}: ${added} new instance(s), ${result.instances?.duplicates ?? 0} already here, ${result.skipped?.length ?? 0} file(s) skipped.`;
			await this.onUploaded(result);
		} catch (error) {
			this.progress.set(0, `Upload failed: ${error.message}`);
			this.toasts.say(`Upload failed: ${error.message}`, 'error');
		}
	}
}

/** Every file of a drop, folders included (recursively). */
async function droppedFiles(dataTransfer) {
	const entries = [...dataTransfer.items].map((item) => item.webkitGetAsEntry?.()).filter(Boolean);
	if (!entries.length) return [...dataTransfer.files];
	const files = [];
	const walk = async (entry) => {
		if (entry.isFile) files.push(await new Promise((resolve, reject) => entry.file(resolve, reject)));
		else if (entry.isDirectory) {
			const reader = entry.createReader();
			for (;;) {
				const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
				if (!batch.length) break;
				for (const child of batch) await walk(child);
			}
		}
	};
	for (const entry of entries) await walk(entry);
	return files;
}
