// Entry point. A test may ask for an emulated headset (?xr-emulate=quest3): the emulator must be installed
// before anything looks at navigator.xr, so it is loaded first, and only then the app. Real headsets and
// desktops never load it.
const emulate = new URLSearchParams(window.location.search).get('xr-emulate');
if (emulate) {
	const { installEmulator } = await import('./emulator.js');
	installEmulator(emulate);
}
const { start } = await import('./app.js');
start(document.getElementById('app'));
