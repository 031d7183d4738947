"""The volume cache: least recently used first out within its byte budget, one load for requests that overlap,
failures not kept, and a value larger than the whole budget served but not kept."""

from __future__ import annotations

import asyncio
import threading

import pytest

from server.services.volumes import VolumeCache


class Loads:
    """Loaders that count their calls; `gate` holds them until the test opens it."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.gate = threading.Event()
        self.gate.set()

    def of(self, key: str, size: int):
        def load() -> bytes:
            self.gate.wait(5)
            self.calls.append(key)
            return bytes(size)
        return load


async def test_the_least_recently_used_volume_goes_first_when_the_budget_is_full():
    cache, loads = VolumeCache[bytes](300, len), Loads()
    for key in ("a", "b", "c"):
        await cache.get(key, loads.of(key, 100))
    assert cache.bytes == 300 and len(cache) == 3
    await cache.get("a", loads.of("a", 100))  # a hit: "a" is now the most recent, "b" the least
    await cache.get("d", loads.of("d", 150))
    assert "b" not in cache and "c" not in cache and "a" in cache and "d" in cache
    assert cache.bytes == 250
    assert loads.calls == ["a", "b", "c", "d"]
    assert (cache.hits, cache.misses) == (1, 4)


async def test_requests_that_overlap_share_one_load():
    cache, loads = VolumeCache[bytes](1000, len), Loads()
    loads.gate.clear()
    waiting = [asyncio.ensure_future(cache.get("a", loads.of("a", 10))) for _ in range(5)]
    await asyncio.sleep(0.05)
    loads.gate.set()
    values = await asyncio.gather(*waiting)
    assert loads.calls == ["a"] and all(v is values[0] for v in values)


async def test_a_request_that_goes_away_does_not_stop_the_load_others_wait_for():
    cache, loads = VolumeCache[bytes](1000, len), Loads()
    loads.gate.clear()
    first = asyncio.ensure_future(cache.get("a", loads.of("a", 10)))
    second = asyncio.ensure_future(cache.get("a", loads.of("a", 10)))
    await asyncio.sleep(0.05)
    first.cancel()
    loads.gate.set()
    assert len(await second) == 10
    assert "a" in cache


async def test_a_failed_load_is_raised_to_every_waiter_and_not_kept():
    cache = VolumeCache[bytes](1000, len)

    def broken() -> bytes:
        raise OSError("the disk went away")

    with pytest.raises(OSError, match="went away"):
        await cache.get("a", broken)
    assert "a" not in cache and cache.bytes == 0
    assert await cache.get("a", lambda: b"ok") == b"ok"  # the next request tries again


async def test_a_volume_larger_than_the_budget_is_served_but_not_kept(caplog):
    cache, loads = VolumeCache[bytes](100, len), Loads()
    await cache.get("small", loads.of("small", 60))
    assert len(await cache.get("huge", loads.of("huge", 500))) == 500
    assert "huge" not in cache and "small" in cache  # nothing was evicted for it
    assert "larger than the volume cache" in caplog.text


def test_the_budget_cannot_be_negative():
    with pytest.raises(ValueError):
        VolumeCache[bytes](-1, len)
