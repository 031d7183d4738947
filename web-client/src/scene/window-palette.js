// The window presets of a slice plane as a small panel of buttons in the headset: one row of labelled tiles
// just above the selected plane's top edge, facing as the plane does. The slice tool shows it while it is in
// hand in VR and picks a preset when the trigger is pressed on a tile.
import { CanvasTexture, Group, Matrix4, Mesh, MeshBasicMaterial, PlaneGeometry, SRGBColorSpace, Vector3 } from 'three';

import { SliceFrame } from './slice-frame.js';

const TILE_W = 0.045; // m
const TILE_H = 0.016;
const GAP = 0.004;
const _m = new Matrix4();
const _x = new Vector3();
const _y = new Vector3();
const _z = new Vector3();
const _p = new Vector3();

export class WindowPalette {
	constructor(parent) {
		this.group = new Group();
		this.group.name = 'window-palette';
		this.group.visible = false;
		parent.add(this.group);
		this.tiles = [];
		this.names = [];
	}

	/** Make one tile per preset name (the series' windows). */
	setPresets(names) {
		if (names.join('|') === this.names.join('|')) return;
		for (const tile of this.tiles) {
			tile.material.map.dispose();
			tile.material.dispose();
			tile.geometry.dispose();
			tile.removeFromParent();
		}
		this.names = [...names];
		this.tiles = names.map((name, index) => {
			const tile = new Mesh(new PlaneGeometry(TILE_W, TILE_H), new MeshBasicMaterial({ map: labelTexture(name), toneMapped: false }));
			tile.position.set(index * (TILE_W + GAP) + TILE_W / 2, TILE_H / 2, 0);
			tile.userData.preset = name;
			this.group.add(tile);
			return tile;
		});
	}

	/** Show the palette above the top-left corner of `fields` (a plane in LPS), or hide it (null). */
	place(fields, patient, modelScale) {
		this.group.visible = Boolean(fields && patient);
		if (!this.group.visible) return;
		SliceFrame.matrixOf(fields, patient, _m); // quad -> model space
		_m.extractBasis(_x, _y, _z);
		_p.set(-0.5, 0.5, 0).applyMatrix4(_m); // the plane's top-left corner
		_m.makeBasis(_x.normalize(), _y.normalize(), _z.normalize());
		this.group.quaternion.setFromRotationMatrix(_m);
		this.group.position.copy(_p).addScaledVector(_y, GAP / modelScale);
		this.group.scale.setScalar(1 / modelScale); // tiles keep their size in metres
	}

	/** Mark the preset in use. */
	setActive(name) {
		for (const tile of this.tiles) tile.material.color.set(tile.userData.preset === name ? 0x7fc8ff : 0xffffff);
	}

	/** The preset whose tile `raycaster` meets first, or null. */
	pick(raycaster) {
		if (!this.group.visible) return null;
		const hit = raycaster.intersectObjects(this.tiles, false)[0];
		return hit ? hit.object.userData.preset : null;
	}
}

function labelTexture(text) {
	const canvas = document.createElement('canvas');
	canvas.width = 256;
	canvas.height = 90;
	const g = canvas.getContext('2d');
	g.fillStyle = '#2b3038';
	g.fillRect(0, 0, canvas.width, canvas.height);
	g.fillStyle = '#f4f1ea';
	g.font = '48px sans-serif';
	g.textAlign = 'center';
	g.textBaseline = 'middle';
	g.fillText(text, canvas.width / 2, canvas.height / 2);
	const texture = new CanvasTexture(canvas);
	texture.colorSpace = SRGBColorSpace;
	return texture;
}
