"""`theatrum verify`: exit 0 when everything holds, 1 naming the first failing seq or checkpoint, 2 for bad
input with one line on stderr naming the file."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from bundles import KEY, OTHER_KEY

from server.cli.main import main
from sessions.ledger.bundle import EVENTS, public_key_pem, write_bundle
from sessions.ledger.note import public_key_bytes, verifier_for


@pytest.fixture
def bundle(tmp_path: Path, bundle_session) -> Path:
    return write_bundle(tmp_path / "room.zip", bundle_session.contents, bundle_session.key)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["verify", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_good_bundle_exits_0_with_a_summary(capsys, bundle: Path, bundle_session):
    code, out, err = run(capsys, bundle)
    assert code == 0 and err == ""
    assert out.startswith(f"OK {bundle}\n")
    events, checkpoints = len(bundle_session.contents.leaves), len(bundle_session.sizes)
    assert f"room {bundle_session.contents.room}: {events} events, {checkpoints} checkpoints" in out
    assert "7 local" in out and "1 EVM (0 checked on chain)" in out and "not pinned" in out


def test_json_output(capsys, bundle: Path, bundle_session):
    code, out, _ = run(capsys, bundle, "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True and report["failure"] is None
    assert report["events"] == len(bundle_session.contents.leaves)
    assert report["checkpoints"] == len(bundle_session.sizes)


def test_a_tampered_bundle_exits_1_naming_the_seq(capsys, tmp_path: Path, bundle_session):
    folder = write_bundle(tmp_path / "room", bundle_session.contents, bundle_session.key)
    lines = (folder / EVENTS).read_bytes().split(b"\n")
    del lines[16]
    (folder / EVENTS).write_bytes(b"\n".join(lines))
    code, out, err = run(capsys, folder)
    assert code == 1 and err == ""
    assert out.startswith(f"FAILED {folder}: seq 17: line 17 of events.jsonl holds seq 18")
    code, out, _ = run(capsys, folder, "--json")
    failure = json.loads(out)["failure"]
    assert code == 1 and failure["seq"] == 17 and failure["where"] == "seq 17"


def test_pinned_keys(capsys, tmp_path: Path, bundle: Path, bundle_session):
    vkey = verifier_for(bundle_session.contents.origin, KEY).vkey()
    pem = tmp_path / "server.pem"
    pem.write_bytes(public_key_pem(public_key_bytes(KEY)))
    vkey_file = tmp_path / "server.vkey"
    vkey_file.write_text(vkey + "\n")
    for key in (vkey, pem, vkey_file):
        code, out, _ = run(capsys, bundle, "--key", key)
        assert code == 0 and "not pinned" not in out
    other = tmp_path / "other.pem"
    other.write_bytes(public_key_pem(public_key_bytes(OTHER_KEY)))
    code, out, _ = run(capsys, bundle, "--key", other)
    assert code == 1 and "key.vkey" in out and "not the trusted key" in out


@pytest.mark.parametrize(("make", "says"), [
    (lambda tmp: tmp / "nowhere.zip", "no such file or folder"),
    (lambda tmp: (tmp / "notes.zip").write_text("just text") and tmp / "notes.zip", "not a bundle"),
])
def test_bad_input_exits_2_with_one_line_naming_the_file(capsys, tmp_path: Path, make, says):
    path = make(tmp_path)
    code, out, err = run(capsys, path)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"theatrum verify: error: {path}: {says}")


def test_a_bad_key_argument_exits_2(capsys, bundle: Path):
    code, _, err = run(capsys, bundle, "--key", "no-such-key-file")
    assert code == 2 and "--key no-such-key-file" in err and err.count("\n") == 1


def test_an_unreachable_rpc_node_exits_2(capsys, bundle: Path):
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, out, err = run(capsys, bundle, "--rpc", f"http://127.0.0.1:{port}")
    assert code == 2 and out == "" and f"127.0.0.1:{port}" in err and err.count("\n") == 1


def test_the_console_script(bundle: Path):
    script = Path(sys.executable).parent / "theatrum"
    done = subprocess.run([str(script), "verify", str(bundle)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK ")
