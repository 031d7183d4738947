"""Real PostgreSQL, Redis and nginx for the tests of several server processes (Debian's packages).

Each runs privately: its own folder, a free loopback port, started by the test and stopped at the end (by its
PID). PostgreSQL refuses to run as root, so its folder belongs to the `postgres` user and it runs as that user.
Without the packages the tests skip (CI installs them in .ci/run, so there they fail instead).

- `postgres(folder)`: a cluster with a `theatrum` role and database, trust auth on 127.0.0.1; yields its URL.
- `redis(folder)`: a Redis without persistence; yields its URL.
- `nginx(folder, conf)`: nginx with the given http{} body, pid and temp paths in `folder`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from conftest import free_port, require_path, require_tool

START_TIMEOUT_S = 30.0


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = Path(found[-1]) if found else Path("/usr/lib/postgresql/initdb")
    return require_tool(initdb, "PostgreSQL (postgresql)").parent


def wait_port(port: int, process: subprocess.Popen, what: str, timeout: float = START_TIMEOUT_S) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with code {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on {port} within {timeout} s")


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    """Signal the process's group (it was started in a session of its own: runuser passes nothing on), wait,
    and kill it if it has not gone by `timeout`."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextlib.contextmanager
def postgres(folder: Path) -> Iterator[str]:
    """A private PostgreSQL cluster in `folder`; yields postgresql://theatrum@127.0.0.1:PORT/theatrum."""
    pg = _pg_bin()
    user = pwd.getpwnam("postgres")
    folder.mkdir(parents=True, exist_ok=True)
    for path in (folder, *folder.parents):  # postgres must reach its folder
        if path == Path("/"):
            break
        os.chmod(path, os.stat(path).st_mode | 0o011)
    os.chown(folder, user.pw_uid, user.pw_gid)
    as_postgres = ["runuser", "-u", "postgres", "--"]
    data = folder / "db"
    subprocess.run([*as_postgres, str(pg / "initdb"), "-D", str(data), "-U", "theatrum", "--auth=trust", "-E",
                    "UTF8"], check=True, capture_output=True)
    port = free_port()
    log = open(folder / "postgres.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [*as_postgres, str(pg / "postgres"), "-D", str(data), "-p", str(port), "-k", str(folder),
         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_port(port, process, "PostgreSQL")
        for _ in range(100):
            made = subprocess.run([str(pg / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "theatrum",
                                   "theatrum"], capture_output=True)
            if made.returncode == 0:
                break
            time.sleep(0.1)
        yield f"postgresql://theatrum@127.0.0.1:{port}/theatrum"
    finally:
        stop(process, signal.SIGINT)
        log.close()


@contextlib.contextmanager
def redis(folder: Path) -> Iterator[str]:
    """A private Redis without persistence; yields redis://127.0.0.1:PORT/0."""
    server = require_tool(shutil.which("redis-server") or "/usr/bin/redis-server", "Redis (redis-server)")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(folder / "redis.log", "wb")  # noqa: SIM115
    process = subprocess.Popen([str(server), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(folder)], stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        wait_port(port, process, "Redis")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(process)
        log.close()


@contextlib.contextmanager
def nginx(folder: Path, http: str, port: int) -> Iterator[subprocess.Popen]:
    """nginx in the foreground with `http` as the body of its http{} block, listening on `port` (the config
    must say so); every path it writes is in `folder`."""
    binary = require_tool(shutil.which("nginx") or "/usr/sbin/nginx", "nginx")
    folder.mkdir(parents=True, exist_ok=True)
    temp = "".join(f"    {name}_temp_path {folder / name};\n" for name in
                   ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = folder / "nginx.conf"
    conf.write_text(f"daemon off;\npid {folder / 'nginx.pid'};\nerror_log {folder / 'error.log'} info;\n"
                    f"events {{ worker_connections 4096; }}\nhttp {{\n    access_log off;\n{temp}{http}\n}}\n")
    process = subprocess.Popen([str(binary), "-c", str(conf), "-p", str(folder)], stdout=subprocess.DEVNULL,
                               stderr=open(folder / "stderr.log", "wb"), start_new_session=True)  # noqa: SIM115
    try:
        wait_port(port, process, "nginx")
        yield process
    finally:
        stop(process, signal.SIGQUIT)


def require_engines() -> None:
    """Skip (fail under CI) unless PostgreSQL, Redis and nginx are installed."""
    _pg_bin()
    require_path(Path(shutil.which("redis-server") or "/usr/bin/redis-server"), "Redis (redis-server)")
    require_path(Path(shutil.which("nginx") or "/usr/sbin/nginx"), "nginx")
