"""The server's clock for events and records: milliseconds since the Unix epoch."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Server time in ms since the Unix epoch."""
    return time.time_ns() // 1_000_000
