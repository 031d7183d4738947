"""A progress bar on stderr for the command line: one line per stage, redrawn in place on a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class StageProgressBar:
    """Callable as a ``reconstruction.progress.Progress``: ``bar(stage, done, total)``.

    On a terminal the current stage's bar is redrawn in place (at most ~20 times a second); elsewhere (a log,
    CI) only each stage's completion is printed, so logs stay short. A stage's time runs from its first report
    to its completion; a stage that is reported complete twice is printed once.
    """

    WIDTH = 30

    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._started: dict[str, float] = {}
        self._finished: set[str] = set()
        self._drawn: str | None = None
        self._last_draw = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if stage in self._finished and done < total:
            self._finished.discard(stage)  # the stage runs again (e.g. meshing the next preset)
            self._started.pop(stage, None)
        self._started.setdefault(stage, now)
        complete = total > 0 and done >= total
        if complete and stage in self._finished:
            return
        if self.tty and (complete or now - self._last_draw > 0.05 or self._drawn != stage):
            if self._drawn not in (None, stage):
                self.stream.write("\n")
            self._last_draw = now
            frac = min(1.0, done / total) if total else 0.0
            filled = int(frac * self.WIDTH)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            self.stream.write(f"\r{stage:<10} [{bar}] {done}/{total}")
            self._drawn = stage
        if complete:
            elapsed = now - self._started[stage]
            if self.tty:
                self.stream.write(f"  {elapsed:.2f} s\n")
                self._drawn = None
            else:
                self.stream.write(f"{stage:<10} {done}/{total} done in {elapsed:.2f} s\n")
            self._finished.add(stage)
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._drawn is not None:
            self.stream.write("\n")
            self.stream.flush()
        self._drawn = None
