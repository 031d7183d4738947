"""The canonical byte encoding of an event: the exact bytes that become a Merkle leaf.

Canonical JSON (docs/ledger.md is the specification):

- UTF-8, no byte order mark, no whitespace between tokens (separators "," and ":").
- Object keys are strings, sorted by Unicode code point; duplicate keys cannot occur.
- Strings are written as Python's `json` writes them with ensure_ascii=False: only '"', '\\' and control
  characters below U+0020 are escaped ("\\n", "\\t", ... or "\\u00XX"); everything else is raw UTF-8.
  Lone surrogates are refused. Strings are not Unicode-normalised: the bytes are what the client sent.
- Integers are JSON integers, limited to the exactly-representable range |i| <= 2**53 - 1.
- Floats must be finite (NaN and +-Infinity are refused) and are written as Python's repr: the shortest
  decimal string that round-trips to the same IEEE 754 double, always with a "." or an exponent
  ("1.0", "0.1", "-0.0", "1e+16", "1.5e-07"). So an integral float stays distinguishable from an int.
- true, false and null as in JSON. Nothing else (no tuples, bytes, sets, non-string keys).

Decoding a canonical encoding and encoding it again gives the same bytes; `decode_event` checks that.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

EVENT_FIELDS = ("at", "author", "data", "kind", "room", "seq")
MAX_SAFE_INTEGER = 2**53 - 1


class CanonicalError(ValueError):
    """A value has no canonical encoding (or bytes are not a canonical encoding). `path` names the field."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


MAX_NESTING = 64
"""How deep arrays and objects may nest in JSON read from outside (an event has 4 levels, a stroke 3)."""

_BRACKETS = {str: re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]'), bytes: re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')}


def too_deep(text: str | bytes, max_depth: int = MAX_NESTING) -> bool:
    """Whether JSON `text` nests arrays and objects deeper than `max_depth` (brackets inside strings do not
    count). Check before json.loads: a parser recursing into 100,000 brackets hits RecursionError, or overflows
    the C stack when something raised the recursion limit. A text with few brackets is answered at C speed."""
    opening = (b"[", b"{") if isinstance(text, bytes) else ("[", "{")
    if text.count(opening[0]) + text.count(opening[1]) <= max_depth:
        return False
    depth = 0
    for match in _BRACKETS[type(text)].finditer(text):
        token = match.group()
        if len(token) > 1:  # a string
            continue
        depth += 1 if token in opening else -1
        if depth > max_depth:
            return True
    return False


def canonical_json(value: Any) -> bytes:
    """The canonical JSON bytes of `value`. Requires only dict/list/str/int/float/bool/None inside."""
    _check_value(value, "$")
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":"))
    return text.encode("utf-8")


def encode_event(event: Mapping[str, Any]) -> bytes:
    """The leaf bytes of an event. Requires exactly the fields seq, at, author, kind, data, room."""
    _check_event(event)
    return canonical_json(dict(event))


def decode_event(leaf: bytes) -> dict[str, Any]:
    """The event whose canonical encoding is `leaf`. Requires `leaf` to be that exact encoding."""
    try:
        if too_deep(leaf):
            raise CanonicalError("$", f"the event nests deeper than {MAX_NESTING} levels")
        event = json.loads(leaf.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CanonicalError("$", f"not UTF-8 JSON: {error}") from error
    if not isinstance(event, dict):
        raise CanonicalError("$", "an event must be a JSON object")
    if encode_event(event) != leaf:
        raise CanonicalError("$", "valid JSON but not the canonical encoding")
    return event


def _check_event(event: Mapping[str, Any]) -> None:
    """Refuse missing, extra or mistyped event fields. Requires a mapping."""
    if not isinstance(event, Mapping):
        raise CanonicalError("$", "an event must be a mapping")
    fields = set(event)
    if fields != set(EVENT_FIELDS):
        missing, extra = sorted(set(EVENT_FIELDS) - fields), sorted(map(str, fields - set(EVENT_FIELDS)))
        raise CanonicalError("$", f"event fields: missing {missing}, unexpected {extra}")
    for name in ("seq", "at"):
        value = event[name]
        if type(value) is not int or value < 0:
            raise CanonicalError(f"$.{name}", "must be a non-negative integer")
    for name in ("author", "kind", "room"):
        if not isinstance(event[name], str) or not event[name]:
            raise CanonicalError(f"$.{name}", "must be a non-empty string")
    if not isinstance(event["data"], dict):
        raise CanonicalError("$.data", "must be a JSON object")


def _check_value(value: Any, path: str) -> None:
    """Refuse anything without a canonical encoding."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise CanonicalError(path, f"integer {value} is outside +-(2**53 - 1)")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise CanonicalError(path, f"{value} is not a finite number")
    elif isinstance(value, str):
        _check_string(value, path)
    elif isinstance(value, list):
        for position, item in enumerate(value):
            _check_value(item, f"{path}[{position}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalError(path, f"object key {key!r} is not a string")
            _check_string(key, path)
            _check_value(item, f"{path}.{key}")
    else:
        raise CanonicalError(path, f"{type(value).__name__} has no canonical JSON encoding")


def _check_string(text: str, path: str) -> None:
    """Refuse strings that are not valid Unicode scalar sequences (lone surrogates). Requires a str."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise CanonicalError(path, "string contains a lone surrogate") from error


def _refuse_constant(name: str) -> float:
    """json.loads hook: NaN and Infinity are not canonical JSON."""
    raise CanonicalError("$", f"{name} is not allowed")
