// Push-to-talk: hold V on the keyboard, or press and hold the left controller's thumbstick in VR, to talk;
// M opens or closes the mic for longer. Keys typed into a text field are not commands.
const KEY_PUSH = 'v';
const KEY_TOGGLE = 'm';
const STICK_PRESS = 3; // xr-standard gamepad mapping: the thumbstick's click

export class PushToTalk {
	/** `voice`: the room's Voice; `xr`: the ImmersiveSession (its hands' input sources). */
	constructor(voice, xr, target = window) {
		this.voice = voice;
		this.xr = xr;
		this.keyDown = false;
		this.stickDown = false;
		target.addEventListener('keydown', (e) => this.onKey(e, true));
		target.addEventListener('keyup', (e) => this.onKey(e, false));
		target.addEventListener('blur', () => this.release());
	}

	onKey(event, down) {
		const target = event.target;
		if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement) return;
		if (event.ctrlKey || event.metaKey || event.altKey) return;
		const key = event.key.toLowerCase();
		if (key === KEY_PUSH) {
			event.preventDefault();
			if (event.repeat || down === this.keyDown) return;
			this.keyDown = down;
			this.voice.pushToTalk(down);
		} else if (key === KEY_TOGGLE && down && !event.repeat) {
			this.voice.toggleMic();
		}
	}

	/** Per frame in VR: the left thumbstick's click. */
	update() {
		let down = false;
		if (this.xr.presenting) {
			for (const hand of this.xr.hands) {
				if (hand.handedness === 'left' && hand.inputSource?.gamepad?.buttons[STICK_PRESS]?.pressed) down = true;
			}
		}
		if (down !== this.stickDown) {
			this.stickDown = down;
			this.voice.pushToTalk(down);
		}
	}

	/** The window lost focus while a key was held: let go. */
	release() {
		if (this.keyDown) {
			this.keyDown = false;
			this.voice.pushToTalk(false);
		}
	}
}
