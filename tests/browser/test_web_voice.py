"""Voice in real browsers, with real audio: one Debian Chromium per person, each with a fake microphone that plays
its own tone (a surgeon at 440 Hz, an instructor at 880 Hz, a third person at 660 Hz), against a real
`theatrum serve`, everything in a private network whose only interface is loopback (voicing.py).

Each page measures what it hears with the AnalyserNodes the client exposes (window.__theatrumVoice): of everyone
together, of one speaker, and in each ear after the spatial panning.
- A consult of three: every page hears the two others' tones and not its own.
- A training room: a student's mic stays closed until the instructor allows it after a raised hand; "mute all"
  silences the student at every listener within 1 s, also when the student's page is patched to keep sending; a
  kicked participant's audio stops; a signal to another room's participant is refused.
- In an emulated Quest 3 (IWER), a voice whose avatar stands to the listener's left is louder in the left ear,
  and in the right ear once the listener turns around.
- A class of 40: the instructor and two listeners as Chromium pages, 37 listeners as aiortc peers in Python
  (tests/voice_peers.py) that use the same signalling; every one of them hears the 880 Hz tone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from browsing import CHROMIUM, require_module
from conftest import DICOM, IN_CI, REPO, require_path, require_tool
from serverproc import ServerProcess, zip_tree
from voicing import (
    HEARD_DB,
    PERIOD_S,
    SILENT_DB,
    SYLLABLE_S,
    NoPrivateNetwork,
    Person,
    SocketPeer,
    private_network,
    until,
    write_tone,
)

PHANTOM = DICOM / "ct-head-phantom-philips" / "DICOM" / "S21570" / "S2010"
ARTIFACTS = REPO / "tests" / "artifacts"
PEERS = REPO / "tests" / "voice_peers.py"
SURGEON_HZ, INSTRUCTOR_HZ, THIRD_HZ = 440.0, 880.0, 660.0
SILENCED_WITHIN_MS = 1000  # the issue: "mute all" silences the muted voice at every listener within 1 s
PAUSE_MS = (PERIOD_S - SYLLABLE_S) * 1000 + 100  # a tone's pause, and the analyser's window


@dataclass
class Voices:
    """The server, its study's small bone mesh, the tones, and Playwright."""

    server: ServerProcess
    mesh: str
    study: str
    tones: dict[float, Path]
    playwright: object
    profiles: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def room(self, mode: str, title: str) -> dict:
        r = self.server.api.post("/api/rooms", {"study_id": self.study, "mesh_ids": [self.mesh], "mode": mode,
                                                "title": title})
        assert r.status == 201, (r.status, r.body[:500])
        return r.json()

    def invite(self, room: dict, role: str, name: str) -> str:
        r = self.server.api.post(f"/api/rooms/{room['room']['id']}/invites", {"role": role, "name": name})
        assert r.status == 201, (r.status, r.body[:500])
        return r.json()["token"]

    def person(self, room: dict, role: str, name: str, hz: float, **options) -> Person:
        return Person(self.playwright, self.url, self.invite(room, role, name), self.tones[hz], self.profiles,
                      **options)

    def join(self, people: list[Person], room: dict, *who: tuple[str, str, float], **options) -> list[Person]:
        """A page for each (role, name, tone) in turn, each added to `people` as soon as it is up (so that the
        test closes it whatever happens next); returns them."""
        joined = []
        for role, name, hz in who:
            joined.append(self.person(room, role, name, hz, **options))
            people.append(joined[-1])
        return joined

    def events(self, room: dict) -> list[dict]:
        r = self.server.api.get(f"/api/rooms/{room['room']['id']}/events")
        assert r.status == 200, r.body[:500]
        return r.json()["events"]


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    require_tool(CHROMIUM, "Chromium (apt-get install chromium; .ci/run installs it)")
    require_path(PHANTOM, "the Philips head phantom (../shared/dicom)")
    sync_api = require_module("playwright.sync_api", "Playwright (pip install playwright)")
    root = tmp_path_factory.mktemp("voice")
    tones = {hz: write_tone(root / f"tone-{int(hz)}.wav", hz) for hz in (SURGEON_HZ, INSTRUCTOR_HZ, THIRD_HZ)}
    try:
        network = private_network()
        network.__enter__()
    except NoPrivateNetwork as error:
        reason = f"WebRTC tests need a private network namespace (root): {error}"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    server = None
    try:
        server = ServerProcess.start(root / "data", env={"THEATRUM_WORKERS": "1"})
        api = server.api
        study = api.upload_zip(zip_tree(PHANTOM))["studies"][0]["study_id"]
        r = api.post(f"/api/studies/{study}/meshes", {"presets": ["bone"], "target_triangles": 20_000})
        assert r.status in (200, 202), r.body[:500]
        answer = r.json()
        if "meshes" in answer:
            mesh = answer["meshes"][0]["id"]
        else:
            job = api.wait_job(answer["job"]["id"], lambda j: j["state"] in ("done", "failed"), server=server)
            assert job["state"] == "done", job
            mesh = job["mesh_ids"][0]
        with sync_api.sync_playwright() as playwright:
            yield Voices(server, mesh, study, tones, playwright, root)
    finally:
        if server is not None and server.stop() is None:
            server.kill_group()
        network.__exit__(None, None, None)


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def close_all(people: list[Person]) -> None:
    for person in people:
        person.close()
    errors = {p.id: p.errors for p in people if p.errors}
    assert not errors, errors


# -- a consult of three -------------------------------------------------------------------------------------------
def test_in_a_consult_each_page_hears_the_two_others_and_not_itself(voices, artifacts):
    room = voices.room("consult", "Voice consult")
    people = []
    try:
        surgeon, instructor, third = voices.join(people, room, ("surgeon", "Dr Sam", SURGEON_HZ),
                                                 ("instructor", "Dr Ines", INSTRUCTOR_HZ),
                                                 ("surgeon", "Dr Tess", THIRD_HZ))
        for person in people:  # everyone talks (a consult: everyone may)
            person.page.click("#mic-toggle")
        for person in people:
            person.wait_state(f"(s) => s.voice.isOpen('{person.id}')")
        tones = {surgeon.id: SURGEON_HZ, instructor.id: INSTRUCTOR_HZ, third.id: THIRD_HZ}
        for person in people:
            own = tones[person.id]
            for hz in tones.values():
                if hz != own:
                    person.wait_heard(hz)
        for person in people:
            own = tones[person.id]
            # Over a second of everyone talking the others are loud, and the own tone is not played: what reads at its
            # frequency is far below them (the others' coding noise and audio-processing residue, 35 to 50 dB down).
            # Played, it would be as loud as they are.
            samples = [person.levels(*tones.values()) for _ in range(3)]
            heard = {hz: max(s[hz] for s in samples) for hz in tones.values()}
            others = [heard[hz] for hz in tones.values() if hz != own]
            assert min(others) > HEARD_DB, (person.id, heard)
            assert heard[own] < max(others) - 30, (person.id, heard)
            # Each speaker is heard on its own link, and every link goes where the room says.
            for other, hz in tones.items():
                if other != person.id:
                    assert person.level(hz, other) > HEARD_DB
            summary = person.js("__theatrumVoice.summary()")
            assert sorted(summary["playing"]) == sorted(p for p in tones if p != person.id), summary
            assert set(summary["sending"].values()) == {"connected"}, summary
        # Speaking lights: everyone else shows as speaking in the voice list and the participant list.
        surgeon.page.wait_for_function(
            f"document.querySelector('#participants li[data-id=\"{instructor.id}\"]').classList.contains('speaking')",
            polling=100, timeout=5000)
        surgeon.screenshot(artifacts / "voice-consult-surgeon.png")
        instructor.screenshot(artifacts / "voice-consult-instructor.png")
        # The log holds who held the floor, never any audio or signalling.
        events = voices.events(room)
        assert [e["author"] for e in events if e["kind"] == "voice.mic"] == [surgeon.id, instructor.id, third.id]
        assert not [e for e in events if "sdp" in json.dumps(e["data"])]
    finally:
        close_all(people)


def test_a_refused_or_missing_microphone_is_said_plainly(voices, artifacts):
    room = voices.room("consult", "No microphone")
    people = []
    try:
        for without, badge, words in (("--use-fake-ui-for-media-stream", "Mic refused by the browser",
                                       "The browser refused the microphone"),
                                      ("--use-fake-device-for-media-stream", "No microphone",
                                       "No microphone was found")):
            (person,) = voices.join(people, room, ("surgeon", f"Dr {len(people)}", SURGEON_HZ), without=(without,))
            person.page.click("#mic-toggle")
            person.page.wait_for_function(f"document.getElementById('mic-state').textContent === {badge!r}",
                                          polling=50, timeout=10_000)
            assert words in person.page.text_content("#voice-reason")
            assert person.js("__theatrumVoice.summary().open") is False
            assert person.page.locator(".toast.error", has_text=words).count() == 1
        people[0].screenshot(artifacts / "voice-microphone-refused.png")
        assert [e for e in voices.events(room) if e["kind"] == "voice.mic"] == []  # the room never heard of it
        for person in people:  # a refused microphone is the browser's answer, not a page error
            person.errors[:] = [e for e in person.errors if "Permission denied" not in e and "not found" not in e]
    finally:
        close_all(people)


# -- a training room ----------------------------------------------------------------------------------------------
OFFER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
SIGNAL_JS = """([to, data]) => new Promise((resolve) =>
    theatrum.room.socket.timeout(5000).emit('signal', {to, data}, (error, ack) => resolve(error ? 'timeout' : ack)))"""


def test_in_a_training_room_the_instructor_gives_and_takes_the_floor(voices, artifacts):
    room = voices.room("training", "Voice training")
    people = []
    stranger = None
    try:
        instructor, student, lee = voices.join(people, room, ("instructor", "Dr Ines", INSTRUCTOR_HZ),
                                               ("student", "Stu", SURGEON_HZ), ("student", "Lee", THIRD_HZ))
        listeners = (instructor, lee)

        # The student's mic stays closed: the button says why, the op and a forced offer are refused.
        assert student.page.is_disabled("#mic-toggle")
        assert "raise your hand" in student.page.text_content("#voice-reason")
        assert student.op("voice.mic", on=True)["error"]["code"] == "forbidden"
        forced = student.js(SIGNAL_JS, [lee.id, {"type": "offer", "link": 1, "sdp": OFFER}])
        assert forced["error"]["code"] == "forbidden", forced

        # Two hands go up; the instructor sees them in order, allows the first and denies the second.
        student.page.click("#hand-toggle")
        student.wait_state(f"(s) => s.voice.hands.has('{student.id}')")
        lee.page.click("#hand-toggle")
        instructor.page.wait_for_selector(f"#raised-hands li[data-id='{lee.id}']", timeout=5000)
        order = instructor.page.locator("#raised-hands li[data-id]").evaluate_all("(l) => l.map((li) => li.dataset.id)")
        assert order == [student.id, lee.id]
        instructor.screenshot(artifacts / "voice-training-raised-hands.png")
        time.sleep(1.0)
        assert lee.level(SURGEON_HZ) < SILENT_DB and instructor.level(SURGEON_HZ) < SILENT_DB  # nobody heard Stu
        instructor.page.click(f"#raised-hands li[data-id='{student.id}'] button.allow")
        instructor.page.click(f"#raised-hands li[data-id='{lee.id}'] button.deny")
        student.page.wait_for_selector("#mic-toggle:not([disabled])", timeout=5000)
        student.page.click("#mic-toggle")
        for listener in listeners:
            listener.wait_heard(SURGEON_HZ)
        lee.wait_state(f"(s) => !s.voice.hands.has('{lee.id}')")
        assert lee.page.is_disabled("#mic-toggle")
        student.screenshot(artifacts / "voice-training-student-talking.png")

        # The student's page is patched to keep sending whatever the room says; "mute all" still silences it at
        # every listener within 1 s of the event, and the server relays no new offer from it.
        student.js("""() => { const v = __theatrumVoice; v.stopSending = () => {}; v.closeSending = () => {};
                             v.onEvent = () => {}; }""")
        for listener in listeners:
            listener.watch_silence(SURGEON_HZ)
        instructor.page.click("#mute-all")
        muted_at = until(lambda: next((e["at"] for e in voices.events(room) if e["kind"] == "voice.mute_all"), None),
                         "the mute_all event")
        for listener in listeners:
            silent = listener.silent_at(SURGEON_HZ)
            # Silent from within a pause that began at most a pause before the mute (else it was already quiet)
            assert -PAUSE_MS <= silent - muted_at < SILENCED_WITHIN_MS, (listener.id, silent - muted_at)
        sending = student.js("__theatrumVoice.summary().sending")
        assert "connected" in sending.values() or "disconnected" in sending.values(), sending  # still sending
        time.sleep(1.0)
        for listener in listeners:
            assert listener.level(SURGEON_HZ) < SILENT_DB
            assert student.id not in listener.js("__theatrumVoice.summary().playing")
        forced = student.js(SIGNAL_JS, [lee.id, {"type": "offer", "link": 99, "sdp": OFFER}])
        assert forced["error"]["code"] == "forbidden", forced
        assert instructor.level(SURGEON_HZ) < SILENT_DB

        # A signal to a participant of another room is refused, and never arrives there.
        other = voices.room("training", "Another class")
        stranger = SocketPeer(voices.url, voices.invite(other, "instructor", "Elsewhere"))
        assert stranger.call("op", {"kind": "voice.mic", "on": True})["ok"]  # an open mic, listening for offers
        refused = instructor.js(SIGNAL_JS, [stranger.id, {"type": "offer", "link": 1, "sdp": OFFER}])
        assert refused["error"] == {"code": "not_found", "detail": f"no participant {stranger.id!r} is in this room"}
        refused = student.js(SIGNAL_JS, [stranger.id, {"type": "request", "link": 0}])
        assert refused["error"]["code"] == "not_found"
        time.sleep(0.3)
        assert [name for name, _ in stranger.received if name == "signal"] == []

        # A kicked participant's audio stops: Lee is given the floor, talks, and is removed.
        assert instructor.op("voice.allow", participant=lee.id, allowed=True)["ok"]
        lee.page.wait_for_selector("#mic-toggle:not([disabled])", timeout=5000)
        lee.page.click("#mic-toggle")
        for listener in (instructor, student):
            listener.wait_heard(THIRD_HZ)
            listener.watch_silence(THIRD_HZ)
        assert instructor.op("participant.kick", participant=lee.id)["ok"]
        kicked_at = next(e["at"] for e in voices.events(room) if e["kind"] == "participant.kick")
        for listener in (instructor, student):
            assert -PAUSE_MS <= listener.silent_at(THIRD_HZ) - kicked_at < SILENCED_WITHIN_MS
        assert instructor.level(INSTRUCTOR_HZ) < SILENT_DB  # nobody ever played the instructor to herself

        # The log says who held the floor when; nothing of the audio or the signalling.
        kinds = [(e["kind"], e["author"]) for e in voices.events(room) if e["kind"].startswith(("voice.", "hand."))]
        assert kinds == [("hand.raise", student.id), ("hand.raise", lee.id), ("voice.allow", instructor.id),
                         ("voice.allow", instructor.id), ("voice.mic", student.id), ("voice.mute_all", instructor.id),
                         ("voice.allow", instructor.id), ("voice.mic", lee.id)]
    finally:
        if stranger is not None:
            stranger.close()
        lee_errors = [e for e in people[2].errors if "removed" not in e] if len(people) > 2 else []
        if len(people) > 2:
            people[2].errors[:] = lee_errors
        close_all(people)


# -- spatial, in an emulated headset ---------------------------------------------------------------------------
def test_in_a_headset_a_voice_to_the_left_is_louder_in_the_left_ear(voices, artifacts):
    from browsing import hold, place

    room = voices.room("consult", "Voice in VR")
    people = []
    try:
        (speaker,) = voices.join(people, room, ("surgeon", "Dr Sam", INSTRUCTOR_HZ))
        (listener,) = voices.join(people, room, ("surgeon", "Dr Vera", SURGEON_HZ), emulate="quest3")
        for person in people:
            person.page.wait_for_function("theatrum.coarse", polling=100, timeout=60_000)
        # Push-to-talk with the key: the speaker holds V.
        speaker.page.keyboard.down("v")
        speaker.wait_state(f"(s) => s.voice.isOpen('{speaker.id}')")
        listener.wait_heard(INSTRUCTOR_HZ)
        listener.page.click("#enter-vr")
        listener.page.wait_for_function("theatrum.xr.presenting", polling=50)
        head = listener.page.wait_for_function("""(id) => {
            const camera = theatrum.stage.camera;
            const p = camera.position.clone(), q = camera.quaternion.clone();
            return theatrum.avatars.headWorld(id, p, q) && p.toArray();
        }""", arg=speaker.id, polling=100, timeout=10_000).json_value()

        def difference(facing_z: float, louder: str) -> float:
            """Stand 1 m to the right (+x) of the speaker's head, look along `facing_z`: once the `louder` ear is
            louder by 3 dB (the panner glides to a new pose in a few frames), how much louder, over half a second."""
            eye = [head[0] + 1.0, head[1], head[2]]
            place(listener, "head", eye, [eye[0], eye[1], eye[2] + facing_z])
            quiet = "right" if louder == "left" else "left"
            listener.page.wait_for_function(f"""() => {{ const c = __theatrumVoice.channels({INSTRUCTOR_HZ});
                return c.{louder} > c.{quiet} + 3; }}""", polling=100, timeout=10_000)
            differences = []
            for _ in range(5):
                ears = listener.js(f"__theatrumVoice.channels({INSTRUCTOR_HZ})")
                differences.append(ears[louder] - ears[quiet])
                time.sleep(0.1)
            return min(differences)

        assert difference(-1.0, "left") > 3.0  # looking toward -z: the speaker (at -x) is on the left
        assert difference(+1.0, "right") > 3.0  # turned around: now on the right
        place(listener, "head", [head[0] + 0.8, head[1] + 0.1, head[2] + 0.3], head)  # a look at who speaks
        time.sleep(1.0)
        listener.screenshot(artifacts / "voice-vr-listener.png")

        # Push-to-talk in the headset: hold the left thumbstick; the desktop page hears the listener, then not.
        hold(listener, "left", "thumbstick", True)
        listener.wait_state(f"(s) => s.voice.isOpen('{listener.id}')")
        speaker.wait_heard(SURGEON_HZ)
        hold(listener, "left", "thumbstick", False)
        listener.wait_state(f"(s) => !s.voice.isOpen('{listener.id}')")
        speaker.page.keyboard.up("v")
        speaker.wait_state(f"(s) => !s.voice.isOpen('{speaker.id}')")
        listener.js("theatrum.xr.exit()")
        kinds = [(e["author"], e["data"]["on"]) for e in voices.events(room) if e["kind"] == "voice.mic"]
        assert kinds == [(speaker.id, True), (listener.id, True), (listener.id, False), (speaker.id, False)]
    finally:
        close_all(people)


# -- a class of 40 ------------------------------------------------------------------------------------------------
PYTHON_PEERS = 37
LISTEN_S = 3.0


def test_a_class_of_40_hears_the_instructor(voices, tmp_path, artifacts):
    require_module("aiortc", "aiortc (pip install -e '.[test]')")
    room = voices.room("training", "A class of forty")
    people = []
    peers = None
    try:
        instructor, *_ = voices.join(people, room, ("instructor", "Dr Ines", INSTRUCTOR_HZ),
                                     ("student", "Lee", THIRD_HZ), ("student", "Stu", SURGEON_HZ))
        invites = tmp_path / "invites.json"
        invites.write_text(json.dumps([voices.invite(room, "student", f"Student {i + 1}")
                                       for i in range(PYTHON_PEERS)]))
        report, ready = tmp_path / "report.json", tmp_path / "ready.json"
        peers = subprocess.Popen([sys.executable, str(PEERS), voices.url, str(invites), str(LISTEN_S), str(report),
                                  "--ready", str(ready)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        until(lambda: ready.exists() or peers.poll() is not None, "the 37 Python listeners joining", 60)
        assert ready.exists(), peers.communicate()[0].decode()[-3000:]
        instructor.wait_state("(s) => [...s.participants.values()].filter((p) => p.present).length === 40")

        instructor.page.click("#mic-toggle")  # the instructor speaks to the class
        for listener in people[1:]:
            listener.wait_heard(INSTRUCTOR_HZ)
        # All 39 calls come up from the instructor's page (while the Python listeners are still listening).
        instructor.page.wait_for_function(
            "Object.values(__theatrumVoice.summary().sending).filter((s) => s === 'connected').length === 39",
            polling=100, timeout=20_000)
        summary = instructor.js("__theatrumVoice.summary()")
        instructor.screenshot(artifacts / "voice-class-of-40.png")
        output = peers.communicate(timeout=120)[0].decode()
        assert peers.returncode == 0, output[-3000:]
        results = json.loads(report.read_text())

        # Every Python listener heard the 880 Hz tone, on a call that never failed, with nothing refused.
        assert len(results["peers"]) == PYTHON_PEERS
        for peer in results["peers"]:
            heard = peer["heard"].get(instructor.id)
            assert heard is not None, peer
            assert abs(heard["peak_hz"] - INSTRUCTOR_HZ) < 5 and heard["snr_db"] > 30, peer
            assert heard["seconds"] >= LISTEN_S - 0.05, peer  # all of it came, however late (the report waits for it)
            assert "failed" not in peer["states"][instructor.id] and "closed" not in peer["states"][instructor.id], peer
            assert peer["refused"] == [] and peer["errors"] == [], peer
        # And the two pages in Chromium; the instructor sent to all 39 and every call is up.
        for listener in people[1:]:
            assert listener.level(INSTRUCTOR_HZ) > HEARD_DB
            assert listener.js("__theatrumVoice.summary().refusedOffers") == 0
        assert len(summary["sending"]) == 39 and set(summary["sending"].values()) == {"connected"}, summary
        assert summary["receiving"] == {}  # nobody else talks: nothing comes back up
    finally:
        if peers is not None and peers.poll() is None:
            peers.kill()
            peers.wait()
        close_all(people)
