"""Progress reporting: a callable the pipeline calls as each stage advances.

``progress(stage, done, total)``: ``stage`` is one of "reading", "decoding", "meshing", "decimating", "writing";
``done`` and ``total`` count units of that stage (files, slices, presets). Callers may pass ``None``.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    """The default: report nothing."""
