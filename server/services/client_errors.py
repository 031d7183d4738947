"""What clients get wrong, logged without flooding the log: one line per source a minute, 20 a minute in all.

A client can send malformed input as fast as the network carries it; each refusal is a dropped connection or a
negative ack, and the log gets at most a line now and then saying so (with how many were left unsaid).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sessions.limits import RateLimiter


class ClientErrors:
    """One log line per source (a client address, a participant) a minute at most, and 20 a minute in all."""

    def __init__(self, logger: logging.Logger, per_address_per_minute: float = 1.0,
                 total_per_minute: float = 20.0, clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.clock = clock
        self._rate = per_address_per_minute / 60.0
        self._total = RateLimiter(total_per_minute / 60.0, total_per_minute)
        self._by_address: dict[str, RateLimiter] = {}
        self.suppressed = 0

    def record(self, address: str, what: str) -> bool:
        """Note malformed input from `address` (an address, or a participant); log it unless that source or
        the server is over its budget. Returns whether a line was written."""
        now = self.clock()
        if len(self._by_address) > 10_000:
            self._by_address = {a: r for a, r in self._by_address.items() if r.tokens(now) < 1}
        limiter = self._by_address.setdefault(address, RateLimiter(self._rate, 1))
        if not (limiter.allow(now) and self._total.allow(now)):
            self.suppressed += 1
            return False
        more = f" ({self.suppressed} more suppressed)" if self.suppressed else ""
        self.suppressed = 0
        self.logger.warning("%s: %s%s", address, what[:200], more)
        return True
