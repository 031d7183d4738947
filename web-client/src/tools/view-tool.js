// Just looking: no op, so every role may. The desktop orbits with the mouse; a headset user looks around.
export class ViewTool {
	constructor() {
		this.id = 'view';
		this.title = 'View';
		this.kind = null;
		this.hint = 'Drag to orbit, the wheel to zoom, right-drag to pan. In a headset: look around, squeeze to grab.';
	}
}
