"""Checkpoints as C2SP signed notes, verifier keys, and the local anchor chain."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from collections.abc import Callable

import pytest
from conftest import REPO
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sessions.ledger.anchors import (
    GENESIS,
    Anchor,
    AnchorChainError,
    AnchorError,
    LocalAnchorChain,
    checkpoint_hash,
    verify_anchor_chain,
)
from sessions.ledger.merkle import leaf_hash
from sessions.ledger.note import (
    Checkpoint,
    CheckpointError,
    NoteFormatError,
    OriginMismatchError,
    SignatureError,
    UnknownKeyError,
    Verifier,
    generate_signing_key,
    parse_and_verify,
    private_key_from_pem,
    private_key_from_raw,
    private_key_to_pem,
    private_key_to_raw,
    public_key_bytes,
    sign_checkpoint,
    verifier_for,
)

# golang.org/x/mod/sumdb/note, note_test.go: a published key pair and the signature it makes of TEXT.
GO_SKEY_DATA = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"  # base64(0x01 || Ed25519 seed)
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
)
GO_SIGNATURE = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="

ORIGIN = "theatrum.example/rooms/r-8c21"
SEED = bytes(range(32))
ROOT = leaf_hash(b"theatrum")
CHECKPOINT = Checkpoint(ORIGIN, 12, ROOT, 1732838400123)


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return private_key_from_raw(SEED)


@pytest.fixture(scope="module")
def note(key: Ed25519PrivateKey) -> str:
    return sign_checkpoint(CHECKPOINT, ORIGIN, key)


@pytest.fixture(scope="module")
def verifier(key: Ed25519PrivateKey) -> Verifier:
    return verifier_for(ORIGIN, key)


# --- the format, byte for byte ---


def test_note_text_is_the_spec_format_built_by_hand(key: Ed25519PrivateKey, note: str) -> None:
    text = "theatrum.example/rooms/r-8c21\n12\n" + base64.b64encode(ROOT).decode() + "\ntime 1732838400123\n"
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key_id = hashlib.sha256(ORIGIN.encode() + b"\n" + b"\x01" + public).digest()[:4]
    signature = Ed25519PrivateKey.from_private_bytes(SEED).sign(text.encode())
    line = "\u2014 " + ORIGIN + " " + base64.b64encode(key_id + signature).decode() + "\n"
    assert note == text + "\n" + line
    assert CHECKPOINT.text() == text


def test_key_id_vkey_and_signature_match_the_go_note_package() -> None:
    go_key = private_key_from_raw(base64.b64decode(GO_SKEY_DATA)[1:])
    go_verifier = verifier_for("PeterNeumann", go_key)
    assert go_verifier.vkey() == GO_VKEY
    assert Verifier.from_vkey(GO_VKEY) == go_verifier
    assert base64.b64encode(go_verifier.key_id + go_key.sign(GO_TEXT.encode())).decode() == GO_SIGNATURE


def test_round_trip(note: str, verifier: Verifier) -> None:
    assert parse_and_verify(note, verifier) == CHECKPOINT
    assert parse_and_verify(note, verifier, origin=ORIGIN) == CHECKPOINT
    assert parse_and_verify(note, Verifier.from_vkey(verifier.vkey())) == CHECKPOINT


def test_empty_tree_checkpoint_round_trips(key: Ed25519PrivateKey, verifier: Verifier) -> None:
    empty = Checkpoint(ORIGIN, 0, hashlib.sha256(b"").digest(), 0)
    assert "\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\ntime 0\n" in sign_checkpoint(
        empty, ORIGIN, key
    )
    assert parse_and_verify(sign_checkpoint(empty, ORIGIN, key), verifier) == empty


# --- tampering ---


def _replace(old: str, new: str) -> Callable[[str], str]:
    def mutate(note: str) -> str:
        assert old in note
        return note.replace(old, new, 1)

    return mutate


def _flip_signature_byte(position: int) -> Callable[[str], str]:
    def mutate(note: str) -> str:
        head, encoded = note.rstrip("\n").rsplit(" ", 1)
        blob = bytearray(base64.b64decode(encoded))
        blob[position] ^= 0x01
        return f"{head} {base64.b64encode(bytes(blob)).decode()}\n"

    return mutate


TAMPERS = {
    "origin": (_replace(ORIGIN + "\n12", "theatrum.example/rooms/r-0000\n12"), SignatureError),
    "size": (_replace("\n12\n", "\n13\n"), SignatureError),
    "root": (
        _replace(base64.b64encode(ROOT).decode(), base64.b64encode(leaf_hash(b"x")).decode()),
        SignatureError,
    ),
    "time": (_replace("time 1732838400123", "time 1732838400124"), SignatureError),
    "signature": (_flip_signature_byte(10), SignatureError),
    "signature-last-byte": (_flip_signature_byte(-1), SignatureError),
    "key-id": (_flip_signature_byte(0), UnknownKeyError),
    "key-name": (_replace("\u2014 " + ORIGIN, "\u2014 theatrum.example/rooms/r-0000"), UnknownKeyError),
    "no-signature": (lambda note: note.split("\n\n")[0] + "\n\n", NoteFormatError),
    "no-blank-line": (_replace("\n\n", "\n"), NoteFormatError),
    "size-leading-zero": (_replace("\n12\n", "\n012\n"), SignatureError),  # signature first, then syntax
    "plain-dash": (_replace("\u2014 ", "- "), NoteFormatError),
}


@pytest.mark.parametrize("name", TAMPERS)
def test_tampering_is_rejected(name: str, note: str, verifier: Verifier) -> None:
    mutate, error = TAMPERS[name]
    with pytest.raises(error):
        parse_and_verify(mutate(note), verifier)


def test_every_single_character_change_is_rejected(note: str, verifier: Verifier) -> None:
    for position, character in enumerate(note):
        for replacement in {chr(ord(character) ^ 1), "A" if character != "A" else "B", "+"} - {character}:
            tampered = note[:position] + replacement + note[position + 1 :]
            with pytest.raises(CheckpointError):
                parse_and_verify(tampered, verifier)


def test_a_checkpoint_signed_by_another_key_is_rejected(verifier: Verifier) -> None:
    with pytest.raises(UnknownKeyError):
        parse_and_verify(sign_checkpoint(CHECKPOINT, ORIGIN, generate_signing_key()), verifier)


def test_another_key_claiming_our_key_id_fails_signature_check(verifier: Verifier) -> None:
    forged = sign_checkpoint(CHECKPOINT, ORIGIN, generate_signing_key())
    head, encoded = forged.rstrip("\n").rsplit(" ", 1)
    blob = verifier.key_id + base64.b64decode(encoded)[4:]
    with pytest.raises(SignatureError):
        parse_and_verify(f"{head} {base64.b64encode(blob).decode()}\n", verifier)


def test_cosignatures_by_other_keys_are_ignored_but_a_bad_own_signature_is_not(
    note: str, verifier: Verifier
) -> None:
    witness = generate_signing_key()
    cosigned = note + sign_checkpoint(CHECKPOINT, "witness.example/w1", witness).split("\n\n")[1]
    assert parse_and_verify(cosigned, verifier) == CHECKPOINT
    assert parse_and_verify(cosigned, verifier_for("witness.example/w1", witness)) == CHECKPOINT
    bad_own = note + _flip_signature_byte(20)(note).split("\n\n")[1]
    with pytest.raises(SignatureError):
        parse_and_verify(bad_own, verifier)


def test_wrong_origin_is_rejected(note: str, verifier: Verifier) -> None:
    with pytest.raises(OriginMismatchError) as caught:
        parse_and_verify(note, verifier, origin="theatrum.example/rooms/other")
    assert caught.value.found == ORIGIN


def test_properly_signed_notes_with_a_foreign_body_are_rejected(
    key: Ed25519PrivateKey, verifier: Verifier
) -> None:
    for text in [
        CHECKPOINT.text() + "extension\n",
        "only\ntwo\n",
        CHECKPOINT.text().replace("time ", "time="),
        CHECKPOINT.text().replace(base64.b64encode(ROOT).decode(), base64.b64encode(ROOT[:31]).decode()),
        CHECKPOINT.text().replace(ORIGIN, "two words", 1),
    ]:
        blob = verifier.key_id + key.sign(text.encode())
        with pytest.raises(NoteFormatError):
            parse_and_verify(f"{text}\n\u2014 {ORIGIN} {base64.b64encode(blob).decode()}\n", verifier)


def test_too_many_signatures_are_refused(note: str, verifier: Verifier) -> None:
    line = note.split("\n\n")[1]
    with pytest.raises(NoteFormatError):
        parse_and_verify(note + line * 100, verifier)


@pytest.mark.parametrize("origin", ["", "has space", "a+b", "two\nlines"])
def test_bad_origins_cannot_be_checkpoints(origin: str) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint(origin, 1, ROOT, 0)


# --- keys ---


def test_every_mangled_vkey_is_refused() -> None:
    for start in range(len(GO_VKEY)):
        for stop in range(start + 1, len(GO_VKEY) + 1):
            if (start, stop) != (0, len(GO_VKEY)):
                with pytest.raises(NoteFormatError):
                    Verifier.from_vkey(GO_VKEY[start:stop])
    for position, character in enumerate(GO_VKEY):
        with pytest.raises(NoteFormatError):
            Verifier.from_vkey(GO_VKEY[:position] + chr(ord(character) + 1) + GO_VKEY[position + 1 :])


def test_key_serialisations_round_trip() -> None:
    key = generate_signing_key()
    assert public_key_bytes(private_key_from_pem(private_key_to_pem(key))) == public_key_bytes(key)
    assert public_key_bytes(private_key_from_raw(private_key_to_raw(key))) == public_key_bytes(key)
    assert private_key_to_pem(key).startswith(b"-----BEGIN PRIVATE KEY-----")
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(CheckpointError):
        private_key_from_pem(other)
    with pytest.raises(CheckpointError):
        private_key_from_raw(bytes(31))


# --- the local anchor chain ---


class Clock:
    def __init__(self) -> None:
        self.now = 1732838400000

    def __call__(self) -> int:
        self.now += 1000
        return self.now


@pytest.fixture
def chain(tmp_path) -> LocalAnchorChain:
    chain = LocalAnchorChain(sqlite3.connect(tmp_path / "anchors.db"), clock=Clock())
    for i in range(12):
        room = f"r-{i % 3}"
        chain.append(room, Checkpoint(f"theatrum.example/rooms/{room}", i + 1, leaf_hash(bytes([i])), i))
    return chain


def test_a_sound_chain_verifies_and_round_trips_as_json(chain: LocalAnchorChain) -> None:
    chain.verify()
    records = chain.records()
    assert [a.index for a in records] == list(range(12)) and records[0].prev_hash == GENESIS
    assert [Anchor.from_record(a.record()) for a in records] == records
    chain.verify(head=records[-1].hash)
    assert [a.index for a in chain.for_room("r-1")] == [1, 4, 7, 10]


def test_the_receipt_names_the_new_head(chain: LocalAnchorChain) -> None:
    checkpoint = Checkpoint("theatrum.example/rooms/r-9", 5, ROOT, 7)
    receipt = chain.anchor(checkpoint, "r-9")
    head = chain.head()
    assert receipt == {"backend": "local", "index": 12, "hash": head.hash.hex(), "time": head.time}
    assert (head.room, head.size, head.root, head.checkpoint_hash) == (
        "r-9",
        5,
        ROOT,
        checkpoint_hash(checkpoint),
    )


def test_checkpoint_hash_is_the_hash_of_the_signed_text(note: str) -> None:
    assert checkpoint_hash(CHECKPOINT) == hashlib.sha256(note.split("\n\n")[0].encode() + b"\n").digest()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("room", "r-x"),
        ("size", 999),
        ("root", "00" * 32),
        ("checkpoint_hash", "11" * 32),
        ("time", 1),
        ("prev_hash", "22" * 32),
        ("hash", "33" * 32),
    ],
)
def test_tampering_with_a_past_record_is_caught_at_that_index(
    chain: LocalAnchorChain, field: str, value
) -> None:
    records = [a.record() for a in chain.records()]
    records[5][field] = value
    with pytest.raises(AnchorChainError) as caught:
        verify_anchor_chain(Anchor.from_record(r) for r in records)
    assert caught.value.index == 5


def test_rewriting_a_record_changes_every_later_hash(chain: LocalAnchorChain) -> None:
    original = chain.records()
    rewritten = [*original[:5], _rehash(original[5], root=bytes(32))]
    with pytest.raises(AnchorChainError) as caught:
        verify_anchor_chain(rewritten + original[6:])
    assert caught.value.index == 6  # the record itself is self-consistent; its successor no longer links
    for anchor in original[6:]:
        rewritten.append(_rehash(anchor, prev_hash=rewritten[-1].hash))
    verify_anchor_chain(rewritten)  # a full rewrite is internally consistent...
    assert all(new.hash != old.hash for new, old in zip(rewritten[5:], original[5:], strict=True))
    with pytest.raises(AnchorChainError):  # ...but not with the head witnessed before the rewrite
        verify_anchor_chain(rewritten, head=original[-1].hash)


@pytest.mark.parametrize(
    ("edit", "index"),
    [
        (lambda r: r[:4] + r[5:], 4),  # deleted
        (lambda r: [*r[:4], r[5], r[4], *r[6:]], 4),  # reordered
        (lambda r: [*r[:4], r[3], *r[4:]], 4),  # duplicated
        (lambda r: r[1:], 0),  # first record missing
    ],
)
def test_deleted_reordered_duplicated_records_are_caught(chain: LocalAnchorChain, edit, index: int) -> None:
    with pytest.raises(AnchorChainError) as caught:
        verify_anchor_chain(edit(chain.records()))
    assert caught.value.index == index


def test_a_truncated_chain_fails_the_witnessed_head(chain: LocalAnchorChain) -> None:
    records = chain.records()
    with pytest.raises(AnchorChainError):
        verify_anchor_chain(records[:-1], head=records[-1].hash)
    verify_anchor_chain(records[6:], previous=records[5], head=records[-1].hash)


def test_stored_records_cannot_be_updated_or_deleted(chain: LocalAnchorChain, tmp_path) -> None:
    conn = sqlite3.connect(tmp_path / "anchors.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE anchor_chain SET size = 1 WHERE idx = 3")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM anchor_chain WHERE idx = 11")
    reopened = LocalAnchorChain(conn)
    assert reopened.head() == chain.head()
    appended = reopened.append("r-0", CHECKPOINT)
    assert (appended.index, appended.prev_hash) == (12, chain.records()[11].hash)
    reopened.verify()


@pytest.mark.parametrize(
    "change",
    [{"hash": "AB" * 32}, {"root": "00"}, {"size": -1}, {"index": "3"}, {"room": 3}, {"extra": 1}],
)
def test_malformed_anchor_records_are_refused(chain: LocalAnchorChain, change: dict) -> None:
    with pytest.raises(AnchorError):
        Anchor.from_record({**chain.head().record(), **change})


def _rehash(anchor: Anchor, **changes) -> Anchor:
    fields = {**anchor.__dict__, **changes}
    draft = Anchor(**fields)
    return Anchor(**{**fields, "hash": draft.computed_hash()})


def test_the_documented_example_note_verifies_with_the_documented_key() -> None:
    doc = (REPO / "docs" / "ledger.md").read_text()
    note = doc.split("key: never use it):\n\n```\n", 1)[1].split("```", 1)[0]
    vkey = doc.split("Its verifier key: `", 1)[1].split("`", 1)[0]
    checkpoint = parse_and_verify(note, Verifier.from_vkey(vkey))
    assert (checkpoint.origin, checkpoint.size, checkpoint.time) == (
        "theatrum.example/rooms/r-8c21",
        2,
        1732838402000,
    )
    assert f"`{checkpoint_hash(checkpoint).hex()}`" in doc
    anchor = Anchor.from_record(
        {
            **json.loads(doc.split("hashes these bytes:\n\n```\n", 1)[1].split("\n```", 1)[0]),
            "hash": doc.split("giving `hash` = `", 1)[1].split("`", 1)[0],
        }
    )
    verify_anchor_chain([anchor])
    assert (anchor.root, anchor.checkpoint_hash) == (checkpoint.root, checkpoint_hash(checkpoint))
