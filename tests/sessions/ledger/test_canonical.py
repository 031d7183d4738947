"""The canonical leaf encoding of events: exact bytes, the float rule, refusals, and decode round trips."""

from __future__ import annotations

import math
import random
import struct

import pytest
from conftest import REPO

from sessions.ledger.canonical import CanonicalError, canonical_json, decode_event, encode_event
from sessions.ledger.merkle import leaf_hash

EVENT = {
    "seq": 7,
    "at": 1732838400123,
    "author": "p-3f9a",
    "kind": "annotation.add",
    "data": {
        "text": "Ventrikel — links\n",
        "point": [12.5, -3.0, 0.1],
        "id": "a1",
        "done": False,
        "by": None,
    },
    "room": "r-8c21",
}
GOLDEN = (
    '{"at":1732838400123,"author":"p-3f9a","data":{"by":null,"done":false,"id":"a1",'
    '"point":[12.5,-3.0,0.1],"text":"Ventrikel — links\\n"},"kind":"annotation.add","room":"r-8c21","seq":7}'
).encode()


def test_golden_event_bytes() -> None:
    assert encode_event(EVENT) == GOLDEN


def test_key_order_of_the_input_does_not_matter() -> None:
    shuffled = dict(reversed(list(EVENT.items())))
    shuffled["data"] = dict(reversed(list(EVENT["data"].items())))
    assert encode_event(shuffled) == GOLDEN


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.1, "0.1"),
        (1.0, "1.0"),
        (-0.0, "-0.0"),
        (1e16, "1e+16"),
        (1.5e-7, "1.5e-07"),
        (123456.789, "123456.789"),
        (2.0**53, "9007199254740992.0"),
        (5e-324, "5e-324"),
        (1, "1"),
        (-(2**53 - 1), "-9007199254740991"),
        ("é\u2028\x7f", '"é\u2028\x7f"'),
        ('\x01\t"\\', '"\\u0001\\t\\"\\\\"'),
        ({"b": 1, "a": [], "A": {}}, '{"A":{},"a":[],"b":1}'),
        ({"é": 1, "z": 2, "Z": 3}, '{"Z":3,"z":2,"é":1}'),
    ],
)
def test_scalar_and_container_rules(value: object, text: str) -> None:
    assert canonical_json(value) == text.encode()


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        -math.inf,
        2**53,
        -(2**53),
        (1, 2),
        b"bytes",
        {1: "int key"},
        {"ok": {"deep": [1, {2}]}},
        "lone \ud800 surrogate",
        {"\udfff": 1},
    ],
)
def test_values_without_a_canonical_encoding_are_refused(value: object) -> None:
    with pytest.raises(CanonicalError):
        canonical_json(value)


@pytest.mark.parametrize(
    "change",
    [
        {"seq": -1},
        {"seq": True},
        {"at": 1.5},
        {"author": ""},
        {"kind": 3},
        {"data": [1, 2]},
        {"room": None},
        {"extra": 1},
    ],
)
def test_events_with_bad_fields_are_refused(change: dict) -> None:
    with pytest.raises(CanonicalError):
        encode_event({**EVENT, **change})


def test_an_event_missing_a_field_is_refused() -> None:
    event = dict(EVENT)
    del event["at"]
    with pytest.raises(CanonicalError, match="missing"):
        encode_event(event)


def test_decode_round_trips_random_doubles_exactly() -> None:
    rng = random.Random(2014)
    for _ in range(2000):
        x = struct.unpack("<d", rng.randbytes(8))[0]
        if not math.isfinite(x):
            continue
        event = {**EVENT, "data": {"x": x, "xs": [x, -x, x / 3]}}
        leaf = encode_event(event)
        decoded = decode_event(leaf)
        assert decoded == event and encode_event(decoded) == leaf
        assert math.copysign(1.0, decoded["data"]["x"]) == math.copysign(1.0, x)


@pytest.mark.parametrize(
    "leaf",
    [
        GOLDEN.replace(b'"seq":7', b'"seq": 7'),
        GOLDEN.replace(b'{"at":1732838400123,', b"{").replace(b'"seq":7}', b'"seq":7,"at":1732838400123}'),
        GOLDEN.replace(b"12.5", b"1.25E1"),
        GOLDEN.replace(b"-3.0", b"-3.00"),
        GOLDEN.replace("—".encode(), b"\\u2014"),
        GOLDEN.replace(b'"seq":7', b'"seq":7,"seq":7'),
        GOLDEN.replace(b"12.5", b"NaN"),
        GOLDEN + b"\n",
        b"\xef\xbb\xbf" + GOLDEN,
        GOLDEN.replace(b"Ventrikel", b"Ventr\xffkel"),
        b"[1,2]",
    ],
)
def test_decode_refuses_anything_but_the_canonical_bytes(leaf: bytes) -> None:
    assert leaf != GOLDEN
    with pytest.raises(CanonicalError):
        decode_event(leaf)


def test_decode_accepts_the_golden_bytes() -> None:
    assert decode_event(GOLDEN) == EVENT


def test_the_documented_example_is_what_the_code_computes() -> None:
    doc = (REPO / "docs" / "ledger.md").read_text()
    line = next(text for text in doc.splitlines() if text.startswith('{"at":1732838400123,'))
    leaf = line.encode()
    hex_block = doc.split("In hex:\n\n```\n", 1)[1].split("```", 1)[0].replace("\n", "")
    assert encode_event(decode_event(leaf)) == leaf
    assert leaf.hex() == hex_block
    assert f"`{leaf_hash(leaf).hex()}`" in doc
