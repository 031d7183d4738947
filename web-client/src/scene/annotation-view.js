// Annotations in 3D: points, measurements, strokes and notes of the room state, drawn in model space with a
// fixed number of draw calls whatever their count: one instanced mesh for all markers, one for all line
// segments (measurements and strokes, as thin tubes a headset can see), one label layer. The view is
// rebuilt when the state changes (an event), never per frame.
import { Color, CylinderGeometry, Group, Matrix4, MeshStandardMaterial, Quaternion, SphereGeometry, Vector3 } from 'three';

import { ROLE_COLORS } from '../role-colors.js';
import { annotationText } from './annotation-text.js';
import { coloredInstances } from './colored-instances.js';
import { LabelLayer } from './label-layer.js';

const POINT_RADIUS = 0.0025; // m
const END_RADIUS = 0.0016;
const MEASURE_RADIUS = 0.0006;
const STROKE_RADIUS = 0.0009;
// A marker is never smaller on screen than this (radius / distance, in the world): a point placed from across
// the table stays visible; close up, its own radius holds.
const MIN_MARKER_ANGLE = 0.006;

const _a = new Vector3();
const _b = new Vector3();
const _mid = new Vector3();
const _dir = new Vector3();
const _scale = new Vector3();
const _q = new Quaternion();
const _m = new Matrix4();
const _color = new Color();
const _eye = new Vector3();
const DECLUTTER_EVERY_MS = 100;

function sameMatrix(last, matrix) {
	const e = matrix.elements;
	for (let i = 0; i < 16; i++) if (last[i] !== e[i]) return false;
	return true;
}
const UP = new Vector3(0, 1, 0);

function markers(capacity) {
	return coloredInstances(new SphereGeometry(1, 16, 12), new MeshStandardMaterial({ roughness: 0.4 }), capacity);
}

function segments(capacity) {
	return coloredInstances(new CylinderGeometry(1, 1, 1, 8, 1, false), new MeshStandardMaterial({ roughness: 0.5 }), capacity);
}

export class AnnotationView {
	constructor(stage, atlas) {
		this.stage = stage;
		this.patient = null; // the PatientFrame of the meshes, once they are in: nothing is drawn before
		this.group = new Group();
		this.group.name = 'annotations';
		this.markers = markers(256);
		this.segments = segments(1024);
		this.labels = new LabelLayer(atlas, 128, { height: 0.014, lift: 0.004 });
		this.group.add(this.markers, this.segments, this.labels);
		this.bases = new Float32Array(256 * 4); // each marker's model-space centre and radius
		this.changed = true; // the annotations changed since the last fit
		this.lastEye = new Float64Array(16); // the camera and model placement of the last fit
		this.lastWorld = new Float64Array(16);
		this.lastDeclutter = 0;
		stage.modelFrame.add(this.group);
		stage.beforeRender((camera) => this.fit(camera));
	}

	/** What depends on the viewpoint, before a frame is drawn: markers kept visible from afar, labels that
	 * would cover nearer ones moved up. */
	fit(camera) {
		if (!this.markers.count && !this.labels.count) return;
		this.group.updateWorldMatrix(true, false);
		const world = this.group.matrixWorld;
		// Nothing to do when neither the annotations, the model nor the eye moved since the last frame drawn.
		if (!this.changed && sameMatrix(this.lastEye, camera.matrixWorld) && sameMatrix(this.lastWorld, world)) return;
		this.lastEye.set(camera.matrixWorld.elements);
		this.lastWorld.set(world.elements);
		const scale = world.getMaxScaleOnAxis();
		_eye.setFromMatrixPosition(camera.matrixWorld);
		const b = this.bases;
		for (let i = 0; i < this.markers.count; i++) {
			_a.set(b[4 * i], b[4 * i + 1], b[4 * i + 2]);
			const distance = _b.copy(_a).applyMatrix4(world).distanceTo(_eye);
			const radius = Math.max(b[4 * i + 3], (distance * MIN_MARKER_ANGLE) / scale);
			_m.makeScale(radius, radius, radius).setPosition(_a);
			this.markers.setMatrixAt(i, _m);
		}
		this.markers.instanceMatrix.needsUpdate = true;
		// A head never holds still: in a headset the labels are sorted out again ten times a second, not per frame.
		const now = performance.now();
		if (this.changed || !this.stage.renderer.xr.isPresenting || now - this.lastDeclutter >= DECLUTTER_EVERY_MS) {
			this.labelRects = this.labels.declutter(camera);
			this.lastDeclutter = now;
		}
		this.changed = false;
	}

	/** Rebuild from the room state. */
	render(state) {
		if (!this.patient) return;
		this.changed = true;
		let markerCount = 0;
		let segmentCount = 0;
		let needMarkers = 0;
		let needSegments = 0;
		for (const a of state.annotations.values()) {
			if (a.type === 'point' || (a.type === 'note' && a.position)) needMarkers += 1;
			else if (a.type === 'measurement') {
				needMarkers += 2;
				needSegments += 1;
			} else if (a.type === 'stroke') needSegments += a.points.length - 1;
		}
		this.ensureCapacity(needMarkers, needSegments);
		const seen = new Set();
		for (const a of state.annotations.values()) {
			const author = state.participants.get(a.author);
			const color = a.color || ROLE_COLORS[author?.role] || '#ffcc00';
			_color.set(color);
			if (a.type === 'point' || (a.type === 'note' && a.position)) {
				this.patient.modelOf(a.position, _a);
				markerCount = this.marker(markerCount, _a, POINT_RADIUS);
				this.labels.set(a.id, annotationText(a), color, _a.x, _a.y, _a.z);
			} else if (a.type === 'measurement') {
				this.patient.modelOf(a.a, _a);
				this.patient.modelOf(a.b, _b);
				markerCount = this.marker(markerCount, _a, END_RADIUS);
				markerCount = this.marker(markerCount, _b, END_RADIUS);
				segmentCount = this.segment(segmentCount, _a, _b, MEASURE_RADIUS);
				_mid.addVectors(_a, _b).multiplyScalar(0.5);
				this.labels.set(a.id, annotationText(a), color, _mid.x, _mid.y, _mid.z);
			} else if (a.type === 'stroke') {
				this.patient.modelOf(a.points[0], _a);
				for (let i = 1; i < a.points.length; i++) {
					this.patient.modelOf(a.points[i], _b);
					segmentCount = this.segment(segmentCount, _a, _b, STROKE_RADIUS);
					_a.copy(_b);
				}
				if (a.label) {
					this.patient.modelOf(a.points[0], _a);
					this.labels.set(a.id, annotationText(a), color, _a.x, _a.y, _a.z);
				}
			}
			if (this.labels.has(a.id)) seen.add(a.id);
		}
		for (const key of [...this.labels.entries.keys()]) if (!seen.has(key)) this.labels.remove(key);
		this.markers.count = markerCount;
		this.segments.count = segmentCount;
		for (const mesh of [this.markers, this.segments]) {
			mesh.instanceMatrix.needsUpdate = true;
			mesh.instanceColor.needsUpdate = true;
		}
	}

	marker(index, at, radius) {
		if (this.bases.length < 4 * (index + 1)) {
			const grown = new Float32Array(Math.max(this.bases.length * 2, 4 * (index + 1)));
			grown.set(this.bases);
			this.bases = grown;
		}
		this.bases.set([at.x, at.y, at.z, radius], 4 * index);
		_m.makeScale(radius, radius, radius).setPosition(at);
		this.markers.setMatrixAt(index, _m);
		this.markers.setColorAt(index, _color);
		return index + 1;
	}

	segment(index, a, b, radius) {
		_dir.subVectors(b, a);
		const length = _dir.length();
		if (length < 1e-9) return index;
		_q.setFromUnitVectors(UP, _dir.divideScalar(length));
		_mid.addVectors(a, b).multiplyScalar(0.5);
		_m.compose(_mid, _q, _scale.set(radius, length, radius));
		this.segments.setMatrixAt(index, _m);
		this.segments.setColorAt(index, _color);
		return index + 1;
	}

	/** Grow the instanced buffers (by doubling) when the room holds more than they fit: an event, not a frame. */
	ensureCapacity(markerCount, segmentCount) {
		const grow = (mesh, needed, make) => {
			if (needed <= mesh.instanceMatrix.count) return mesh;
			let capacity = mesh.instanceMatrix.count;
			while (capacity < needed) capacity *= 2;
			const bigger = make(capacity);
			bigger.material.dispose();
			bigger.material = mesh.material;
			this.group.remove(mesh);
			mesh.geometry.dispose();
			mesh.dispose();
			this.group.add(bigger);
			return bigger;
		};
		this.markers = grow(this.markers, markerCount, markers);
		this.segments = grow(this.segments, segmentCount, segments);
	}
}
