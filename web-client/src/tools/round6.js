// The precision of the numbers a tool sends: a micrometre of model space, a millionth of a quaternion or scale.
// Sent rounded, an op is short and reads the same on every client.

export function round6(x) {
	return Math.round(x * 1e6) / 1e6;
}
