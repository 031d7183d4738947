"""Protocol compatibility: the official JavaScript socket.io-client (npm, run by Node) against the hub.

tests/tools/socketio_client.mjs joins a room with an invite, sends ops with acks, a resume, a volatile pose,
reconnects with `last_seq` and tries a forged token; this test checks its report against the server's log.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

from conftest import REPO, require_path
from hubtools import Lobby, until

SCRIPT = REPO / "tests" / "tools" / "socketio_client.mjs"
PACKAGE = REPO / "web-client" / "node_modules" / "socket.io-client"


async def test_the_javascript_client_speaks_the_protocol(aiohttp_server, tmp_path):
    node = shutil.which("node")
    require_path(Path(node) if node else tmp_path / "node-not-on-PATH", "node (Node.js)")
    require_path(PACKAGE, "socket.io-client (run `npm ci` in web-client)")
    room = await Lobby.open(aiohttp_server, tmp_path / "data", pose_tick_hz=20.0)
    observer = await room.client("observer", "Watcher")
    token = await room.token("instructor", "Dr Node")
    process = await asyncio.create_subprocess_exec(node, str(SCRIPT), room.url, token,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, (stdout.decode(), stderr.decode())
    report = json.loads(stdout)
    snapshot = report["snapshot"]
    you = snapshot["you"]
    await until(lambda: not room.live.room.participant(you["id"]).present, "the JS client's last leave")
    log = {event.seq: event for event in room.live.room.events_since(0)}

    assert (you["name"], you["role"], you["present"]) == ("Dr Node", "instructor", True)
    assert snapshot["seq"] == min(s for s, e in log.items() if e.kind == "participant.join" and
                                  e.data["participant"] == you["id"])
    assert snapshot["head"] == room.live.room.log.root(snapshot["seq"]).hex()

    create = report["create"]
    assert create["ok"] is True
    event = next(e for e in report["events"] if e["seq"] == create["seq"])
    logged = log[create["seq"]]
    assert (event["hash"], event["author"], event["kind"]) == (logged.hash, you["id"], "annotation.create")
    assert event["data"] == logged.data and event["data"]["length_mm"] == 13  # JSON numbers: 13.0 == 13
    await until(lambda: observer.seq >= create["seq"], "the observer sees the JS client's op")
    assert next(e for e in observer.events if e.seq == create["seq"]).hash == logged.hash

    assert report["invalid"]["ok"] is False and report["invalid"]["error"]["code"] == "invalid"
    assert report["resume"] == {"ok": True, "seq": create["seq"], "snapshot": False}
    assert [e["seq"] for e in report["events"]].count(create["seq"]) == 2  # re-sent by the resume
    assert report["pose"] == {"head": {"position": [0.1, 1.6, 0.4], "quaternion": [0, 0, 0, 1]}}

    missed = [e["seq"] for e in report["missed"]]
    assert report["resnapshots"] == 0
    *before_reconnect, last = [s for s in log if s > report["last_seq"]]
    assert log[last].kind == "participant.leave"  # the JS client's final disconnect
    assert missed == before_reconnect  # exactly the missed events (its leave and re-join), in order
    assert all(e["hash"] == log[e["seq"]].hash for e in report["missed"])
    assert report["refusal"] == {"message": "invalid or expired invite", "data": None}
    await room.close()
