// Instanced meshes for things drawn many times (markers, tube segments, avatar parts, pulses): one draw call
// each, buffers written in place. The per-instance colour buffer exists from the start, so the shader
// variant is known up front (compiled ahead, no hitch when the first annotation arrives).
import { DynamicDrawUsage, InstancedBufferAttribute, InstancedMesh } from 'three';

export function coloredInstances(geometry, material, capacity) {
	const mesh = new InstancedMesh(geometry, material, capacity);
	mesh.instanceMatrix.setUsage(DynamicDrawUsage);
	mesh.instanceColor = new InstancedBufferAttribute(new Float32Array(capacity * 3).fill(1), 3).setUsage(DynamicDrawUsage);
	mesh.frustumCulled = false;
	mesh.count = 0;
	return mesh;
}
