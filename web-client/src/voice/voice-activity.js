// Voice activity: whether a voice is speaking now, from its AnalyserNode's waveform (RMS level in dBFS, with
// hysteresis so that a word does not flicker on and off between syllables).

const ON_DB = -48; // louder than this: speaking
const OFF_DB = -56; // quieter than this for HOLD_MS: silent again
const HOLD_MS = 350;

export class VoiceActivity {
	constructor(analyser) {
		this.analyser = analyser;
		this.samples = new Float32Array(analyser.fftSize);
		this.level = -Infinity; // dBFS
		this.speaking = false;
		this.quietSince = 0;
	}

	/** Measure now (`now`: ms); returns whether speaking changed. */
	update(now) {
		this.analyser.getFloatTimeDomainData(this.samples);
		let sum = 0;
		for (let i = 0; i < this.samples.length; i++) sum += this.samples[i] * this.samples[i];
		this.level = 10 * Math.log10(sum / this.samples.length + 1e-12);
		const was = this.speaking;
		if (this.level > ON_DB) {
			this.speaking = true;
			this.quietSince = 0;
		} else if (this.level < OFF_DB) {
			if (!this.quietSince) this.quietSince = now;
			if (now - this.quietSince >= HOLD_MS) this.speaking = false;
		}
		return was !== this.speaking;
	}
}
