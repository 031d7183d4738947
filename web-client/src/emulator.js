// WebXR emulation for tests only: Meta's IWER replaces navigator.xr with an emulated headset.
// Chromium has a native navigator.xr, so the runtime must be force-installed. The device is exposed as
// window.xrDevice so that a test can move the headset and controllers and press buttons.
import { XRDevice, metaQuest3 } from 'iwer';

const DEVICES = { quest3: metaQuest3 };

export function installEmulator(name) {
	const config = DEVICES[name];
	if (!config) throw new Error(`xr-emulate: unknown device ${JSON.stringify(name)} (known: ${Object.keys(DEVICES)})`);
	const device = new XRDevice(config);
	device.installRuntime({ forceInstall: true });
	device.position.set(0, 1.6, 0); // a standing user's eyes, in the local-floor space
	window.xrDevice = device;
	return device;
}
