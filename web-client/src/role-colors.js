// The colour of each role on screen (avatars, annotations, pulses, the participant list): presentation only.
// Which role may do what is the server's to say (net/permissions.js).

export const ROLE_COLORS = {
	instructor: '#e8a33d',
	surgeon: '#3d9be8',
	student: '#46c28e',
	observer: '#9aa0a6',
};
