// Decode every Draco primitive of a GLB with the decoder three.js ships (what browsers run) and print, for
// each attribute the glTF names in KHR_draco_mesh_compression, the bounds of the decoded values:
// [{name, id, min: [x, y, z], max: [x, y, z]}] per primitive, as JSON. Usage: node draco_attributes.cjs FILE.glb
'use strict';
const fs = require('fs');
const path = require('path');
const vm = require('vm');

const decoderFile = path.join(__dirname, '..', '..', 'web-client', 'node_modules', 'three', 'examples', 'jsm',
	'libs', 'draco', 'draco_decoder.js');
const sandbox = { console, WebAssembly, TextDecoder, setTimeout, clearTimeout, process, require, __dirname: path.dirname(decoderFile) };
vm.createContext(sandbox);
vm.runInContext(`${fs.readFileSync(decoderFile, 'utf8')};this.DracoDecoderModule = DracoDecoderModule;`, sandbox);

const glb = fs.readFileSync(process.argv[2]);
const jsonLength = glb.readUInt32LE(12);
const doc = JSON.parse(glb.subarray(20, 20 + jsonLength).toString('utf8'));
const bin = glb.subarray(20 + jsonLength + 8);

sandbox.DracoDecoderModule().then((draco) => {
	const out = [];
	for (const mesh of doc.meshes) {
		for (const primitive of mesh.primitives) {
			const ext = primitive.extensions.KHR_draco_mesh_compression;
			const view = doc.bufferViews[ext.bufferView];
			const bytes = bin.subarray(view.byteOffset || 0, (view.byteOffset || 0) + view.byteLength);
			const decoder = new draco.Decoder();
			const buffer = new draco.DecoderBuffer();
			buffer.Init(new Int8Array(bytes), bytes.length);
			const geometry = new draco.Mesh();
			if (!decoder.DecodeBufferToMesh(buffer, geometry).ok()) throw new Error('cannot decode');
			const attributes = [];
			for (const [name, id] of Object.entries(ext.attributes)) {
				const attribute = decoder.GetAttributeByUniqueId(geometry, id);
				const values = new draco.DracoFloat32Array();
				decoder.GetAttributeFloatForAllPoints(geometry, attribute, values);
				const n = attribute.num_components();
				const min = Array(n).fill(Infinity);
				const max = Array(n).fill(-Infinity);
				for (let i = 0; i < values.size(); i++) {
					const v = values.GetValue(i);
					min[i % n] = Math.min(min[i % n], v);
					max[i % n] = Math.max(max[i % n], v);
				}
				attributes.push({ name, id, min, max });
				draco.destroy(values);
			}
			out.push(attributes);
			draco.destroy(geometry);
			draco.destroy(buffer);
			draco.destroy(decoder);
		}
	}
	process.stdout.write(JSON.stringify(out));
});
