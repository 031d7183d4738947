"""The export bundle and its offline verification, on a real room's log.

What a bundle proves is in docs/ledger.md section 5. Every byte of every file is evidence (the signed
manifest lists them all, README.txt included), so every flipped byte must fail verification; flips inside
events.jsonl must name the flipped event's seq (or the checkpoint whose root it breaks). The zip container's
own metadata (timestamps, extra fields) is not evidence: a flip there may pass, but only if every file
still reads back byte for byte.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from bundles import EVM_RECEIPT, KEY, OTHER_KEY, resign, with_checkpoints

from sessions.ledger.bundle import (
    ANCHORS,
    CHECKPOINTS,
    EVENTS,
    FILES,
    KEY_PEM,
    KEY_VKEY,
    MANIFEST,
    README,
    BundleCheckpoint,
    BundleError,
    bundle_bytes,
    public_key_pem,
    write_bundle,
)
from sessions.ledger.bundle_tree import needed_nodes
from sessions.ledger.note import Checkpoint, parse_checkpoint_text, public_key_bytes, sign_checkpoint, verifier_for
from sessions.ledger.policy import cut_checkpoint
from sessions.ledger.tree import MemoryNodeStore, MerkleLog
from sessions.ledger.verify import VerifyReport, verify_bundle

SEED = 20261129


@pytest.fixture
def folder(tmp_path: Path, bundle_session) -> Path:
    return write_bundle(tmp_path / "bundle", bundle_session.contents, bundle_session.key)


def failing(report: VerifyReport):
    assert not report.ok, "a tampered bundle was accepted"
    return report.failure


def line_seq_at(data: bytes, position: int) -> int:
    """The seq of the events.jsonl line holding byte `position` (a newline belongs to its line)."""
    return data[:position].count(b"\n") + 1


# ---- a faithful export verifies -------------------------------------------------------------------------


def test_a_real_rooms_export_verifies_from_a_folder_a_zip_and_bytes(tmp_path: Path, bundle_session, folder: Path):
    zip_path = write_bundle(tmp_path / "room.zip", bundle_session.contents, bundle_session.key)
    reports = [verify_bundle(folder), verify_bundle(zip_path), verify_bundle(zip_path.read_bytes()),
               verify_bundle(folder, strict=True, trusted_key=public_key_bytes(KEY))]
    merkle = MerkleLog(MemoryNodeStore())
    for leaf in bundle_session.contents.leaves:
        merkle.append_data(leaf)
    for report in reports:
        assert report.ok, report.failure
        assert report.events == len(bundle_session.contents.leaves) == bundle_session.sizes[-1]
        assert report.root == merkle.root().hex()
        assert report.checkpoints == len(bundle_session.sizes)
        assert report.local_anchors == len(bundle_session.sizes)
        assert report.evm_anchors == 1 and report.evm_checked == 0
        assert report.vkey == verifier_for(bundle_session.contents.origin, KEY).vkey()
    assert sorted(p.name for p in folder.iterdir()) == sorted([*FILES, MANIFEST])
    assert zip_path.read_bytes() == bundle_bytes(bundle_session.contents, bundle_session.key)  # reproducible zip bytes


def test_the_bundle_holds_exactly_the_leaf_bytes_and_only_pseudonyms(bundle_session, folder: Path):
    lines = (folder / EVENTS).read_bytes().split(b"\n")
    assert lines.pop() == b""
    assert lines == list(bundle_session.contents.leaves)
    text = b"".join((folder / name).read_bytes() for name in [*FILES, MANIFEST]).decode("utf-8")
    assert "Name of ines" in text  # display names are what the log holds (the room's participants chose them)
    for secret in ("DOE", "PID-", "ACC-", "Saint Nowhere", "1.2.840"):  # patient identifiers and DICOM UIDs
        assert secret not in text


def test_a_zip_of_the_folder_with_its_top_folder_verifies(tmp_path: Path, folder: Path):
    archive = shutil.make_archive(str(tmp_path / "zipped"), "zip", root_dir=folder.parent, base_dir=folder.name)
    assert verify_bundle(archive).ok


# ---- every flipped byte is caught ---------------------------------------------------------------------

FLIPS = {EVENTS: 160, CHECKPOINTS: 70, ANCHORS: 50, KEY_VKEY: 30, KEY_PEM: 30, README: 40, MANIFEST: 50}


@pytest.mark.parametrize("name", sorted(FLIPS))
def test_every_flipped_byte_of_every_file_is_caught(folder: Path, bundle_session, name: str):
    rng = random.Random(f"{SEED}:{name}")
    original = (folder / name).read_bytes()
    positions = rng.sample(range(len(original)), min(FLIPS[name], len(original)))
    for position in positions:
        flipped = bytearray(original)
        flipped[position] ^= 1 << rng.randrange(8)
        (folder / name).write_bytes(bytes(flipped))
        try:
            report = verify_bundle(folder)
        except BundleError:
            continue  # refused as not a bundle at all: also caught
        failure = failing(report)
        if name == EVENTS:
            seq = line_seq_at(original, position)
            assert failure.seq == seq or (failure.seq is None and failure.checkpoint is not None), failure
            if failure.checkpoint is not None:  # the first checkpoint covering the flipped event
                assert failure.checkpoint == next(n for n, s in enumerate(bundle_session.sizes, 1) if s >= seq)
        elif name == CHECKPOINTS:
            assert failure.checkpoint is not None or failure.file == CHECKPOINTS, failure
        else:
            assert failure.file in (name, KEY_VKEY, KEY_PEM) or failure.checkpoint is not None, failure
    (folder / name).write_bytes(original)
    assert verify_bundle(folder).ok


def test_a_flip_anywhere_in_the_zip_is_caught_or_changes_no_file(bundle_session):
    data = bundle_bytes(bundle_session.contents, bundle_session.key)
    files = _unzip(data)
    rng = random.Random(SEED)
    caught = 0
    for position in rng.sample(range(len(data)), 250):
        flipped = bytearray(data)
        flipped[position] ^= 1 << rng.randrange(8)
        try:
            report = verify_bundle(bytes(flipped))
        except BundleError:
            caught += 1
            continue
        if report.ok:  # only container metadata changed: the evidence must be intact
            assert _unzip(bytes(flipped)) == files, f"flip at {position} accepted with changed contents"
        else:
            caught += 1
    assert caught > 200


def _unzip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


# ---- events removed, moved, added -------------------------------------------------------------------------


def _edit_events(folder: Path, edit) -> None:
    lines = (folder / EVENTS).read_bytes().split(b"\n")[:-1]
    (folder / EVENTS).write_bytes(b"".join(line + b"\n" for line in edit(lines)))


@pytest.mark.parametrize(("edit", "seq", "why"), [
    (lambda lines: lines[:40], 41, "ends at seq 40"),
    (lambda lines: lines[:-1], 60, "ends at seq 59"),
    (lambda lines: [*lines[:12], lines[14], lines[13], lines[12], *lines[15:]], 13, "holds seq 15"),
    (lambda lines: [*lines[:6], *lines[7:]], 7, "holds seq 8"),
    (lambda lines: [*lines[:20], lines[20], *lines[20:]], 22, "holds seq 21"),
    (lambda lines: [*lines[:30], lines[30].replace(b'"room":"room-1"', b'"room":"room-2"'), *lines[31:]], 31,
     "room 'room-2'"),
    (lambda lines: [*lines, lines[-1].replace(b'"seq":60', b'"seq":61')], 61, "not covered"),
], ids=["truncated", "last-dropped", "reordered", "deleted", "inserted", "other-room", "appended"])
def test_truncated_reordered_deleted_and_inserted_events_name_the_first_bad_seq(folder: Path, edit, seq, why):
    _edit_events(folder, edit)
    failure = failing(verify_bundle(folder))
    assert failure.seq == seq and why in failure.message, failure
    resign(folder)  # even with a manifest that lists the edited file, the events are refused
    assert failing(verify_bundle(folder)).seq == seq


def test_a_file_cut_short_inside_a_line_is_unterminated(folder: Path):
    data = (folder / EVENTS).read_bytes()
    (folder / EVENTS).write_bytes(data[: data.index(b"\n", 1000) - 5])
    failure = failing(verify_bundle(folder))
    assert "no final newline" in failure.message and failure.seq == line_seq_at(data, 1000)


def test_an_altered_but_canonical_event_fails_the_checkpoint_that_covers_it(folder: Path, bundle_session):
    _edit_events(folder, lambda lines: [*lines[:24], lines[24].replace(b"Ventrikel", b"Ventrikal"), *lines[25:]])
    resign(folder)
    failure = failing(verify_bundle(folder))
    assert failure.checkpoint == 3 and failure.seq is None and "seq 19 to 27" in failure.message, failure


def test_a_missing_file_and_an_extra_file(folder: Path, tmp_path: Path):
    assert verify_bundle(folder).ok
    (folder / "notes.txt").write_text("my notes")  # anything outside the signed manifest is refused
    failure = failing(verify_bundle(folder))
    assert failure.file == "notes.txt" and "manifest" in failure.message
    archive = shutil.make_archive(str(tmp_path / "extra"), "zip", root_dir=folder)
    assert failing(verify_bundle(Path(archive))).file == "notes.txt"
    (folder / "notes.txt").unlink()
    (folder / "more").mkdir()
    assert failing(verify_bundle(folder)).file == "more/"
    (folder / "more").rmdir()
    (folder / ANCHORS).unlink()
    assert failing(verify_bundle(folder)).file == ANCHORS


# ---- signatures and keys --------------------------------------------------------------------------------


def _note_checkpoint(note: str) -> Checkpoint:
    return parse_checkpoint_text(note[: note.index("\n\n") + 1])


def test_a_checkpoint_signed_with_another_key_is_caught(tmp_path: Path, bundle_session):
    checkpoints = list(bundle_session.contents.checkpoints)
    checkpoint = _note_checkpoint(checkpoints[3].note)
    checkpoints[3] = BundleCheckpoint(sign_checkpoint(checkpoint, checkpoint.origin, OTHER_KEY),
                                      checkpoints[3].anchorings)
    bundle = write_bundle(tmp_path / "b", with_checkpoints(bundle_session, checkpoints), KEY)
    failure = failing(verify_bundle(bundle))
    assert failure.checkpoint == 4 and "no signature by" in failure.message


def test_a_witness_cosignature_is_ignored_as_the_spec_says(tmp_path: Path, bundle_session):
    checkpoints = list(bundle_session.contents.checkpoints)
    checkpoint = _note_checkpoint(checkpoints[2].note)
    witness = sign_checkpoint(checkpoint, "witness.example", OTHER_KEY)
    checkpoints[2] = BundleCheckpoint(checkpoints[2].note + witness.split("\n\n")[1], checkpoints[2].anchorings)
    assert verify_bundle(write_bundle(tmp_path / "b", with_checkpoints(bundle_session, checkpoints), KEY)).ok


def test_a_bundle_re_signed_with_another_key_passes_only_until_the_key_is_pinned(tmp_path: Path, bundle_session):
    checkpoints = [BundleCheckpoint(sign_checkpoint(c, c.origin, OTHER_KEY), ()) for c in
                   (_note_checkpoint(b.note) for b in bundle_session.contents.checkpoints)]
    contents = with_checkpoints(bundle_session, checkpoints)
    forged = write_bundle(tmp_path / "forged", replace(contents, anchors=(), chain_head=None), OTHER_KEY)
    assert verify_bundle(forged).ok  # self-consistent: which is why the report says to pin the key
    failure = failing(verify_bundle(forged, trusted_key=public_key_bytes(KEY)))
    assert failure.file == KEY_VKEY and "not the trusted key" in failure.message


def test_key_files_must_agree(folder: Path):
    (folder / KEY_PEM).write_bytes(public_key_pem(public_key_bytes(OTHER_KEY)))
    resign(folder)
    assert failing(verify_bundle(folder)).file == KEY_PEM


# ---- checkpoints that contradict each other --------------------------------------------------------------


def test_a_fork_two_roots_for_one_size_is_caught(tmp_path: Path, bundle_session):
    checkpoints = list(bundle_session.contents.checkpoints)
    original = _note_checkpoint(checkpoints[1].note)
    fork = Checkpoint(original.origin, original.size, bytes(32), original.time)
    checkpoints.insert(2, BundleCheckpoint(sign_checkpoint(fork, fork.origin, KEY)))
    failure = failing(verify_bundle(write_bundle(tmp_path / "b", with_checkpoints(bundle_session, checkpoints), KEY)))
    assert failure.checkpoint == 3 and "fork" in failure.message


def test_a_signed_checkpoint_of_another_history_is_inconsistent(tmp_path: Path, bundle_session):
    """The server signs a checkpoint over a rewritten event 5: its root is not the events' root."""
    leaves = list(bundle_session.contents.leaves)
    leaves[4] = leaves[4].replace(b"Ventrikel", b"Ventricle")
    merkle = MerkleLog(MemoryNodeStore())
    for leaf in leaves[:18]:
        merkle.append_data(leaf)
    checkpoints = list(bundle_session.contents.checkpoints)
    _, note = cut_checkpoint(merkle, bundle_session.contents.origin, KEY, _note_checkpoint(checkpoints[1].note).time)
    checkpoints[1] = BundleCheckpoint(note)
    contents = with_checkpoints(bundle_session, checkpoints)
    failure = failing(verify_bundle(write_bundle(tmp_path / "anchored", contents, KEY)))
    assert failure.checkpoint == 2 and "another checkpoint of that size" in failure.message  # the anchor differs
    unanchored = [BundleCheckpoint(c.note) for c in checkpoints]
    contents = replace(contents, checkpoints=unanchored, anchors=(), chain_head=None)
    failure = failing(verify_bundle(write_bundle(tmp_path / "unanchored", contents, KEY)))
    assert failure.checkpoint == 2 and "signed root" in failure.message  # and the events disagree


def test_sizes_and_times_never_go_back(tmp_path: Path, bundle_session):
    checkpoints = list(bundle_session.contents.checkpoints)
    checkpoints[2], checkpoints[3] = checkpoints[3], checkpoints[2]
    failure = failing(verify_bundle(write_bundle(tmp_path / "b", with_checkpoints(bundle_session, checkpoints), KEY)))
    assert failure.checkpoint == 4 and "below" in failure.message


# ---- anchors ------------------------------------------------------------------------------------------------


def _edit_json(folder: Path, name: str, edit) -> None:
    document = json.loads((folder / name).read_text(encoding="utf-8"))
    edit(document)
    (folder / name).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    resign(folder)


@pytest.mark.parametrize(("edit", "why"), [
    (lambda d: d["records"].pop(2), "is not in anchors.json"),
    (lambda d: d["records"][1].update(root="00" * 32), "is not the hash of its fields"),
    (lambda d: d["records"][1].update(room="someone-else"), "is not the hash of its fields"),
    (lambda d: d.update(chain_head={"index": 0, "hash": "00" * 32}), "does not follow record"),
], ids=["record-removed", "root-rewritten", "room-rewritten", "head-rolled-back"])
def test_tampered_anchor_records_are_caught(folder: Path, edit, why):
    _edit_json(folder, ANCHORS, edit)
    assert why in failing(verify_bundle(folder)).message


def test_a_receipt_must_match_its_record(folder: Path):
    _edit_json(folder, CHECKPOINTS, lambda d: d["checkpoints"][4]["anchorings"][0]["receipt"].update(time=5))
    failure = failing(verify_bundle(folder))
    assert failure.checkpoint == 5 and "receipt differs" in failure.message


def test_on_chain_anchors_are_checked_through_rpc_check(folder: Path, bundle_session):
    seen = []

    def on_chain(checkpoint, room, receipt):
        seen.append((checkpoint.size, room, receipt["tx_hash"]))
        return None

    report = verify_bundle(folder, rpc_check=on_chain)
    assert report.ok and report.evm_checked == 1
    assert seen == [(bundle_session.sizes[1], bundle_session.contents.room, EVM_RECEIPT["tx_hash"])]
    failure = failing(verify_bundle(folder, rpc_check=lambda *_: "no such transaction on chain"))
    assert failure.checkpoint == 2 and "no such transaction" in failure.message


# ---- strict mode and bad input ------------------------------------------------------------------------------


def test_strict_mode_refuses_a_signed_but_non_canonical_event(tmp_path: Path, bundle_session):
    leaves = list(bundle_session.contents.leaves)
    leaves[9] = leaves[9].replace(b'{"at":', b'{"at": ', 1)  # whitespace: not canonical, same tail
    merkle = MerkleLog(MemoryNodeStore())
    for leaf in leaves:
        merkle.append_data(leaf)
    _, note = cut_checkpoint(merkle, bundle_session.contents.origin, KEY, 1_800_000_000_000)
    contents = with_checkpoints(bundle_session, [BundleCheckpoint(note)])
    bundle = write_bundle(tmp_path / "b", replace(contents, leaves=leaves, anchors=(), chain_head=None), KEY)
    assert verify_bundle(bundle).ok  # the fast pass checks hashes and each line's seq and room only
    failure = failing(verify_bundle(bundle, strict=True))
    assert failure.seq == 10 and "not a canonical event" in failure.message


@pytest.mark.parametrize("make", [
    lambda tmp: tmp / "missing.zip",
    lambda tmp: (tmp / "random.zip").write_bytes(random.Random(1).randbytes(500)) and tmp / "random.zip",
    lambda tmp: (tmp / "empty").mkdir() or tmp / "empty",
    lambda tmp: _zip_of(tmp / "other.zip", {"photo.jpg": b"\xff\xd8"}),
], ids=["missing", "not-a-zip", "empty-folder", "unrelated-zip"])
def test_what_is_not_a_bundle_is_bad_input_naming_the_path(tmp_path: Path, make):
    path = make(tmp_path)
    with pytest.raises(BundleError, match=str(path).replace(".", r"\.")):
        verify_bundle(path)


def _zip_of(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


# ---- the scan keeps exactly the nodes the checks read -----------------------------------------------------


class _RecordingStore:
    """A NodeStore of `size` zero hashes that records which nodes a MerkleLog reads."""

    def __init__(self, size: int):
        self.size, self.read = size, set()

    def get(self, level: int, index: int) -> bytes:
        self.read.add((level, index))
        return bytes(32)

    def put(self, level: int, index: int, hash_: bytes) -> None:
        raise AssertionError("read-only")

    def leaf_count(self) -> int:
        return self.size


@pytest.mark.parametrize("seed", range(6))
def test_needed_nodes_are_the_nodes_merkle_log_reads(seed: int):
    rng = random.Random(seed)
    sizes = sorted({rng.randint(1, 5000) for _ in range(rng.randint(1, 40))} | {rng.choice([1, 2, 4096])})
    store = _RecordingStore(sizes[-1])
    merkle = MerkleLog(store)
    for previous, size in zip([0, *sizes], sizes, strict=False):
        merkle.root(size)
        if previous:
            merkle.consistency_proof(previous, size)
    needed = needed_nodes(sizes)
    assert {(level, index) for level, indices in needed.items() for index in indices} == store.read
