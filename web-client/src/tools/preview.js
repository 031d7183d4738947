// What a tool shows locally while it works, before the hub confirms anything: a marker (the first end of a
// measurement) and a polyline (a stroke being drawn). Preallocated for the longest stroke the room takes:
// drawing allocates nothing.
import {
	BufferAttribute, BufferGeometry, DynamicDrawUsage, Line, LineBasicMaterial, Mesh, MeshBasicMaterial, SphereGeometry,
} from 'three';

export class Preview {
	/** `maxPoints`: of a stroke (the room limits' max_stroke_points). */
	constructor(stage, maxPoints) {
		this.marker = new Mesh(new SphereGeometry(0.002, 12, 8), new MeshBasicMaterial({ color: 0xffffff }));
		this.marker.visible = false;
		const geometry = new BufferGeometry();
		geometry.setAttribute('position', new BufferAttribute(new Float32Array(maxPoints * 3), 3).setUsage(DynamicDrawUsage));
		geometry.setDrawRange(0, 0);
		this.line = new Line(geometry, new LineBasicMaterial({ color: 0xffffff }));
		this.line.frustumCulled = false;
		this.count = 0;
		this.maxPoints = maxPoints;
		this.stage = stage;
		stage.modelFrame.add(this.marker, this.line);
	}

	showMarker(modelPoint) {
		this.marker.position.copy(modelPoint);
		this.marker.visible = true;
		this.stage.invalidate();
	}

	hideMarker() {
		this.marker.visible = false;
		this.stage.invalidate();
	}

	/** Start a polyline at a model-space point. */
	startLine(modelPoint) {
		this.count = 0;
		this.addPoint(modelPoint);
	}

	addPoint(modelPoint) {
		if (this.count >= this.maxPoints) return false;
		this.line.geometry.attributes.position.setXYZ(this.count++, modelPoint.x, modelPoint.y, modelPoint.z);
		this.line.geometry.attributes.position.needsUpdate = true;
		this.line.geometry.setDrawRange(0, this.count);
		this.stage.invalidate();
		return true;
	}

	clearLine() {
		this.count = 0;
		this.line.geometry.setDrawRange(0, 0);
		this.stage.invalidate();
	}
}
