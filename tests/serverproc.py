"""Run `theatrum serve` as a real process for tests: start it on a free loopback port, talk HTTP to it, stop it.

``ServerProcess.start(data)`` launches the installed console script in its own session (so the server and its
spawned job workers form one process group that ``kill_group`` can SIGKILL at once, as a power cut would), waits
for ``/api/health`` and reads the admin token the server wrote into the data folder. ``Api`` is a plain
``http.client`` caller: one fresh connection per request, nothing cached, so what a test sees is what the server
sent. ``validate_glb`` runs the Khronos glTF-Validator (tests/tools/validate_gltf.mjs) on a file.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from conftest import REPO, free_port, require_path

THEATRUM = Path(sys.executable).parent / "theatrum"
VALIDATOR_SCRIPT = REPO / "tests" / "tools" / "validate_gltf.mjs"
VALIDATOR_PACKAGE = REPO / "web-client" / "node_modules" / "gltf-validator"
FINAL_STATES = ("done", "failed", "cancelled")


class ServerExited(RuntimeError):
    """The server process ended while a test was waiting for it."""


def zip_tree(folder: Path, *, deflate: bool = True) -> bytes:
    """Every file under ``folder`` in one in-memory zip, named relative to ``folder``."""
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", method, compresslevel=1 if deflate else None) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(folder).as_posix())
    return buf.getvalue()


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass(frozen=True)
class Api:
    """HTTP calls to one server. Requires the server to listen on ``host:port``."""

    host: str
    port: int
    token: str = ""
    timeout: float = 60.0
    tls: ssl.SSLContext | None = None  # HTTPS, verified by this context (a server started with --tls)

    def request(self, method: str, path: str, body: bytes | dict | None = None,
                headers: dict[str, str] | None = None, *, auth: bool = True) -> Response:
        head = dict(headers or {})
        if auth and self.token:
            head.setdefault("Authorization", f"Bearer {self.token}")
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            head.setdefault("Content-Type", "application/json")
        if self.tls is not None:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.tls)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, path, body=body, headers=head)
            r = conn.getresponse()
            data = r.read()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
        finally:
            conn.close()

    def get(self, path: str, **options) -> Response:
        return self.request("GET", path, **options)

    def post(self, path: str, body: bytes | dict | None = None, **options) -> Response:
        return self.request("POST", path, body, **options)

    def upload_zip(self, data: bytes) -> dict:
        """POST /api/studies with one zip; returns the JSON answer (requires a 200 or 201)."""
        r = self.post("/api/studies", data, headers={"Content-Type": "application/zip"})
        assert r.status in (200, 201), (r.status, r.body[:2000])
        return r.json()

    def job(self, job_id: str) -> dict:
        r = self.get(f"/api/jobs/{job_id}")
        assert r.status == 200, (r.status, r.body[:2000])
        return r.json()

    def wait_job(self, job_id: str, until, *, timeout: float = 240.0, server: ServerProcess | None = None,
                 interval: float = 0.1) -> dict:
        """Poll the job until ``until(job)`` holds; fails after ``timeout`` s or when ``server`` exits."""
        end = time.monotonic() + timeout
        job: dict = {}
        while time.monotonic() < end:
            if server is not None:
                server.check_alive()
            job = self.job(job_id)
            if until(job):
                return job
            time.sleep(interval)
        raise AssertionError(f"job {job_id} did not reach the expected state in {timeout} s: {job}")


@dataclass
class ServerProcess:
    """One `theatrum serve` process (and its job workers, in the same process group)."""

    process: subprocess.Popen
    data: Path
    port: int
    log_path: Path
    token: str = ""
    _log: object = field(default=None, repr=False)

    @classmethod
    def start(cls, data: Path, *, env: dict[str, str] | None = None, timeout: float = 60.0,
              attempts: int = 3) -> ServerProcess:
        """Start the server on a free loopback port with ``data`` as its data folder and wait until it answers.

        Requires the `theatrum` console script next to the test interpreter. A port taken between choosing
        and binding it is retried on another port.
        """
        require_path(THEATRUM, "the `theatrum` console script (pip install -e .)")
        for attempt in range(attempts):
            server = cls._launch(data, free_port(), env)
            try:
                server.wait_healthy(timeout)
                return server
            except ServerExited:
                server.close()
                if "cannot listen" in server.output() and attempt + 1 < attempts:
                    continue
                raise
            except BaseException:
                server.kill_group()
                raise
        raise AssertionError("unreachable")

    @classmethod
    def _launch(cls, data: Path, port: int, env: dict[str, str] | None) -> ServerProcess:
        data.mkdir(parents=True, exist_ok=True)
        log_path = data.parent / f"{data.name}-server-{port}.log"
        log = open(log_path, "ab")  # noqa: SIM115 (closed in close())
        # Only the settings a test names apply: a developer's THEATRUM_* variables are left out (THEATRUM_DEBUG
        # is kept, for tracebacks).
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("THEATRUM_") or k == "THEATRUM_DEBUG"}
        full_env = {**inherited, "PYTHONUNBUFFERED": "1", **(env or {})}
        process = subprocess.Popen(
            [str(THEATRUM), "serve", "--host", "127.0.0.1", "--port", str(port), "--data", str(data)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=data.parent,
            start_new_session=True,
        )
        return cls(process, data, port, log_path, _log=log)

    @property
    def api(self) -> Api:
        return Api("127.0.0.1", self.port, self.token)

    def output(self) -> str:
        """Everything the server printed (stdout and stderr) so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise ServerExited(f"the server exited with code {code}; its output:\n{self.output()[-4000:]}")

    def wait_healthy(self, timeout: float) -> None:
        bare = Api("127.0.0.1", self.port, timeout=2.0)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.check_alive()
            try:
                if bare.get("/api/health", auth=False).status == 200:
                    token_file = self.data / "admin-token"
                    self.token = token_file.read_text().strip()
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"the server did not answer /api/health within {timeout} s:\n{self.output()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``sig`` to the server process and wait for it; returns its exit code (None: still running)."""
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            self.close()

    def kill_group(self) -> None:
        """SIGKILL the server and every process of its session (its job workers): a crash, not a shutdown."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.close()

    def group(self) -> list[int]:
        """Live processes of the server's process group: the server (until it exits) and its workers."""
        return group_members(self.process.pid)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, read from /proc (Linux)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def validate_glb(data: bytes, path: Path) -> dict:
    """Write ``data`` to ``path`` and return the Khronos glTF-Validator's report. Requires node and the package."""
    node = shutil.which("node")
    require_path(Path(node) if node else path.parent / "node-not-on-PATH", "node (Node.js)")
    require_path(VALIDATOR_PACKAGE, "gltf-validator (run `npm ci` in web-client)")
    path.write_bytes(data)
    run = subprocess.run([node, str(VALIDATOR_SCRIPT), str(path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)
