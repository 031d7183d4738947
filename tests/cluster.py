"""Several `theatrum serve` processes, a `theatrum worker`, PostgreSQL, Redis and nginx, all real, for the tests of
the scale-out (tests/server/test_cluster.py).

`Cluster` starts the servers on free loopback ports over one shared data folder and one PostgreSQL database,
the worker, and nginx with the configuration block of docs/operations.md (only its port numbers replaced), and
stops everything at the end. `owner_of(room)` says which server serves a room, from the line each server logs
when it takes a room. `ResumingClient` is a room client that, like the web client, reconnects through nginx
with `room=` in its query and `last_seq` in its auth after losing its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import socketio
from conftest import REPO, free_port
from engines import nginx, redis, stop
from hubtools import RoomClient
from serverproc import THEATRUM, Api, ServerProcess

OPERATIONS = REPO / "docs" / "operations.md"
DOC_PORTS = (8081, 8082, 8083)
DOC_LISTEN = "127.0.0.1:8080"


def nginx_block(text: str) -> str:
    """The nginx configuration of a document: the ```nginx block after the `<!-- nginx:` marker."""
    match = re.search(r"<!-- nginx:[^>]*-->\s*```nginx\n(.*?)```", text, re.S)
    assert match, "no nginx block after a `<!-- nginx:` marker"
    return match.group(1)


def nginx_config(ports: list[int], listen: int) -> str:
    """docs/operations.md's block with its ports replaced by `ports` (servers, at most three: the doc's lines for
    the others are left out) and `listen` (nginx)."""
    block = nginx_block(OPERATIONS.read_text())
    assert block.count(DOC_LISTEN) == 1 and all(block.count(f"127.0.0.1:{p} ") == 1 for p in DOC_PORTS), \
        "the doc's ports changed"
    block = block.replace(DOC_LISTEN, f"127.0.0.1:{listen}")
    assert 1 <= len(ports) <= len(DOC_PORTS)
    for n, doc_port in enumerate(DOC_PORTS):
        if n < len(ports):
            block = block.replace(f"127.0.0.1:{doc_port} ", f"127.0.0.1:{ports[n]} ")
        else:
            block = re.sub(rf"\n *server 127\.0\.0\.1:{doc_port} [^\n]*", "", block)
    return block


@dataclass
class Cluster:
    folder: Path
    database_url: str
    redis_url: str = ""
    servers: list[ServerProcess] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    worker: subprocess.Popen | None = None
    port: int = 0  # nginx's
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> Api:
        """HTTP through nginx, as the admin."""
        return Api("127.0.0.1", self.port, self.servers[0].token)

    def env(self) -> dict[str, str]:
        return {"THEATRUM_DATABASE_URL": self.database_url, "THEATRUM_REDIS_URL": self.redis_url,
                "THEATRUM_FORWARDED_ALLOW_IPS": "127.0.0.1", "THEATRUM_PUBLIC_URL": self.url,
                "THEATRUM_WORKERS": "1", "THEATRUM_LEDGER_EVERY_EVENTS": "25", "THEATRUM_ROOM_REJOIN_GRACE": "60",
                "THEATRUM_MAX_QUEUED_JOBS": "3", "THEATRUM_JOB_LEASE": "3", **self.extra}

    def start_server(self, index: int) -> ServerProcess:
        """Start (or start again) server `index` on its port."""
        server = ServerProcess._launch(self.data, self.ports[index], self.env())
        server.wait_healthy(60)
        if index < len(self.servers):
            self.servers[index] = server
        else:
            self.servers.append(server)
        return server

    def start_worker(self) -> subprocess.Popen:
        log = open(self.folder / "worker.log", "ab")  # noqa: SIM115 (the process keeps it)
        self.worker = subprocess.Popen([str(THEATRUM), "worker", "--data", str(self.data)], stdout=log,
                                       stderr=subprocess.STDOUT, env=_env(self.env()), start_new_session=True)
        return self.worker

    def kill_worker(self) -> None:
        """SIGKILL the worker and the job processes it spawned (its session): a crash."""
        assert self.worker is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait(10)

    def worker_output(self) -> str:
        path = self.folder / "worker.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def owner_of(self, room: str) -> int | None:
        """The server that last took `room` (its log says so) and is still running, or None."""
        latest: tuple[float, int] | None = None
        for index, server in enumerate(self.servers):
            if server.process.poll() is not None:
                continue
            for line in server.output().splitlines():
                if f"room {room}: " in line and "served here" in line:
                    stamp = line.split(" INFO ")[0]
                    if latest is None or stamp >= latest[0]:
                        latest = (stamp, index)
        return latest[1] if latest else None

    def direct(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"


def _env(extra: dict[str, str]) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("THEATRUM_") or k == "THEATRUM_DEBUG"}
    return {**inherited, "PYTHONUNBUFFERED": "1", **extra}


@contextlib.contextmanager
def cluster(folder: Path, database_url: str, processes: int = 3, *, worker: bool = True,
            env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """Redis, `processes` servers, a worker and nginx (docs/operations.md's config) over `database_url`; `env`
    adds or replaces settings of the servers."""
    with redis(folder / "redis") as redis_url:
        running = Cluster(folder, database_url, redis_url, ports=[free_port() for _ in range(processes)],
                          port=free_port(), extra=dict(env or {}))
        try:
            for index in range(processes):
                running.start_server(index)
            if worker:
                running.start_worker()
            config = nginx_config(running.ports, running.port)
            with nginx(folder / "nginx", config, running.port):
                yield running
        finally:
            if running.worker is not None:
                stop(running.worker, signal.SIGTERM)
            for server in running.servers:
                server.kill_group()


@contextlib.contextmanager
def cluster_on(server_url: str, folder: Path, processes: int = 3) -> Iterator[Cluster]:
    """`cluster` over a new database of the PostgreSQL at `server_url` (the session's, tests/conftest.py)."""
    import secrets

    import psycopg

    name = "cluster" + secrets.token_hex(4)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    with cluster(folder, server_url.rsplit("/", 1)[0] + "/" + name, processes) as started:
        yield started


class ResumingClient(RoomClient):
    """A room client through nginx that reconnects (with last_seq) whenever its connection drops, as the web
    client does; `reconnects` counts them and `back` is set once connected again."""

    def __init__(self, url: str, token: str, room: str):
        super().__init__(f"{url}?room={room}", token)
        self.room_id = room
        self.reconnects = 0
        self.connected = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task | None = None

    async def connect(self, **auth: Any) -> ResumingClient:
        self.sio = sio = socketio.AsyncClient(reconnection=False)
        sio.on("snapshot", self._on_snapshot)
        sio.on("event", self._on_event)
        sio.on("poses", self._on_poses)
        sio.on("connect_error", self._on_refused)
        sio.on("disconnect", lambda *reason: self._lost())
        sio.on("*", lambda name, data: self.other.append((name, data)))
        resume = {"last_seq": self.seq} if self.state is not None else {}
        await sio.connect(self.url, auth={"token": self.token, **resume, **auth}, transports=["websocket"],
                          wait_timeout=10)
        self.connected.set()
        return self

    def _lost(self) -> None:
        self.connected.clear()
        if not self._closing and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        while not self._closing:
            await asyncio.sleep(0.2)
            try:
                await self.connect()
                self.reconnects += 1
                return
            except (TimeoutError, socketio.exceptions.ConnectionError, OSError):
                continue

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
        await super().close()

