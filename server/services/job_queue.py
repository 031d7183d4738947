"""Reconstruction jobs in Redis: with several server processes, the servers queue jobs and `theatrum worker`
processes, on any host, run them (server/services/job_worker.py).

The queue is arq's (a maintained Redis job queue): a job is queued under its own id and stays in the queue until
a worker finishes it. The catalog (in the shared PostgreSQL) keeps each job's state and progress, as with one
process. What crosses processes:

- `submit` records the job and queues it; the bound on queued jobs counts the catalog's queued rows, so it holds
  across servers;
- `cancel` marks the job cancelled in the catalog and publishes its id on CANCELS; the worker running it stops
  its process, and a worker that has not started it skips it;
- a worker publishes a job's id on UPDATES whenever its state or progress changes; every server hears it and
  calls `on_update` with the catalog's row (the session hub logs the outcome of a structure grown in one of its
  rooms). The job events of the lobby go through python-socketio's Redis manager, sent by the worker itself;
- a worker that dies mid-job stops renewing the job's lease (arq's in-progress key, THEATRUM_JOB_LEASE), and
  another worker (or the same one, restarted) runs the job again once it lapses.

`RedisJobs` has the JobRunner's interface (server/services/jobs.py), so the app picks one or the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis.asyncio as aioredis
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from server.services.jobs import QueueFullError, Update, notify
from server.storage.catalog import Catalog

log = logging.getLogger("theatrum.jobs")

QUEUE = "theatrum:jobs"  # arq's queue
RUN = "run_job"  # the worker's function
UPDATES = "theatrum:job-updates"  # pub/sub: the id of a job whose state or progress changed
CANCELS = "theatrum:job-cancels"  # pub/sub: the id of a job cancelled by a server

def redis_settings(url: str) -> RedisSettings:
    """arq's connection settings for a redis:// URL."""
    return RedisSettings.from_dsn(url)


class RedisJobs:
    """Jobs queued in Redis for `theatrum worker` processes, tracked in the shared catalog."""

    def __init__(self, catalog: Catalog, redis_url: str, *, max_queued: int, on_update: Update | None = None,
                 metrics: object = None) -> None:
        self.catalog = catalog
        self.redis_url = redis_url
        self.max_queued = max_queued
        self.on_update = on_update
        self.metrics = metrics
        self._pool: ArqRedis | None = None
        self._listener: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        """Connect, and follow the workers' updates."""
        self._pool = await create_pool(redis_settings(self.redis_url), default_queue_name=QUEUE)
        ready = asyncio.get_running_loop().create_future()
        self._listener = asyncio.create_task(self._listen(ready), name="job-updates")
        await ready

    async def stop(self) -> None:
        for task in (self._listener, *self._tasks):
            if task is not None:
                task.cancel()
        for task in (self._listener, *self._tasks):
            if task is not None:
                with contextlib.suppress(BaseException):
                    await task
        if self._pool is not None:
            await self._pool.aclose()

    def queued_count(self) -> int:
        return self.catalog.count_jobs(("queued",))

    def submit(self, job: dict) -> None:
        """Record and queue a job (sent to Redis at once, in the background). Requires job to carry id,
        study_id, series_id, params, cache_key. Raises QueueFullError at the bound."""
        queued = self.queued_count()
        if queued >= self.max_queued:
            raise QueueFullError(f"{queued} jobs are queued (the limit is {self.max_queued})")
        self.catalog.add_job(job)
        task = asyncio.get_running_loop().create_task(self._enqueue(job["id"]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; returns False when it had already finished."""
        job = self.catalog.job(job_id)
        if job is None or job["state"] not in ("queued", "running"):
            return False
        self.catalog.update_job(job_id, state="cancelled", finished_at=time.time())
        assert self._pool is not None
        await self._pool.publish(CANCELS, job_id)
        await self._pool.publish(UPDATES, job_id)
        return True

    async def _enqueue(self, job_id: str) -> None:
        try:
            assert self._pool is not None
            await self._pool.enqueue_job(RUN, job_id, _job_id=job_id)
        except Exception as error:  # Redis is gone: the job cannot run, and the lobby must hear so
            log.error("job %s could not be queued in Redis: %s", job_id, error)
            self.catalog.update_job(job_id, state="failed", error="the job queue is unavailable",
                                    finished_at=time.time())
            await self._notify(job_id)

    async def _listen(self, ready: asyncio.Future) -> None:
        """Hear UPDATES until stopped; a lost connection is opened again."""
        while True:
            client = aioredis.from_url(self.redis_url)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(UPDATES)
                    if not ready.done():
                        ready.set_result(None)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            await self._notify(message["data"].decode())
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if not ready.done():
                    ready.set_exception(error)
                    return
                log.warning("job updates from Redis stopped (%s); listening again in 1 s", error)
                await asyncio.sleep(1)
            finally:
                await client.aclose()

    async def _notify(self, job_id: str) -> None:
        try:
            await notify(self.catalog, self.on_update, job_id)
        except Exception:
            log.exception("job %s: its update could not be handled", job_id)
