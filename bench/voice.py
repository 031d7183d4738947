"""Voice benchmark: the server's CPU for signalling a class, next to poses; and the time from join to first audio.

    .venv/bin/python bench/voice.py [--window 10] [--joins 5]

Everything runs on loopback inside a private network namespace (as the browser tests: tests/browser/voicing.py;
it needs root), against a real `theatrum serve` in its own process, whose CPU (user + system, /proc) is read over
each measured window.

1. Server CPU, a training room of 30 (an instructor, two students given the floor, 27 listening), the clients being
   python-socketio in this process:
   - poses (the reference): every participant sends its head pose 20 times a second, the server batches them on its
     20 Hz tick;
   - signalling: the three speakers talk by push-to-talk, each opening its mic every 2 s and closing it after 1 s
     (the `voice.mic` ops are logged); at each opening every other participant asks for the audio and the real
     exchange follows through the relay: the offer (a 4 KB SDP, the size Chromium sends), the answer (1.5 KB) and
     two ICE candidates each way. That is 29 calls set up per opening, 43 a second: far more churn than a class;
   - both at once.
   The ratio is each row's CPU over the poses row's.
2. Time from join to first audio heard, two Chromium pages (tests/browser/voicing.py's flags, a fake microphone
   playing a tone): a speaker talks in a consult, a listener opens the room's link; from the listener's navigation
   to the moment its voice activity detector first hears the speaker (the median of `--joins`). The reference,
   measured in the same run: two RTCPeerConnections in one blank page of the same browser, the same microphone,
   with no server at all, from creating the offer to the same detector hearing the tone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "tests", REPO / "tests" / "browser"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

POSE_HZ = 20.0
SPEAKERS = 3
PEOPLE = 30
OPEN_EVERY_S = 2.0
OPEN_FOR_S = 1.0
OFFER_BYTES, ANSWER_BYTES = 4000, 1500
SIGNALS_PER_CALL = 7  # the request, the offer, the answer, two candidates each way


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sdp(size: int) -> str:
    line = "a=candidate-like padding of a session description\r\n"
    return "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n" + line * (size // len(line))


# ---- 1. server CPU ------------------------------------------------------------------------------------------------

class Member:
    """One participant of the class over python-socketio: sends poses, answers offers, asks open mics."""

    def __init__(self, url: str, token: str):
        import socketio

        self.url, self.token = url, token
        self.sio = socketio.AsyncClient(reconnection=False)
        self.id = ""
        self.open: set[str] = set()
        self.signalling = False
        self.counts = {"signals": 0, "refused": 0}
        self.sio.on("snapshot", self.on_snapshot)
        self.sio.on("event", self.on_event)
        self.sio.on("signal", self.on_signal)

    async def join(self) -> None:
        await self.sio.connect(self.url, auth={"token": self.token}, transports=["websocket"], wait_timeout=20)
        while not self.id:
            await asyncio.sleep(0.01)

    def on_snapshot(self, snapshot: dict) -> None:
        self.id = snapshot["you"]["id"]

    async def on_event(self, event: dict) -> None:
        if event["kind"] != "voice.mic":
            return
        if event["data"]["on"]:
            self.open.add(event["author"])
            if self.signalling and event["author"] != self.id:
                await self.signal(event["author"], {"type": "request", "link": 0})
        else:
            self.open.discard(event["author"])

    async def on_signal(self, message: dict) -> None:
        peer, data = message["from"], message["data"]
        if data["type"] == "request" and self.id in self.open:  # I am a speaker: offer, then two candidates
            await self.signal(peer, {"type": "offer", "link": 1, "sdp": sdp(OFFER_BYTES)})
            for port in (50_000, 50_001):
                await self.signal(peer, {"type": "candidate", "link": 1, "candidate": candidate(port)})
        elif data["type"] == "offer":  # I listen: answer, then two candidates
            await self.signal(peer, {"type": "answer", "link": 1, "sdp": sdp(ANSWER_BYTES)})
            for port in (60_000, 60_001):
                await self.signal(peer, {"type": "candidate", "link": 1, "candidate": candidate(port)})

    async def signal(self, to: str, data: dict) -> None:
        self.counts["signals"] += 1
        await self.sio.emit("signal", {"to": to, "data": data})

    async def pose(self, t: float) -> None:
        yaw = 0.3 * math.sin(t)  # looking around a little
        head = {"position": [0.3 * (hash(self.id) % 7) / 7, 1.6, 0.5],
                "quaternion": [0.0, math.sin(yaw / 2), 0.0, math.cos(yaw / 2)]}
        await self.sio.emit("pose", {"head": head})


def candidate(port: int) -> dict:
    return {"candidate": f"candidate:1 1 udp 2122260223 127.0.0.1 {port} typ host generation 0", "sdpMid": "0",
            "sdpMLineIndex": 0}


async def run_load(members: list[Member], speakers: list[Member], seconds: float, *, poses: bool,
                   signalling: bool) -> None:
    """Send the load for `seconds`."""
    for member in members:
        member.signalling = signalling
    stop = time.monotonic() + seconds

    async def pose_loop(member: Member) -> None:
        offset = (hash(member.id) % 1000) / 1000 / POSE_HZ
        await asyncio.sleep(offset)
        while time.monotonic() < stop:
            await member.pose(time.monotonic())
            await asyncio.sleep(1 / POSE_HZ)

    async def talk_loop(speaker: Member, index: int) -> None:
        await asyncio.sleep(index * OPEN_EVERY_S / SPEAKERS)
        while time.monotonic() < stop:
            await speaker.sio.call("op", {"kind": "voice.mic", "on": True}, timeout=10)
            await asyncio.sleep(OPEN_FOR_S)
            await speaker.sio.call("op", {"kind": "voice.mic", "on": False}, timeout=10)
            await asyncio.sleep(OPEN_EVERY_S - OPEN_FOR_S)

    tasks = [pose_loop(m) for m in members] if poses else []
    if signalling:
        tasks += [talk_loop(s, i) for i, s in enumerate(speakers)]
    await asyncio.gather(*tasks)


async def measure_cpu(url: str, api, pid: int, window: float) -> list[tuple[str, float, int]]:
    room = api.post("/api/rooms", {"study_id": "st-bench", "mesh_ids": ["m-bench"], "mode": "training",
                                   "title": "Voice bench"}).json()
    room_id = room["room"]["id"]

    def invite(role: str, name: str) -> str:
        return api.post(f"/api/rooms/{room_id}/invites", {"role": role, "name": name}).json()["token"]

    members = [Member(url, invite("instructor", "Instructor"))]
    members += [Member(url, invite("student", f"Student {i}")) for i in range(1, PEOPLE)]
    for start in range(0, PEOPLE, 10):
        await asyncio.gather(*(m.join() for m in members[start:start + 10]))
    speakers = members[:SPEAKERS]
    for speaker in speakers[1:]:
        ack = await members[0].sio.call("op", {"kind": "voice.allow", "participant": speaker.id, "allowed": True})
        assert ack["ok"], ack
    rows = []
    for name, poses, signalling in (("idle: 30 connected, nothing sent", False, False),
                                    ("poses: 30 x 20 Hz (reference)", True, False),
                                    ("signalling: 3 speakers, push-to-talk every 2 s", False, True),
                                    ("poses and signalling together", True, True)):
        await run_load(members, speakers, 1.0, poses=poses, signalling=signalling)  # warm up
        sent = sum(m.counts["signals"] for m in members)
        before = cpu_seconds(pid)
        await run_load(members, speakers, window, poses=poses, signalling=signalling)
        await asyncio.sleep(0.3)
        rows.append((name, (cpu_seconds(pid) - before) / window, sum(m.counts["signals"] for m in members) - sent))
    for member in members:
        await member.sio.disconnect()
    await asyncio.sleep(0.5)  # let the clients' connections close before the loop does
    return rows


# ---- 2. join to first audio -----------------------------------------------------------------------------------

BARE_PAGE = """() => new Promise(async (resolve, reject) => { try {
  const t0 = performance.now();
  const stream = await navigator.mediaDevices.getUserMedia({audio: {echoCancellation: true, noiseSuppression: true,
                                                                     autoGainControl: true}});
  const a = new RTCPeerConnection(), b = new RTCPeerConnection();
  a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
  b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
  const context = new AudioContext(), analyser = context.createAnalyser();
  analyser.fftSize = 4096;
  const samples = new Float32Array(analyser.fftSize);
  b.ontrack = (e) => {
    const audio = new Audio(); audio.muted = true; audio.srcObject = e.streams[0]; audio.play();
    context.createMediaStreamSource(e.streams[0]).connect(analyser);
  };
  a.addTrack(stream.getAudioTracks()[0], stream);
  await a.setLocalDescription(); await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(); await a.setRemoteDescription(b.localDescription);
  const check = () => {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0; for (const s of samples) sum += s * s;
    if (10 * Math.log10(sum / samples.length + 1e-12) > -48) resolve(performance.now() - t0);
    else setTimeout(check, 10);
  };
  check();
} catch (error) { reject(error); } })"""


def measure_joins(playwright, url: str, api, tone: Path, joins: int) -> tuple[list[float], ...]:
    from voicing import Person

    room = api.post("/api/rooms", {"study_id": "st-bench", "mesh_ids": ["m-bench"], "mode": "consult",
                                   "title": "Join to first audio"}).json()
    room_id = room["room"]["id"]

    def invite(name: str) -> str:
        return api.post(f"/api/rooms/{room_id}/invites", {"role": "surgeon", "name": name}).json()["token"]

    speaker = Person(playwright, url, invite("Speaker"), tone, Path(tempfile.gettempdir()))
    speaker.page.click("#mic-toggle")
    speaker.wait_state(f"(s) => s.voice.isOpen('{speaker.id}')")
    ours, voice, bare = [], [], []
    for i in range(joins):
        listener = Person(playwright, url, invite(f"Listener {i}"), tone, Path(tempfile.gettempdir()))
        listener.page.wait_for_function(f"__theatrumVoice.heardAt.has('{speaker.id}')", polling=20, timeout=30_000)
        heard, joined = listener.js(f"[__theatrumVoice.heardAt.get('{speaker.id}'), __theatrumVoice.joinedAt]")
        ours.append(heard)  # ms since the navigation began
        voice.append(heard - joined)  # ms since the room's snapshot
        blank = listener.context.new_page()
        blank.goto(f"{url}/api/health")  # a page of the same origin (a secure context: loopback), nothing else in it
        bare.append(blank.evaluate(BARE_PAGE))
        listener.close()
    speaker.close()
    return ours, voice, bare


def serve(port: int, data: Path) -> None:
    """The server, in its own process: the Theatrum app with one study and one (tiny) mesh in its catalog."""
    from aiohttp import web

    from server.app import build_app
    from server.appkeys import ARTIFACTS, CATALOG
    from server.config import Settings
    from server.eventloop import new_event_loop

    app = build_app(Settings(data=data, port=port, workers=1))
    with app[CATALOG].transaction() as batch:
        batch.add_study("st-bench", "HEAD CT", "CT")
    digest = app[ARTIFACTS].put_bytes(b"glTF\x02\x00\x00\x00" + b"\x00" * 64, ".glb")
    app[CATALOG].add_mesh({"id": "m-bench", "study_id": "st-bench", "series_id": "se-bench", "preset": "bone",
                           "threshold": 300.5, "triangles": 10, "vertices": 8, "bbox_lps_mm": [[0, 0, 0], [1, 1, 1]],
                           "artifacts": {"draco": digest}})
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=new_event_loop())


def main() -> None:
    import subprocess

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=10.0, help="seconds of each CPU measurement")
    parser.add_argument("--joins", type=int, default=5, help="listeners joining, one after the other")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), Path(args.serve[1]))
        return

    from conftest import free_port
    from serverproc import Api
    from voicing import private_network, write_tone

    with private_network(), tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        data = Path(tmp) / "data"
        log = open(Path(tmp) / "server.log", "wb")  # noqa: SIM115 (read on failure)
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), str(data)],
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            api = Api("127.0.0.1", port)
            for _ in range(300):
                try:
                    if api.get("/api/health", auth=False).status == 200 and (data / "admin-token").exists():
                        break
                except OSError:
                    pass
                time.sleep(0.05)
            api = Api("127.0.0.1", port, (data / "admin-token").read_text().strip())
            url = f"http://127.0.0.1:{port}"
            rows = asyncio.run(measure_cpu(url, api, server.pid, args.window))
            from playwright.sync_api import sync_playwright

            with sync_playwright() as playwright:
                ours, voice, bare = measure_joins(playwright, url, api, write_tone(Path(tmp) / "tone.wav", 880.0),
                                           args.joins)
        except BaseException:
            log.close()
            print((Path(tmp) / "server.log").read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            server.terminate()
            server.wait(10)

    reference = rows[1][1]
    print(f"\nServer CPU, a training room of {PEOPLE} with {SPEAKERS} speakers ({args.window:g} s windows, "
          "% of one core):\n")
    print(f"| {'load':<48} | {'server CPU':>10} | {'signals/s':>9} | {'ratio to poses':>14} |")
    print(f"|{'-' * 50}|{'-' * 12}|{'-' * 11}|{'-' * 16}|")
    for name, cpu, signals in rows:
        print(f"| {name:<48} | {cpu * 100:>9.1f}% | {signals / args.window:>9.0f} | {cpu / reference:>14.2f} |")
    signalling = rows[2]
    calls = signalling[2] / args.window / SIGNALS_PER_CALL
    if calls:
        print(f"\n{calls:.0f} calls set up a second; one call (its {SIGNALS_PER_CALL} signals) costs the server "
              f"{signalling[1] * 1000 / calls:.2f} ms of CPU, the mic's ops included.")
    print(f"\nJoin to first audio heard on loopback (median of {args.joins}, ms):\n")
    print(f"| {'path':<58} | {'median':>7} | {'best':>7} |")
    print(f"|{'-' * 60}|{'-' * 9}|{'-' * 9}|")
    rows2 = (("Theatrum: the room's link opened .. the speaker heard", ours),
             ("Theatrum: the room's snapshot .. the speaker heard", voice),
             ("reference: two RTCPeerConnections in one page, no server", bare))
    for name, values in rows2:
        print(f"| {name:<58} | {statistics.median(values):>7.0f} | {min(values):>7.0f} |")
    print(f"\nratio to the reference: {statistics.median(ours) / statistics.median(bare):.1f} from the link, "
          f"{statistics.median(voice) / statistics.median(bare):.1f} from the snapshot\n")
    print(json.dumps({"cpu": rows, "join_ms": ours, "snapshot_to_audio_ms": voice, "bare_ms": bare}))


if __name__ == "__main__":
    main()
