// The HTTP API (docs/openapi.json) with a bearer token: JSON calls, uploads with progress, authorised blobs.

export class ApiError extends Error {
	constructor(status, code, detail) {
		super(detail || `HTTP ${status}`);
		this.status = status;
		this.code = code;
	}
}

export class Api {
	constructor(token) {
		this.token = token;
	}

	headers(extra = {}) {
		return this.token ? { Authorization: `Bearer ${this.token}`, ...extra } : { ...extra };
	}

	/** A JSON request; resolves to the parsed body, rejects with ApiError on a non-2xx answer. */
	async json(method, path, body) {
		const init = { method, headers: this.headers(body === undefined ? {} : { 'Content-Type': 'application/json' }) };
		if (body !== undefined) init.body = JSON.stringify(body);
		const response = await fetch(path, init);
		const data = await response.json().catch(() => ({}));
		if (!response.ok) throw new ApiError(response.status, data.error, data.detail);
		return data;
	}

	get(path) {
		return this.json('GET', path);
	}

	post(path, body = {}) {
		return this.json('POST', path, body);
	}

	delete(path) {
		return this.json('DELETE', path);
	}

	/** POST files as multipart/form-data; onProgress(sentBytes, totalBytes). Resolves to the JSON answer. */
	upload(path, files, onProgress) {
		const form = new FormData();
		for (const file of files) form.append('file', file, file.name);
		return new Promise((resolve, reject) => {
			const xhr = new XMLHttpRequest();
			xhr.open('POST', path);
			for (const [name, value] of Object.entries(this.headers())) xhr.setRequestHeader(name, value);
			xhr.upload.onprogress = (e) => onProgress?.(e.loaded, e.lengthComputable ? e.total : 0);
			xhr.onerror = () => reject(new ApiError(0, 'network', 'the upload failed (network error)'));
			xhr.onload = () => {
				let data = {};
				try {
					data = JSON.parse(xhr.responseText);
				} catch {
					// not JSON: keep the status
				}
				if (xhr.status >= 200 && xhr.status < 300) resolve(data);
				else reject(new ApiError(xhr.status, data.error, data.detail));
			};
			xhr.send(form);
		});
	}

	/** Save an authorised binary resource as a file named `filename` (the browser's download); rejects with
	 * ApiError (the server's code and detail) on a non-2xx answer. */
	async save(path, filename) {
		const response = await fetch(path, { headers: this.headers() });
		if (!response.ok) {
			const data = await response.json().catch(() => ({}));
			throw new ApiError(response.status, data.error, data.detail);
		}
		const url = URL.createObjectURL(await response.blob());
		const link = Object.assign(document.createElement('a'), { href: url, download: filename });
		document.body.append(link);
		link.click();
		link.remove();
		setTimeout(() => URL.revokeObjectURL(url), 60_000);
	}

	/** An object URL for an authorised binary resource (e.g. a QR code image). */
	async blobUrl(path) {
		return URL.createObjectURL(await this.blob(path));
	}

	/** An authorised binary resource as a Blob; rejects with ApiError (the server's words when it sent them). */
	async blob(path, { signal } = {}) {
		const response = await fetch(path, { headers: this.headers(), signal });
		if (!response.ok) {
			const data = await response.json().catch(() => ({}));
			throw new ApiError(response.status, data.error ?? 'http', data.detail ?? `GET ${path}: HTTP ${response.status}`);
		}
		return response.blob();
	}
}
