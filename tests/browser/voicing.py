"""Helpers for the voice tests: a private network, tones, and one Chromium per person with its own microphone.

- **A private network.** WebRTC gathers candidates on every interface it finds; the tests must only ever talk to
  this machine's loopback. `private_network()` moves the test process (and so every process it starts from then
  on: the server, Chromium, the aiortc peers) into a new network namespace whose only interface is `lo`, and back
  out afterwards. Chromium then needs `--allow-loopback-in-peer-connection` to use it.
- **Tones.** Each person's microphone is a WAV file the test writes: a sine at that person's frequency, in
  syllables (on 280 ms, off 120 ms): with pauses, the browser's noise suppression does not learn the tone as
  steady noise and fade it out. A page's level at a frequency is the loudest it reads over one syllable's period.
- **One Chromium per person.** `--use-file-for-fake-audio-capture` is a browser-wide flag, so a page with a tone of
  its own is a browser of its own (`Person`), with the fake media flags of ../shared/services.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import socket
import struct
import time
import wave
from pathlib import Path

import numpy as np
from browsing import CHROMIUM, CHROMIUM_ARGS, VIEWPORT

CLONE_NEWNET = 0x40000000
SIOCSIFFLAGS = 0x8914
IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x1, 0x8, 0x40
RATE = 48_000
MEDIA_ARGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
              "--autoplay-policy=no-user-gesture-required", "--allow-loopback-in-peer-connection"]
HEARD_DB = -60.0  # a tone at least this loud in a page's analyser is heard
SILENT_DB = -85.0  # at most this loud: not heard (an empty spectrum reads -100 dB or less)


class NoPrivateNetwork(RuntimeError):
    """This process may not make a network namespace (it needs root, or CAP_SYS_ADMIN)."""


@contextlib.contextmanager
def private_network():
    """Run the block in a new network namespace with only the loopback interface, up. Raises NoPrivateNetwork."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            raise NoPrivateNetwork(os.strerror(ctypes.get_errno()))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING))
        yield
    finally:
        if libc.setns(home, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "could not return to the test's network namespace")
        os.close(home)


SYLLABLE_S, PERIOD_S = 0.28, 0.4


def write_tone(path: Path, hz: float, seconds: float = 4.0, amplitude: float = 0.4) -> Path:
    """A mono 16-bit WAV at 48 kHz: `hz` in syllables of 280 ms with 120 ms pauses (the file loops)."""
    t = np.arange(int(RATE * seconds)) / RATE
    phase = t % PERIOD_S
    envelope = (phase < SYLLABLE_S).astype(float)
    ramp = np.minimum(1.0, np.minimum(phase, SYLLABLE_S - phase).clip(0) / 0.01)  # 10 ms fades: no clicks
    samples = amplitude * np.sin(2 * np.pi * hz * t) * envelope * ramp
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes((samples * 32767).astype("<i2").tobytes())
    return path


class Person:
    """One participant: a Chromium of their own whose microphone plays `tone` (a WAV), showing one room page."""

    def __init__(self, playwright, base_url: str, token: str, tone: Path, profile: Path, *, emulate: str = "",
                 without: tuple[str, ...] = ()):
        """`without`: media flags left out (no --use-fake-ui-for-media-stream: the browser refuses the microphone;
        no --use-fake-device-for-media-stream: there is no microphone)."""
        media = [arg for arg in MEDIA_ARGS if arg not in without]
        self.browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *media, f"--use-file-for-fake-audio-capture={tone}"])
        self.context = self.browser.new_context(viewport=VIEWPORT)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        query = f"invite={token}" + (f"&xr-emulate={emulate}" if emulate else "")
        self.page.goto(f"{base_url}/?{query}")
        self.page.wait_for_function("window.theatrum && theatrum.room && theatrum.room.status === 'live'",
                                    timeout=60_000)
        self.id = self.js("theatrum.room.state.you.id")

    def js(self, expression: str, arg=None):
        return self.page.evaluate(expression, arg)

    def level(self, hz: float, peer: str | None = None) -> float:
        """What this page hears at `hz` (dB), of one speaker or of everyone: the loudest over one syllable's period
        (so that a pause between syllables does not read as silence)."""
        return self.levels(hz, peer=peer)[hz]

    def levels(self, *hz: float, peer: str | None = None) -> dict[float, float]:
        """`level` at several frequencies, over the same period."""
        loudest = self.js("""([hz, peer, period]) => new Promise((resolve) => {
            const loudest = hz.map(() => -Infinity);
            const end = performance.now() + period;
            const sample = () => {
                hz.forEach((f, i) => { loudest[i] = Math.max(loudest[i], __theatrumVoice.level(f, peer)); });
                if (performance.now() < end) setTimeout(sample, 20);
                else resolve(loudest);
            };
            sample();
        })""", [list(hz), peer, PERIOD_S * 1000])
        return dict(zip(hz, loudest, strict=True))

    def wait_heard(self, hz: float, timeout_s: float = 20.0) -> float:
        """Until this page hears `hz`; returns the level."""
        self.page.wait_for_function(f"__theatrumVoice.level({hz}) > {HEARD_DB}", polling=100,
                                    timeout=timeout_s * 1000)
        return self.level(hz)

    def watch_silence(self, hz: float) -> None:
        """Record, in the page, when (ms since the epoch) `hz` goes silent from now on: the start of the first
        stretch of silence that lasts a whole syllable period (a pause between syllables is not silence)."""
        self.js("""([hz, silent, period]) => {
            window.silentAt = window.silentAt || {};
            delete window.silentAt[hz];
            let since = null;
            const check = () => {
                const now = Date.now();
                if (__theatrumVoice.level(hz) >= silent) since = null;
                else if (since === null) since = now;
                if (since !== null && now - since >= period) window.silentAt[hz] = since;
                else setTimeout(check, 20);
            };
            check();
        }""", [hz, SILENT_DB, PERIOD_S * 1000])

    def silent_at(self, hz: float, timeout_s: float = 10.0) -> int:
        """When `hz` went silent (see watch_silence), waiting for it."""
        self.page.wait_for_function(f"window.silentAt && window.silentAt[{hz}]", polling=50,
                                    timeout=timeout_s * 1000)
        return self.js(f"window.silentAt[{hz}]")

    def op(self, kind: str, **fields) -> dict:
        """Send an op from this page; the ack, or {ok: false, error} when refused."""
        return self.js("""([kind, fields]) => theatrum.room.op(kind, fields).then(
            (ack) => ack, (e) => ({ok: false, error: {code: e.code, detail: e.message}}))""", [kind, fields])

    def wait_state(self, predicate_js: str, timeout_s: float = 10.0) -> None:
        """Until `(state) => predicate` holds for this page's room state."""
        self.page.wait_for_function(f"(({predicate_js}))(theatrum.room.state)", polling=50, timeout=timeout_s * 1000)

    def screenshot(self, path: Path) -> None:
        self.page.screenshot(path=str(path))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.browser.close()


def until(predicate, what: str, timeout_s: float = 20.0, interval: float = 0.1):
    """Poll `predicate()` until it is truthy (returned), or fail naming `what`."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class SocketPeer:
    """A plain socket.io participant (python-socketio's asyncio client, on a loop in a thread of its own): what
    the test process itself needs to be in a room beside the browsers."""

    def __init__(self, url: str, token: str):
        import asyncio
        import threading

        import socketio

        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.received: list[tuple[str, object]] = []
        self.snapshot: dict | None = None
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("*", lambda name, data: self.received.append((name, data)))
        self.sio.on("snapshot", self._on_snapshot)
        self._run(self.sio.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=10))
        until(lambda: self.snapshot, "the snapshot")
        self.id = self.snapshot["you"]["id"]

    def _on_snapshot(self, snapshot: dict) -> None:
        self.snapshot = snapshot

    def _run(self, coroutine, timeout: float = 15.0):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def call(self, name: str, data: object) -> object:
        return self._run(self.sio.call(name, data, timeout=10))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self.sio.disconnect())
        self.loop.call_soon_threadsafe(self.loop.stop)
