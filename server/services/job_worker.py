"""`theatrum worker`: runs the reconstruction jobs that servers queue in Redis (server/services/job_queue.py).

arq's Worker takes jobs from the queue, at most `workers` at once, and calls `run_job` for each. A job runs as
with one process (server/services/jobs.JobRunner.run: its own spawned process, progress and state in the
catalog, meshes recorded there as they are built, artifacts into the shared data folder). Whenever its state or
progress changes the worker publishes its id on UPDATES, for the servers, and sends the lobby's `job` event
through python-socketio's Redis manager (write-only: a worker has no sockets of its own).

A server cancels a job by publishing its id on CANCELS: the worker stops the job's process. While a job runs,
its lease (arq's in-progress key) is renewed every third of its length (THEATRUM_JOB_LEASE, 30 s); if the
worker dies, the lease lapses and the job runs again on the next worker that polls (arq keeps a job queued
until a worker finishes it). A worker stopped by SIGTERM or SIGINT stops its jobs' processes and gives them
back to the queue at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import redis.asyncio as aioredis
import socketio
from arq.constants import in_progress_key_prefix
from arq.worker import Worker, func

from server.services import growing
from server.services.job_queue import CANCELS, QUEUE, RUN, UPDATES, redis_settings
from server.services.jobs import JobRunner
from server.services.meshes import job_spec, record_mesh
from server.services.sockets import ADMIN_ROOM
from server.storage.artifacts import ArtifactStore
from server.storage.catalog import Catalog

log = logging.getLogger("theatrum.worker")

JOB_TIMEOUT_S = 6 * 3600  # arq's limit on one run of a job (a job that hangs is given back after it)


def spec_for(catalog: Catalog, store: ArtifactStore, job: dict) -> dict:
    """What a worker process needs for `job`: a structure grown in a room, or meshes of a series."""
    return growing.job_spec(catalog, store, job) if growing.is_grow(job) else job_spec(catalog, store, job)


class JobWorker:
    """One `theatrum worker`: arq's worker over the shared catalog and data folder."""

    def __init__(self, catalog: Catalog, store: ArtifactStore, redis_url: str, *, workers: int,
                 job_event: Callable[[dict], dict], lease_s: float = 30.0):
        self.catalog = catalog
        self.lease_ms = max(1000, int(lease_s * 1000))
        self.redis_url = redis_url
        self.job_event = job_event
        self.runner = JobRunner(catalog, spec_for=partial(spec_for, catalog, store),
                                on_mesh=partial(record_mesh, catalog), workers=workers, max_queued=1 << 30,
                                on_update=self._changed)
        self.lobby = socketio.AsyncRedisManager(redis_url, write_only=True)
        self.workers = max(1, workers)
        self._redis: aioredis.Redis | None = None
        self._updates: asyncio.Queue[dict] = asyncio.Queue()  # sent one at a time, in the order they happened

    async def run(self) -> None:
        """Run until SIGTERM or SIGINT (then the jobs running here go back to the queue)."""
        self._redis = aioredis.from_url(self.redis_url)
        worker = Worker(functions=[func(self.run_job, name=RUN)], redis_settings=redis_settings(self.redis_url),
                        queue_name=QUEUE, max_jobs=self.workers, job_timeout=JOB_TIMEOUT_S, keep_result=0,
                        max_tries=1000, poll_delay=0.2, handle_signals=True)
        cancels = asyncio.create_task(self._hear_cancels(), name="job-cancels")
        updates = asyncio.create_task(self._send_updates(), name="job-updates")
        log.info("theatrum worker: %d job(s) at once, queue %s", self.workers, QUEUE)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await worker.async_run()
        finally:
            await worker.close()
            await self._updates.join()
            for task in (cancels, updates):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            await self._redis.aclose()

    async def run_job(self, ctx: dict[str, Any], job_id: str) -> None:
        """arq's function: run one job to its end, renewing its lease meanwhile."""
        job = self.catalog.job(job_id)
        if job is None or job["state"] not in ("queued", "running"):
            return  # cancelled, or finished by an earlier run
        if job["state"] == "running":
            log.warning("job %s was running on a worker that stopped: run again", job_id)
            self.catalog.update_job(job_id, state="queued", stage="re-queued after a worker stopped", percent=0)
        lease = asyncio.create_task(self._renew(ctx["redis"], job_id))
        try:
            await self.runner.run(job_id)
        except asyncio.CancelledError:  # the worker is stopping: the job goes back to the queue
            self.runner.stop_job(job_id)
            raise
        finally:
            lease.cancel()

    async def _renew(self, redis: Any, job_id: str) -> None:
        while True:
            await redis.pexpire(in_progress_key_prefix + job_id, self.lease_ms)
            await asyncio.sleep(self.lease_ms / 3000)

    def _changed(self, job: dict) -> None:
        """A job's state or progress changed: queue the news for the servers and the lobby."""
        self._updates.put_nowait(job)

    async def _send_updates(self) -> None:
        """Tell the servers, and the lobby's sockets on every server, of each change, in order."""
        assert self._redis is not None
        while True:
            job = await self._updates.get()
            try:
                await self._redis.publish(UPDATES, job["id"])
                await self.lobby.emit("job", self.job_event(job), room=ADMIN_ROOM)
            except Exception as error:  # Redis away for a moment: the catalog has the state, the next news says it
                log.warning("job %s: its update could not be published (%s)", job["id"], error)
            finally:
                self._updates.task_done()

    async def _hear_cancels(self) -> None:
        while True:
            client = aioredis.from_url(self.redis_url)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(CANCELS)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self.runner.stop_job(message["data"].decode())
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("job cancellations from Redis stopped (%s); listening again in 1 s", error)
                await asyncio.sleep(1)
            finally:
                await client.aclose()
