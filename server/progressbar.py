"""A progress bar on stderr for the command line: one line per stage, redrawn in place on a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class StageProgressBar:
    """Callable as a ``reconstruction.progress.Progress``: ``bar(stage, done, total)``.

    On a terminal the current stage's bar is redrawn in place (at most ~20 times a second); elsewhere (a log,
    CI) only each stage's completion is printed, so logs stay short.
    """

    WIDTH = 30

    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._stage: str | None = None
        self._last_draw = 0.0
        self._started = time.perf_counter()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self._stage:
            self._finish_line()
            self._stage = stage
            self._started = time.perf_counter()
        now = time.perf_counter()
        complete = total > 0 and done >= total
        if self.tty and (complete or now - self._last_draw > 0.05):
            self._last_draw = now
            frac = min(1.0, done / total) if total else 0.0
            filled = int(frac * self.WIDTH)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            self.stream.write(f"\r{stage:<10} [{bar}] {done}/{total}")
            self.stream.flush()
        if complete:
            self._finish_line(done, total)
            self._stage = None

    def _finish_line(self, done: int | None = None, total: int | None = None) -> None:
        if self._stage is None:
            return
        elapsed = time.perf_counter() - self._started
        if self.tty:
            self.stream.write("\n")
        elif done is not None:
            self.stream.write(f"{self._stage:<10} {done}/{total} done in {elapsed:.2f} s\n")
        self.stream.flush()

    def close(self) -> None:
        self._finish_line()
        self._stage = None
