// One WebRTC connection that carries one person's voice to one listener: on the speaker's page a 'send' link
// (it offers its microphone), on the listener's a 'receive' link (it answers and plays). Audio only, Opus.
//
// Candidates: a description is sent once ICE gathering is complete, or after GATHER_MS with what was found by
// then; candidates found later follow one by one (trickle). On loopback and LAN gathering takes milliseconds,
// so one offer and one answer usually set up the call, which keeps a class of 40 to 80 signals.
// `link` numbers the connection on the speaker's side: answers and candidates of an older one are ignored.
//
// Events: 'track' {stream} (receive links), 'state' (connectionState changed: new, connecting, connected,
// disconnected, failed, closed).

const GATHER_MS = 1000;

export class VoiceLink extends EventTarget {
	/** `send(data)`: signal `data` to the peer; `iceServers`: RTCIceServer list (GET /api/rooms/{id}/voice). */
	constructor({ peer, link, direction, iceServers, send }) {
		super();
		this.peer = peer;
		this.link = link;
		this.direction = direction;
		this.send = send;
		this.described = false; // our description went out: later candidates are trickled
		this.pendingCandidates = []; // theirs, until their description is set
		this.stream = null;
		this.createdAt = performance.now();
		this.connectedAt = null;
		this.pc = new RTCPeerConnection({ iceServers, bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
		this.pc.addEventListener('icecandidate', (e) => {
			if (this.described) this.signal({ type: 'candidate', candidate: e.candidate ? e.candidate.toJSON() : null });
		});
		this.pc.addEventListener('connectionstatechange', () => {
			if (this.pc.connectionState === 'connected' && this.connectedAt === null) this.connectedAt = performance.now();
			this.dispatchEvent(new Event('state'));
		});
		this.pc.addEventListener('track', (e) => {
			this.stream = e.streams[0] ?? new MediaStream([e.track]);
			this.dispatchEvent(new MessageEvent('track', { data: { stream: this.stream } }));
		});
	}

	get state() {
		return this.pc.connectionState;
	}

	get closed() {
		return this.pc.connectionState === 'closed' || this.pc.signalingState === 'closed';
	}

	/** Speaker: offer `track` (of `stream`), send only. */
	async offer(track, stream) {
		this.pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
		await this.pc.setLocalDescription();
		await this.gathered();
		this.describe('offer');
	}

	/** Listener: answer an offer, receive only. */
	async answer(sdp) {
		await this.pc.setRemoteDescription({ type: 'offer', sdp });
		await this.addPendingCandidates();
		for (const transceiver of this.pc.getTransceivers()) transceiver.direction = 'recvonly';
		await this.pc.setLocalDescription();
		await this.gathered();
		this.describe('answer');
	}

	/** Speaker: the listener's answer. */
	async accept(sdp) {
		if (this.pc.signalingState !== 'have-local-offer') return;
		await this.pc.setRemoteDescription({ type: 'answer', sdp });
		await this.addPendingCandidates();
	}

	/** A candidate of the peer (null: no more). */
	async candidate(candidate) {
		if (this.closed) return;
		if (!this.pc.remoteDescription) {
			this.pendingCandidates.push(candidate);
			return;
		}
		await this.pc.addIceCandidate(candidate ?? undefined).catch(() => {}); // one bad candidate is not the call
	}

	async addPendingCandidates() {
		const pending = this.pendingCandidates.splice(0);
		for (const candidate of pending) await this.candidate(candidate);
	}

	/** Until ICE gathering completes, or GATHER_MS. */
	gathered() {
		if (this.pc.iceGatheringState === 'complete') return Promise.resolve();
		return new Promise((resolve) => {
			const done = () => {
				clearTimeout(timer);
				this.pc.removeEventListener('icegatheringstatechange', check);
				resolve();
			};
			const check = () => {
				if (this.pc.iceGatheringState === 'complete') done();
			};
			const timer = setTimeout(done, GATHER_MS);
			this.pc.addEventListener('icegatheringstatechange', check);
		});
	}

	describe(type) {
		if (this.closed) return;
		const sdp = this.pc.localDescription.sdp; // with every candidate found so far
		this.described = true;
		this.signal({ type, sdp });
	}

	signal(data) {
		if (!this.closed) this.send({ ...data, link: this.link });
	}

	close() {
		if (this.pc.signalingState !== 'closed') this.pc.close();
		this.dispatchEvent(new Event('state'));
	}
}
