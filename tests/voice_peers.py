"""Listeners of a room's voice in Python: aiortc WebRTC peers that join through the real socket.io signalling.

Each peer is a participant (an invite): it connects to the room's socket, follows the open mics in the room's
state (the snapshot, then voice.mic and voice.mute_all events), asks each open mic for its audio (`signal`
request), answers the offer, and records the audio it receives. After `seconds` of audio received from a speaker it
measures the spectrum (FFT of the received frames) and reports the loudest frequency and how far it stands above
the rest. It writes one JSON report for all the peers and exits.

    python tests/voice_peers.py URL INVITES.json SECONDS REPORT.json [--ready READY_FILE]

INVITES.json is a list of invite tokens. The report: {"peers": [{id, heard: {speaker: {peak_hz, snr_db, frames,
first_audio_ms}}, states, refused, errors}], "joined_ms"}. READY_FILE is written once every peer has its snapshot.

WebRTC candidates: aioice gathers on every interface but loopback; the tests run in a network namespace where
loopback is the only one, so the peers gather on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from pathlib import Path

import aioice.ice
import numpy as np
import socketio
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []


class Peer:
    """One listener: a socket.io participant with an aiortc connection per speaker."""

    def __init__(self, url: str, token: str, seconds: float):
        self.url = url
        self.token = token
        self.seconds = seconds
        self.sio = socketio.AsyncClient(reconnection=False)
        self.id: str | None = None
        self.open: set[str] = set()
        self.links: dict[str, tuple[int, RTCPeerConnection]] = {}
        self.heard: dict[str, dict] = {}
        self.states: dict[str, list[str]] = {}
        self.refused: list[dict] = []
        self.errors: list[str] = []
        self.started = time.monotonic()
        self.ready = asyncio.Event()
        self.done = asyncio.Event()
        self.tasks: set[asyncio.Task] = set()
        self.sio.on("snapshot", self.on_snapshot)
        self.sio.on("event", self.on_event)
        self.sio.on("signal", self.on_signal)

    async def join(self) -> None:
        await self.sio.connect(self.url, auth={"token": self.token}, transports=["websocket"], wait_timeout=20)

    async def on_snapshot(self, snapshot: dict) -> None:
        self.id = snapshot["you"]["id"]
        self.open = {m["participant"] for m in snapshot["state"]["voice"]["mics"]}
        self.ready.set()
        for speaker in self.open - {self.id}:
            await self.ask(speaker)

    async def on_event(self, event: dict) -> None:
        if event["kind"] == "voice.mic":
            if event["data"]["on"]:
                self.open.add(event["author"])
                if event["author"] != self.id:
                    await self.ask(event["author"])
            else:
                await self.drop(event["author"])
        elif event["kind"] in ("participant.leave", "participant.kick"):
            await self.drop(event["data"]["participant"])

    async def drop(self, speaker: str) -> None:
        self.open.discard(speaker)
        link = self.links.pop(speaker, None)
        if link is not None:
            await link[1].close()

    async def ask(self, speaker: str) -> None:
        ack = await self.sio.call("signal", {"to": speaker, "data": {"type": "request", "link": 0}}, timeout=20)
        if not ack.get("ok"):
            self.refused.append(ack)

    async def on_signal(self, message: dict) -> None:
        speaker, data = message["from"], message["data"]
        try:
            if data["type"] == "offer":
                await self.answer(speaker, data)
            elif data["type"] == "candidate" and data.get("candidate"):
                link = self.links.get(speaker)
                if link is not None and link[0] == data["link"]:
                    init = data["candidate"]
                    candidate = candidate_from_sdp(init["candidate"].split(":", 1)[1])
                    candidate.sdpMid, candidate.sdpMLineIndex = init.get("sdpMid"), init.get("sdpMLineIndex")
                    await link[1].addIceCandidate(candidate)
        except Exception as error:  # a peer that fails is a finding, reported, not a crash of the others
            self.errors.append(f"{data.get('type')} from {speaker}: {type(error).__name__}: {error}")

    async def answer(self, speaker: str, offer: dict) -> None:
        if speaker not in self.open:
            self.refused.append({"offer from a closed mic": speaker})
            return
        old = self.links.pop(speaker, None)
        if old is not None:
            await old[1].close()
        pc = RTCPeerConnection()
        self.links[speaker] = (offer["link"], pc)
        states = self.states.setdefault(speaker, [])

        @pc.on("connectionstatechange")
        def changed() -> None:
            states.append(pc.connectionState)

        @pc.on("track")
        def track(received) -> None:
            task = asyncio.ensure_future(self.listen(speaker, received))
            self.tasks.add(task)

        await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        ack = await self.sio.call("signal", {"to": speaker, "data": {
            "type": "answer", "link": offer["link"], "sdp": pc.localDescription.sdp}}, timeout=20)
        if not ack.get("ok"):
            self.refused.append(ack)

    async def listen(self, speaker: str, track) -> None:
        """Receive `seconds` of audio once it starts (counted in samples received, not in wall time: a busy
        machine delivers the frames late, and 37 peers decoding in one process are slower than real time);
        measure its spectrum."""
        chunks, rate, first, frames, received = [], 48_000, None, 0, 0
        try:
            while received < self.seconds * rate:
                frame = await asyncio.wait_for(track.recv(), timeout=10)
                frames += 1
                samples = frame.to_ndarray().astype(np.float32).reshape(-1, len(frame.layout.channels))[:, 0]
                rate = frame.sample_rate
                if first is None:
                    if np.abs(samples).max() < 100:  # silence before the voice starts
                        continue
                    first = time.monotonic()
                chunks.append(samples)
                received += samples.size
        except Exception as error:
            self.errors.append(f"audio from {speaker} stopped: {type(error).__name__}: {error}")
        self.heard[speaker] = {"frames": frames, **spectrum(np.concatenate(chunks) if chunks else np.zeros(1), rate),
                               "first_audio_ms": None if first is None else round((first - self.started) * 1000)}
        self.done.set()

    def report(self) -> dict:
        return {"id": self.id, "heard": self.heard, "states": self.states, "refused": self.refused,
                "errors": self.errors}

    async def close(self) -> None:
        for _, pc in list(self.links.values()):
            await pc.close()
        if self.sio.connected:
            await self.sio.disconnect()


def spectrum(samples: np.ndarray, rate: int) -> dict:
    """The loudest frequency of `samples` and its height above the median of the spectrum (dB)."""
    if samples.size < rate // 10:
        return {"peak_hz": None, "snr_db": None, "seconds": samples.size / rate}
    window = np.hanning(samples.size)
    magnitude = np.abs(np.fft.rfft(samples * window))
    freqs = np.fft.rfftfreq(samples.size, 1 / rate)
    band = (freqs > 50) & (freqs < 8000)
    peak = int(np.argmax(np.where(band, magnitude, 0)))
    snr = 20 * np.log10(magnitude[peak] / (np.median(magnitude[band]) + 1e-9))
    return {"peak_hz": round(float(freqs[peak]), 1), "snr_db": round(float(snr), 1), "seconds": samples.size / rate}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("invites", type=Path)
    parser.add_argument("seconds", type=float)
    parser.add_argument("report", type=Path)
    parser.add_argument("--ready", type=Path)
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args()
    peers = [Peer(args.url, token, args.seconds) for token in json.loads(args.invites.read_text())]
    started = time.monotonic()
    await asyncio.gather(*(peer.join() for peer in peers))
    await asyncio.wait_for(asyncio.gather(*(peer.ready.wait() for peer in peers)), 30)
    joined_ms = round((time.monotonic() - started) * 1000)
    if args.ready:
        args.ready.write_text(json.dumps({"joined_ms": joined_ms}))
    with contextlib.suppress(TimeoutError):  # the report says who heard nothing
        await asyncio.wait_for(asyncio.gather(*(peer.done.wait() for peer in peers)), args.timeout)
    args.report.write_text(json.dumps({"joined_ms": joined_ms, "peers": [peer.report() for peer in peers]}))
    await asyncio.gather(*(peer.close() for peer in peers), return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
