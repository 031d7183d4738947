"""Reconstruction jobs: a bounded queue drained by worker processes, with live progress and cancellation.

Each job runs in its own spawned process (at most ``workers`` at once, one per core by default), so the event
loop never does the heavy work and a cancelled job is really stopped (the process is terminated). The worker
reports progress through a pipe that the event loop watches with ``add_reader``; the parent records state in
the catalog and calls ``on_update`` (the socket.io push). On start, jobs that a crash left queued or running are
re-queued, so none is silently lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from server.services.worker import run_job
from server.storage.catalog import Catalog

log = logging.getLogger("theatrum.jobs")

Update = Callable[[dict], Awaitable[None] | None]


class QueueFullError(Exception):
    """The job queue is at its bound (HTTP 429)."""


@dataclass
class _Running:
    process: Any
    conn: Connection
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    meshes: list[dict] = field(default_factory=list)
    error: str | None = None


def new_job_id() -> str:
    return "j" + secrets.token_hex(8)


class JobRunner:
    def __init__(
        self,
        catalog: Catalog,
        spec_for: Callable[[dict], dict],
        on_mesh: Callable[[dict, dict], None],
        *,
        workers: int,
        max_queued: int,
        on_update: Update | None = None,
        metrics: Any = None,
    ) -> None:
        self.catalog = catalog
        self.spec_for = spec_for
        self.on_mesh = on_mesh
        self.workers = max(1, workers)
        self.max_queued = max_queued
        self.on_update = on_update
        self.metrics = metrics
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._running: dict[str, _Running] = {}
        self._cancelled: set[str] = set()
        self._tasks: list[asyncio.Task] = []
        self._ctx = mp.get_context("spawn")

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        for job in self.catalog.jobs_in(("running",)):
            log.warning("job %s was running when the server stopped: re-queued", job["id"])
            self.catalog.update_job(job["id"], state="queued", stage="re-queued after restart", percent=0)
        for job in self.catalog.jobs_in(("queued",)):
            self._queue.put_nowait(job["id"])
        self._tasks = [asyncio.create_task(self._drain(), name=f"job-worker-{n}") for n in range(self.workers)]

    async def stop(self) -> None:
        """Stop the workers. Jobs still running stay 'running' in the catalog and are re-queued at start."""
        for t in self._tasks:
            t.cancel()
        for run in list(self._running.values()):
            self._terminate(run)
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    # -- API ---------------------------------------------------------------------------------------------
    def queued_count(self) -> int:
        return self._queue.qsize()

    def submit(self, job: dict) -> None:
        """Record and enqueue a job. Requires job to carry id, study_id, series_id, params, cache_key."""
        if self._queue.qsize() >= self.max_queued:
            raise QueueFullError(f"{self._queue.qsize()} jobs are queued (the limit is {self.max_queued})")
        self.catalog.add_job(job)
        self._queue.put_nowait(job["id"])

    async def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; returns False when it had already finished."""
        job = self.catalog.job(job_id)
        if job is None or job["state"] not in ("queued", "running"):
            return False
        self._cancelled.add(job_id)
        run = self._running.get(job_id)
        if run is not None:
            self._terminate(run)
        self.catalog.update_job(job_id, state="cancelled", finished_at=time.time())
        await self._notify(job_id)
        return True

    def stop_job(self, job_id: str) -> None:
        """Stop a job that another process cancelled (the catalog already says so): its process is terminated
        if it runs here, and it is skipped if it has not started."""
        self._cancelled.add(job_id)
        run = self._running.get(job_id)
        if run is not None:
            self._terminate(run)

    # -- internals ---------------------------------------------------------------------------------------
    async def _drain(self) -> None:
        while True:
            job_id = await self._queue.get()
            try:
                if job_id in self._cancelled:
                    continue
                await self.run(job_id)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in the runner must not stop the queue
                log.exception("job %s: runner failure", job_id)
                self.catalog.update_job(job_id, state="failed", error="internal error", finished_at=time.time())
            finally:
                self._queue.task_done()

    async def run(self, job_id: str) -> None:
        """Run one queued job in a worker process to its end (done, failed or cancelled)."""
        job = self.catalog.job(job_id)
        if job is None or job["state"] != "queued":
            return
        spec = self.spec_for(job)
        parent, child = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(target=run_job, args=(spec, child), daemon=False, name=f"theatrum-{job_id}")
        started = time.time()
        self.catalog.update_job(job_id, state="running", stage="starting", percent=0, started_at=started)
        await self._notify(job_id)
        process.start()
        child.close()
        run = _Running(process, parent)
        self._running[job_id] = run
        loop = asyncio.get_running_loop()
        loop.add_reader(parent.fileno(), self._on_message, job_id, run)
        try:
            await run.done
        finally:
            loop.remove_reader(parent.fileno())
            parent.close()
            self._running.pop(job_id, None)
            await loop.run_in_executor(None, process.join, 5)
        if job_id in self._cancelled:
            return
        finished = time.time()
        if self.metrics is not None:
            self.metrics.observe_job(finished - started)
        if run.error is None:
            log.info("job %s done in %.1f s", job_id, finished - started)
            self.catalog.update_job(job_id, state="done", stage="done", percent=100, finished_at=finished,
                                    mesh_ids=[m["id"] for m in run.meshes])
        else:
            log.warning("job %s failed: %s", job_id, run.error)
            self.catalog.update_job(job_id, state="failed", error=run.error, finished_at=finished)
        await self._notify(job_id)

    def _on_message(self, job_id: str, run: _Running) -> None:
        try:
            kind, payload = run.conn.recv()
        except (EOFError, OSError):
            if not run.done.done():
                if run.error is None and job_id not in self._cancelled:
                    run.error = f"the worker process exited unexpectedly (exit code {run.process.exitcode})"
                run.done.set_result(None)
            return
        if kind == "progress":
            self.catalog.update_job(job_id, stage=payload["stage"], percent=payload["percent"])
            task = asyncio.ensure_future(self._notify(job_id))
            task.add_done_callback(lambda t: t.exception())
        elif kind == "mesh":
            job = self.catalog.job(job_id)
            if job is not None:
                self.on_mesh(job, payload)
            run.meshes.append(payload)
        elif kind == "error":
            run.error = payload
        elif kind == "done" and not run.done.done():
            run.done.set_result(None)

    def _terminate(self, run: _Running) -> None:
        if run.process.is_alive():
            run.process.terminate()
        if not run.done.done():
            run.done.set_result(None)

    async def _notify(self, job_id: str) -> None:
        await notify(self.catalog, self.on_update, job_id)


async def notify(catalog: Catalog, on_update: Update | None, job_id: str) -> None:
    """Call `on_update` with the catalog's row of the job (awaited if it is a coroutine), if both exist."""
    if on_update is None:
        return
    job = catalog.job(job_id)
    if job is None:
        return
    result = on_update(job)
    if asyncio.iscoroutine(result):
        await result
