// The words of an annotation, the same in its 3D label and in the panel. A measurement shows the server's
// millimetres (length_mm, computed in patient space), never a number of the client's.

export function annotationText(annotation) {
	switch (annotation.type) {
		case 'measurement': {
			const mm = `${annotation.length_mm.toFixed(2)} mm`;
			return annotation.label ? `${mm} · ${annotation.label}` : mm;
		}
		case 'point':
			return annotation.label || 'Point';
		case 'stroke':
			return annotation.label || `Stroke (${annotation.points.length} points)`;
		case 'note':
			return (annotation.text || '').split('\n')[0];
		default:
			return annotation.type;
	}
}
