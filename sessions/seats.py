"""Seats around the table: where each participant starts, so that nobody stands inside anybody.

The seats form rings around the table, like the tiers of an anatomical theatre. Tier t (0, 1, ...) has
SEATS_PER_TIER * (t + 1) seats, so that neighbours on every tier stand about the same distance apart. Seat
indices count tier by tier, and within a tier from the front (the patient's face: angle 0) outward to either
side in turn: 0, then +1 step, -1 step, +2 steps, ... Odd tiers are turned by half a step, so that each row
looks between the heads of the row before it.

A seat is assigned when a participant first joins: the lowest index nobody present holds. A participant who
comes back keeps their seat unless someone present holds it now (then they get the lowest free one). Seats are
state, derived from the log in order, so every client, a restart and a replay agree.

The geometry in metres (radius, rise) is the client's: it depends on the table. `docs/protocol.md` gives it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

SEATS_PER_TIER = 6


@dataclass(frozen=True)
class Seat:
    """A place around the table: `index` in the room, its `tier` (0: the innermost ring) and its `angle` in degrees
    around the table's vertical axis, counter-clockwise seen from above, 0 in front of the patient."""

    index: int
    tier: int
    angle: float

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "tier": self.tier, "angle": self.angle}


def seat(index: int) -> Seat:
    """The seat with this index. Requires index >= 0."""
    if index < 0:
        raise ValueError(f"a seat index is >= 0, got {index}")
    tier, first = 0, 0
    while index >= first + tier_size(tier):
        first += tier_size(tier)
        tier += 1
    k = index - first
    size = tier_size(tier)
    step = 360.0 / size
    turns = (k + 1) // 2 * (1 if k % 2 else -1)  # 0, +1, -1, +2, -2, ...
    offset = step / 2 if tier % 2 else 0.0
    angle = (turns * step + offset + 180.0) % 360.0 - 180.0
    return Seat(index, tier, round(angle, 6))


def tier_size(tier: int) -> int:
    """How many seats tier `tier` has. Requires tier >= 0."""
    return SEATS_PER_TIER * (tier + 1)


def assign(previous: int | None, taken: Collection[int]) -> int:
    """The seat index for someone joining: `previous` (their seat last time, or None) unless it is in `taken` (the
    seats of those present), else the lowest index not taken."""
    if previous is not None and previous not in taken:
        return previous
    index = 0
    while index in taken:
        index += 1
    return index
