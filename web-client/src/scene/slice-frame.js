// A slice plane's place in the model. The room shares a plane in patient LPS mm {origin, u, v, width_mm,
// height_mm} (docs/protocol.md); the scene draws it as a unit quad whose local x runs along u (the image's
// rows, left to right), local y up the image (−v) and local z along u × (−v), scaled to the plane's size in
// mm, then mapped to model space by the meshes' own PatientFrame. So it sits exactly where the pixels are, and
// moves, scales and clips with the model.
import { Matrix4, Vector3 } from 'three';

const _o = new Vector3();
const _x = new Vector3();
const _y = new Vector3();
const _z = new Vector3();
const _m = new Matrix4();

export class SliceFrame {
	/** The matrix from the unit quad to model space of `plane` ({origin, u, v, width_mm, height_mm}), into `target`. */
	static matrixOf(plane, patient, target = new Matrix4()) {
		_x.fromArray(plane.u).multiplyScalar(plane.width_mm);
		_y.fromArray(plane.v).multiplyScalar(-plane.height_mm);
		_z.fromArray(plane.u).cross(_o.fromArray(plane.v).negate()).normalize(); // 1 mm thick
		_o.fromArray(plane.origin);
		_m.makeBasis(_x, _y, _z).setPosition(_o); // quad -> LPS mm
		return target.multiplyMatrices(patient.toModel, _m);
	}

	/** The LPS {origin, u, v} of the quad placed by `matrix` (quad -> model space), rounded to 1 µm and 1e-6. */
	static planeOf(matrix, patient) {
		_m.multiplyMatrices(patient.toLps, matrix); // quad -> LPS mm
		_m.extractBasis(_x, _y, _z);
		_o.setFromMatrixPosition(_m);
		const u = _x.normalize();
		const v = _y.normalize().negate();
		v.addScaledVector(u, -u.dot(v)).normalize(); // exactly orthogonal, as the server wants
		const round = (x, k) => Math.round(x * k) / k;
		return {
			origin: _o.toArray().map((x) => round(x, 1e3)),
			u: u.toArray().map((x) => round(x, 1e6)),
			v: v.toArray().map((x) => round(x, 1e6)),
		};
	}
}
