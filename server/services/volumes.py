"""The volume cache: decoded series kept in memory, least recently used first out, within a byte budget.

Decoding a series (reading and decompressing every slice) takes seconds; reslicing it takes milliseconds. So
the first slice of a series loads its volume here and the next ones find it. Loads of the same key at the same
time share one decode. A volume larger than the whole budget is served to the requests that waited for it and
then dropped, never kept at the cost of everything else: set the budget above the largest series you serve.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger("theatrum.volumes")

T = TypeVar("T")


class VolumeCache(Generic[T]):
    """An LRU of loaded values by key, holding at most `budget` bytes (each value's size is `size_of(value)`)."""

    def __init__(self, budget: int, size_of: Callable[[T], int]):
        if budget < 0:
            raise ValueError(f"the volume cache budget must be >= 0 bytes, got {budget}")
        self.budget = budget
        self.size_of = size_of
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, tuple[T, int]] = OrderedDict()
        self._loading: dict[str, asyncio.Future[T]] = {}  # loads under way

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str, load: Callable[[], T]) -> T:
        """The value of `key`: cached, or being loaded for another request, or `load()`ed now in a thread.

        A load runs to its end even if the request that started it goes away. Its exception reaches every
        request that waited for it, and nothing is cached.
        """
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]
        task = self._loading.get(key)
        if task is None:
            self.misses += 1
            task = self._loading[key] = asyncio.ensure_future(asyncio.to_thread(load))
            task.add_done_callback(lambda done: self._loaded(key, done))
        else:
            self.hits += 1
        return await asyncio.shield(task)

    def _loaded(self, key: str, task: asyncio.Future[T]) -> None:
        del self._loading[key]
        if not task.cancelled() and task.exception() is None:
            self._keep(key, task.result())

    def _keep(self, key: str, value: T) -> None:
        size = self.size_of(value)
        if size > self.budget:
            log.warning("a decoded series of %d MiB is larger than the volume cache (%d MiB): not kept; raise "
                        "THEATRUM_VOLUME_CACHE_BYTES", size >> 20, self.budget >> 20)
            return
        while self.bytes + size > self.budget:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted
        self._entries[key] = (value, size)
        self.bytes += size
