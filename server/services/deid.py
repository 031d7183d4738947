"""Pseudonymous ids: a keyed hash (HMAC-SHA256 with the server's secret) of the original DICOM UIDs.

The same study always gets the same id on one server (so re-uploads dedupe), yet the id reveals nothing
about the original UID without the key, and two servers give unrelated ids.
"""

from __future__ import annotations

import hashlib
import hmac


class Pseudonymizer:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the pseudonym key must be at least 16 bytes")
        self._key = key

    def _id(self, prefix: str, value: str) -> str:
        mac = hmac.new(self._key, f"{prefix}:{value}".encode(), hashlib.sha256).hexdigest()
        return f"{prefix}{mac[:20]}"

    def study(self, study_uid: str) -> str:
        return self._id("st", study_uid)

    def series(self, series_uid: str) -> str:
        return self._id("se", series_uid)

    def room(self, room_id: str) -> str:
        return self._id("rm", room_id)

    def participant(self, value: str) -> str:
        return self._id("p", value)
