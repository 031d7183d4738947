"""When to cut a checkpoint of a room's log, and how: the policy and the cut, both pure.

A checkpoint is cut every `every_events` new events, or `every_seconds` after the previous checkpoint if
events arrived since, and always when the room closes (if the close left events uncovered). The cut signs
the tree head {origin, size, root, time} as a C2SP signed note whose key name is the origin (as the
tlog-checkpoint spec recommends), so a witness reading the note knows the log it speaks for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sessions.ledger.note import Checkpoint, sign_checkpoint

DEFAULT_ORIGIN_PREFIX = "theatrum.local/rooms"


class TreeHead(Protocol):
    """What a cut reads of a log: its size and its root at any size (a MerkleLog, a room's EventLog)."""

    @property
    def size(self) -> int: ...

    def root(self, size: int | None = None) -> bytes: ...


@dataclass(frozen=True)
class CheckpointPolicy:
    """Cut after `every_events` new events, or `every_seconds` after the last cut if events arrived since."""

    every_events: int = 100
    every_seconds: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.every_events, bool) or not isinstance(self.every_events, int) or self.every_events < 1:
            raise ValueError(f"every_events must be an integer >= 1, got {self.every_events!r}")
        if not self.every_seconds > 0:
            raise ValueError(f"every_seconds must be > 0, got {self.every_seconds!r}")

    def due(self, size: int, covered: int, since_ms: int, now_ms: int) -> bool:
        """Whether to cut now. Requires `covered` = the size of the last checkpoint (0: none), and
        `since_ms` = its time (or, without one, when the room's first uncovered event was seen)."""
        new = size - covered
        if new <= 0:
            return False
        return new >= self.every_events or now_ms - since_ms >= self.every_seconds * 1000

    def deadline(self, size: int, covered: int, since_ms: int) -> int | None:
        """The time (ms) at which the clock alone makes a cut due, or None if nothing is uncovered."""
        if size <= covered:
            return None
        return since_ms + round(self.every_seconds * 1000)

    @staticmethod
    def due_at_close(size: int, covered: int) -> bool:
        """At room close: cut whenever events are uncovered. Requires covered <= size."""
        return size > covered


def room_origin(room: str, prefix: str = DEFAULT_ORIGIN_PREFIX) -> str:
    """The checkpoint origin (and key name) of a room's log: "<prefix>/<room>". Requires a room pseudonym."""
    return f"{prefix.rstrip('/')}/{room}"


def cut_checkpoint(
    tree: TreeHead, origin: str, key: Ed25519PrivateKey, now_ms: int, size: int | None = None
) -> tuple[Checkpoint, str]:
    """(checkpoint, signed note) of the tree at `size` (default: the head), signed under key name `origin`.

    Requires 0 < size <= tree.size: an empty tree proves nothing and is never checkpointed.
    """
    size = tree.size if size is None else size
    if not 0 < size <= tree.size:
        raise ValueError(f"checkpoint size must be in [1, {tree.size}], got {size}")
    checkpoint = Checkpoint(origin, size, tree.root(size), now_ms)
    return checkpoint, sign_checkpoint(checkpoint, origin, key)
