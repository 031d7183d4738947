// Where the room's voices are heard: one WebAudio graph. Each remote voice goes
//   stream ─ MediaStreamSource ─ Gain (that person's volume) ─┬─ Analyser (what I hear of them; voice activity)
//                                                             ├─ Panner (HRTF, at their avatar's head) ─ master ─ speakers
//                                                             └─ the mix bus ─ Analyser (everything I hear)
// and the master also feeds a left and a right Analyser, so that a test (and a curious developer) can measure
// where a voice comes from. The listener is the camera: the headset in VR, the orbit camera on a desktop, so
// voices are placed in stereo both ways.
//
// Chromium plays a received WebRTC stream into WebAudio only while the stream is also attached to a playing
// media element, so each voice has a muted <audio> element as well (it makes no sound of its own).
import { Quaternion, Vector3 } from 'three';

const FFT = 4096;
const _position = new Vector3();
const _quaternion = new Quaternion();
const _scale = new Vector3();
const _forward = new Vector3();
const _up = new Vector3();
const _head = new Vector3();
const _headQ = new Quaternion();

export class VoiceMixer {
	constructor(context = new AudioContext({ latencyHint: 'interactive' })) {
		this.context = context;
		this.master = context.createGain();
		this.master.connect(context.destination);
		this.mixBus = context.createGain();
		this.mix = this.analyser();
		this.mixBus.connect(this.mix);
		const split = context.createChannelSplitter(2);
		this.master.connect(split);
		this.left = this.analyser();
		this.right = this.analyser();
		split.connect(this.left, 0);
		split.connect(this.right, 1);
		this.voices = new Map(); // participant -> {stream, audio, source, gain, analyser, panner}
		this.volumes = new Map(); // participant -> 0..2, kept when their voice comes back
		this.localSource = null;
	}

	analyser() {
		const node = this.context.createAnalyser();
		node.fftSize = FFT;
		node.smoothingTimeConstant = 0.5;
		return node;
	}

	/** Start the graph (browsers keep an AudioContext suspended until the page was clicked or a key pressed). */
	resume() {
		return this.context.state === 'suspended' ? this.context.resume().catch(() => {}) : Promise.resolve();
	}

	/** Play `stream` as `participant`'s voice (replacing the one they had). Returns its analyser. */
	add(participant, stream) {
		this.remove(participant);
		const audio = new Audio();
		audio.muted = true;
		audio.srcObject = stream;
		audio.play().catch(() => {});
		const source = this.context.createMediaStreamSource(stream);
		const gain = this.context.createGain();
		gain.gain.value = this.volumes.get(participant) ?? 1;
		const analyser = this.analyser();
		const panner = new PannerNode(this.context, {
			panningModel: 'HRTF', distanceModel: 'inverse', refDistance: 1, maxDistance: 50, rolloffFactor: 1,
		});
		source.connect(gain);
		gain.connect(analyser);
		gain.connect(panner);
		gain.connect(this.mixBus);
		panner.connect(this.master);
		const voice = { stream, audio, source, gain, analyser, panner };
		this.voices.set(participant, voice);
		return analyser;
	}

	/** Stop playing `participant` at once. */
	remove(participant) {
		const voice = this.voices.get(participant);
		if (!voice) return;
		this.voices.delete(participant);
		voice.source.disconnect();
		voice.gain.disconnect();
		voice.panner.disconnect();
		voice.audio.pause();
		voice.audio.srcObject = null;
	}

	/** Set `participant`'s volume (0: silent, 1: as sent, up to 2). */
	setVolume(participant, volume) {
		const value = Math.max(0, Math.min(2, volume));
		this.volumes.set(participant, value);
		const voice = this.voices.get(participant);
		if (voice) voice.gain.gain.setTargetAtTime(value, this.context.currentTime, 0.02);
	}

	volume(participant) {
		return this.volumes.get(participant) ?? 1;
	}

	/** An analyser of my own microphone (not played: nobody hears themselves). */
	listenTo(stream) {
		this.localSource?.disconnect();
		this.localSource = this.context.createMediaStreamSource(stream);
		const analyser = this.analyser();
		this.localSource.connect(analyser);
		return analyser;
	}

	/** Per frame: the listener at `camera`'s world pose, each voice at its head (`headOf(id, position,
	 * quaternion)` -> whether known); an unknown head is heard from just in front. */
	update(camera, headOf) {
		if (this.context.state !== 'running') return;
		camera.matrixWorld.decompose(_position, _quaternion, _scale);
		_forward.set(0, 0, -1).applyQuaternion(_quaternion);
		_up.set(0, 1, 0).applyQuaternion(_quaternion);
		const listener = this.context.listener;
		const t = this.context.currentTime;
		setXYZ(listener.positionX, listener.positionY, listener.positionZ, _position, t);
		setXYZ(listener.forwardX, listener.forwardY, listener.forwardZ, _forward, t);
		setXYZ(listener.upX, listener.upY, listener.upZ, _up, t);
		for (const [participant, voice] of this.voices) {
			if (!headOf(participant, _head, _headQ)) _head.copy(_forward).multiplyScalar(0.5).add(_position);
			const p = voice.panner;
			setXYZ(p.positionX, p.positionY, p.positionZ, _head, t);
		}
	}

	/** The level (dB) at `hz` of an analyser's spectrum. */
	levelAt(analyser, hz) {
		const bins = new Float32Array(analyser.frequencyBinCount);
		analyser.getFloatFrequencyData(bins);
		const width = this.context.sampleRate / analyser.fftSize;
		const centre = Math.round(hz / width);
		let best = -Infinity;
		for (let i = Math.max(0, centre - 2); i <= Math.min(bins.length - 1, centre + 2); i++) best = Math.max(best, bins[i]);
		return best;
	}

	close() {
		for (const participant of [...this.voices.keys()]) this.remove(participant);
		this.context.close().catch(() => {});
	}
}

function setXYZ(x, y, z, v, t) {
	x.setTargetAtTime(v.x, t, 0.015);
	y.setTargetAtTime(v.y, t, 0.015);
	z.setTargetAtTime(v.z, t, 0.015);
}
