// The local microphone: asked for once (getUserMedia, with the browser's echo cancellation, noise suppression and
// automatic gain), then kept while the page lives, so that push-to-talk opens at once. Its `state` says clearly
// what happened when there is no sound to send:
//   'off'          not asked yet
//   'asking'       the browser is asking the user
//   'ready'        a live audio track
//   'refused'      the user or the browser's settings refused the microphone
//   'no-device'    there is no microphone
//   'unavailable'  this page cannot use microphones (not HTTPS, or no WebRTC in this browser)
//   'error'        the microphone could not start (another program holds it, a driver error)
// Events: 'change' whenever the state changes.

const CONSTRAINTS = { audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 } };

const WORDS = {
	off: 'Microphone not started',
	asking: 'Waiting for the browser to allow the microphone…',
	ready: 'Microphone ready',
	refused: 'The browser refused the microphone: allow it for this site (the icon in the address bar), then try again',
	'no-device': 'No microphone was found: plug one in or choose one in the system settings, then try again',
	unavailable: 'This page cannot use a microphone (it needs HTTPS and a browser with WebRTC)',
	error: 'The microphone could not start (is another program using it?)',
};

export class Microphone extends EventTarget {
	constructor(mediaDevices = navigator.mediaDevices) {
		super();
		this.mediaDevices = mediaDevices;
		this.state = mediaDevices?.getUserMedia ? 'off' : 'unavailable';
		this.stream = null;
		this.detail = '';
		this.pending = null;
	}

	/** What the state means, for a person. */
	get words() {
		return WORDS[this.state] ?? this.state;
	}

	get track() {
		return this.stream?.getAudioTracks()[0] ?? null;
	}

	/** The live stream, asking the browser the first time; rejects with an Error whose message is the words. */
	acquire() {
		if (this.state === 'ready' && this.track?.readyState === 'live') return Promise.resolve(this.stream);
		if (this.state === 'unavailable') return Promise.reject(new Error(this.words));
		if (this.pending) return this.pending;
		this.set('asking');
		this.pending = this.mediaDevices.getUserMedia(CONSTRAINTS).then((stream) => {
			this.stream = stream;
			this.track.addEventListener('ended', () => this.set('error', 'the microphone stopped'));
			this.set('ready');
			return stream;
		}, (error) => {
			this.set(stateOf(error), error.message);
			throw new Error(this.words);
		}).finally(() => {
			this.pending = null;
		});
		return this.pending;
	}

	set(state, detail = '') {
		this.state = state;
		this.detail = detail;
		this.dispatchEvent(new Event('change'));
	}
}

function stateOf(error) {
	if (error.name === 'NotAllowedError' || error.name === 'SecurityError') return 'refused';
	if (error.name === 'NotFoundError' || error.name === 'OverconstrainedError') return 'no-device';
	if (error.name === 'TypeError') return 'unavailable';
	return 'error';
}
