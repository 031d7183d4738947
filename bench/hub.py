"""Session hub benchmark: R rooms x N clients on loopback, against a bare python-socketio broadcast server.

    .venv/bin/python bench/hub.py [--duration 20] [--configs 1x30,10x10] [--procs 2] [--rounds 2]
    .venv/bin/python bench/hub.py --processes 1,2 [--steps 50,100,...] [--room-size 10] [--duration 8]

Each client sends poses at 30 Hz (volatile) and one annotation a second (an op with an ack) and receives
everything its room broadcasts. The clients are the official JavaScript socket.io-client, run by Node in
`--procs` separate processes (bench/hub_clients.mjs; `npm ci` in web-client first): what browsers run, and
light enough that a few processes load the server rather than themselves. The server runs in its own
process. For each configuration it runs two servers on the same load:

- ours: the Theatrum app (server.app.build_app: auth, validation, permissions, the SQLite WAL log committed
  before each ack and broadcast, the 20 Hz pose tick), on a fresh data folder;
- bare: a python-socketio AsyncServer with no logic: an op is broadcast to the room and acked, the latest
  pose of each socket is kept and sent as one batched `poses` frame per room on a fixed 20 Hz tick. Its
  transport is configured as ours (handlers run inline, websockets without permessage-deflate), so the
  ratio is what our logic costs.

The two servers take turns for `--rounds` rounds and each keeps its best round (lowest p99): other processes
on the machine only ever slow a run down. It prints, per server: messages delivered to clients per second
(`event`s and `poses` frames), the op latency from emit until every member of the room has received the
broadcast (p50, p99; clocks are time.monotonic, shared by processes on one machine), the server's CPU (its
process's user + system time over the measured window), the client processes' CPU (the same machine's
cores: when they are busy, latency is theirs as much as the server's), and the ratio ours/bare. Targets
(issue 4): p99 <= 25 ms at 1x30, CPU <= 1.3x bare.

With `--processes 1,2` it measures the scale-out instead (issue 16): for each count, that many `theatrum serve`
processes on a private PostgreSQL and Redis behind nginx with docs/operations.md's configuration (Debian's
postgresql, redis-server and nginx), loaded in steps of more users (rooms of `--room-size`, every client through
nginx with `room=` in its query) until the op p99 passes 50 ms. It prints each step, then the users served at
p99 <= 50 ms by each count and the ratio to the first count (the reference, measured in the same run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.eventloop import new_event_loop

POSE_HZ = 30.0
OP_HZ = 1.0
TICK_HZ = 20.0
WARMUP = 2.0  # seconds of load before the measured window
SETTLE = 1.0  # seconds after it, for the last broadcasts to arrive
CLIENTS = Path(__file__).resolve().parent / "hub_clients.mjs"
REPO = Path(__file__).resolve().parents[1]
P99_TARGET_MS = 50.0  # issue 16: users served at p99 <= 50 ms


# ---- servers ---------------------------------------------------------------------------------------------

def serve_ours(port: int, data: Path) -> None:
    """Run the Theatrum app on `port` with a catalog holding one study and one mesh."""
    from aiohttp import web

    from server.app import build_app
    from server.appkeys import ARTIFACTS, CATALOG
    from server.config import Settings

    app = build_app(Settings(data=data, port=port, workers=1, pose_tick_hz=TICK_HZ, room_max_participants=200))
    seed(app[CATALOG], app[ARTIFACTS])
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, handle_signals=True,
                loop=new_event_loop())


def seed(catalog, store) -> None:
    """One study with one (placeholder) mesh, for the rooms."""
    with catalog.transaction() as batch:
        batch.add_study("st-bench", "", "CT")
    digest = store.put_bytes(b"glTF", ".glb")
    catalog.add_mesh({"id": "m-bench", "study_id": "st-bench", "series_id": "se-bench", "preset": "bone",
                      "threshold": 300.5, "triangles": 1, "vertices": 3, "bbox_lps_mm": [[0, 0, 0], [1, 1, 1]],
                      "artifacts": {"draco": digest}})


def serve_bare(port: int) -> None:
    """A python-socketio server with no logic: join by `auth.room`, broadcast ops, batch poses at 20 Hz."""
    import socketio
    from aiohttp import web

    from server.middleware.websockets import plain_websockets

    # The transport exactly as ours runs it (server/services/sockets.py): handlers inline, no permessage-deflate.
    sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False, async_handlers=False)
    app = web.Application(middlewares=[plain_websockets])
    sio.attach(app)
    rooms: dict[str, str] = {}
    latest: dict[str, dict[str, dict]] = {}
    seq = {"n": 0}

    @sio.event
    async def connect(sid, environ, auth):
        rooms[sid] = room = str(auth["room"])
        latest.setdefault(room, {})
        await sio.enter_room(sid, room)
        await sio.emit("snapshot", {"seq": seq["n"]}, to=sid)

    @sio.event
    async def disconnect(sid, reason=None):
        rooms.pop(sid, None)

    @sio.on("op")
    async def op(sid, data):
        seq["n"] += 1
        await sio.emit("event", {"seq": seq["n"], "author": sid, "kind": data.get("kind"), "data": data},
                       room=rooms[sid])
        return {"ok": True, "seq": seq["n"]}

    @sio.on("pose")
    async def pose(sid, data):
        latest[rooms[sid]][sid] = data

    async def tick(_app):
        sending: set[asyncio.Task] = set()

        async def loop():  # a fixed-rate tick, as ours: the next tick is due 1/TICK_HZ after the last was
            next_at = time.monotonic()
            while True:
                next_at += 1 / TICK_HZ
                for room, poses in latest.items():
                    if poses:
                        latest[room] = {}
                        send = asyncio.create_task(sio.emit("poses", {"poses": poses, "gone": []}, room=room))
                        sending.add(send)
                        send.add_done_callback(sending.discard)
                delay = next_at - time.monotonic()
                if delay < 0:
                    next_at, delay = time.monotonic(), 0.0
                await asyncio.sleep(delay)

        task = asyncio.create_task(loop())
        yield
        task.cancel()

    app.cleanup_ctx.append(tick)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, handle_signals=True,
                loop=new_event_loop())


# ---- the run ---------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_listening(port: int, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"the server did not listen on port {port}")


def ours_clients(url: str, token: str, rooms: int, per_room: int, *, route: bool = False) -> list[list]:
    """Create the rooms over HTTP as the admin; one personal surgeon invite per client: [room, auth] (and the
    socket.io query {room: id} with `route`, for a proxy that routes by room)."""
    import urllib.request

    def post(path: str, body: dict) -> dict:
        request = urllib.request.Request(url + path, json.dumps(body).encode(), method="POST", headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request) as response:
            return json.loads(response.read())

    out = []
    for r in range(rooms):
        room = post("/api/rooms", {"study_id": "st-bench", "mesh_ids": ["m-bench"], "mode": "consult",
                                   "title": f"bench {r}"})["room"]["id"]
        for c in range(per_room):
            invite = post(f"/api/rooms/{room}/invites", {"role": "surgeon", "name": f"Client {r}.{c}"})
            out.append([r, {"token": invite["token"]}, {"room": room}] if route else [r, {"token": invite["token"]}])
    return out


def run(kind: str, rooms: int, per_room: int, duration: float, procs: int, profile: Path | None = None) -> dict:
    """One server, one load: the measured figures."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="bench-hub-") as tmp:
        data = Path(tmp) / "data"
        profiling = ["--profile", str(profile / f"{kind}-{rooms}x{per_room}.prof")] if profile else []
        server = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port),
                                   "--data", str(data), *profiling], stdout=subprocess.DEVNULL)
        try:
            wait_listening(port)
            token = (data / "admin-token").read_text().strip() if kind == "ours" else ""
            members = (ours_clients(url, token, rooms, per_room) if kind == "ours"
                       else [[r, {"room": f"room-{r}"}] for r in range(rooms) for _ in range(per_room)])
            return load(url, members, duration, procs, [server.pid])
        finally:
            server.terminate()
            server.wait()


def load(url: str, members: list[list], duration: float, procs: int, server_pids: list[int]) -> dict:
    """Run `members` ([room, auth, query?] each) against `url` in `procs` Node processes; the figures, with the
    CPU of the processes `server_pids` together."""
    connect_time = 3.0 + 0.05 * len(members)
    start = time.monotonic() + connect_time
    stop = start + WARMUP + duration
    workers = []
    for p in range(procs):
        mine = [[i, *member[1:]] for i, member in enumerate(members) if i % procs == p]
        spec = {"url": url, "clients": mine, "start": start, "stop": stop, "settle": SETTLE,
                "pose_hz": POSE_HZ, "op_hz": OP_HZ}
        workers.append(subprocess.Popen(["node", str(CLIENTS)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True))
        workers[-1].stdin.write(json.dumps(spec))
        workers[-1].stdin.close()
    time.sleep(max(0.0, start + WARMUP - time.monotonic()))
    cpu0, t0 = sum(cpu_seconds(pid) for pid in server_pids), time.monotonic()
    clients0 = sum(cpu_seconds(w.pid) for w in workers)
    time.sleep(max(0.0, stop - time.monotonic()))
    cpu1, t1 = sum(cpu_seconds(pid) for pid in server_pids), time.monotonic()
    clients1 = sum(cpu_seconds(w.pid) for w in workers)
    results = [json.loads(w.stdout.read()) for w in workers]
    if any(w.wait() != 0 for w in workers):
        raise RuntimeError("a client process failed")
    figures = summarise(results, members, start + WARMUP, stop, (cpu1 - cpu0) / (t1 - t0))
    return {**figures, "client_cpu": (clients1 - clients0) / (t1 - t0)}


# ---- several processes behind nginx (--processes) -------------------------------------------------------------

def run_cluster(processes: int, steps: list[int], room_size: int, duration: float, procs: int) -> list[dict]:
    """`processes` servers on PostgreSQL + Redis behind nginx (docs/operations.md's configuration), loaded with
    more users at each step (rooms of `room_size`) until p99 passes P99_TARGET_MS; the figures of each step."""
    sys.path.insert(0, str(REPO / "tests"))
    from cluster import cluster
    from engines import postgres

    from server.storage.artifacts import ArtifactStore
    from server.storage.catalog import Catalog

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp, postgres(Path(tmp) / "pg") as database, \
            cluster(Path(tmp) / "cluster", database, processes, worker=False,
                    env={"THEATRUM_ROOM_MAX_PARTICIPANTS": "200"}) as running:
        catalog = Catalog(database)
        seed(catalog, ArtifactStore(running.data / "objects"))
        catalog.close()
        pids = [server.process.pid for server in running.servers]
        for users in steps:
            rooms = max(1, users // room_size)
            members = ours_clients(running.url, running.api.token, rooms, room_size, route=True)
            figures = load(running.url, members, duration, procs, pids)
            rows.append({"processes": processes, "users": rooms * room_size, **figures})
            print_cluster_row(rows[-1], flush=True)
            if figures["lost"] or figures["p99_ms"] > P99_TARGET_MS:
                break
    return rows


def print_cluster_row(row: dict, flush: bool = False) -> None:
    print(f"{row['processes']:>9} {row['users']:>5} {row['delivered_per_s']:>11.0f} {row['ops']:>5} {row['lost']:>4} "
          f"{row['p50_ms']:>7.1f} {row['p99_ms']:>7.1f} {row['cpu'] * 100:>9.0f}% {row['client_cpu'] * 100:>9.0f}%",
          flush=flush)


def summarise(results: list[dict], members: list[list], window_start: float, window_stop: float,
              cpu: float) -> dict:
    """Delivered messages/s, op latency percentiles over the measured window, server CPU."""
    room_of = {i: member[0] for i, member in enumerate(members)}
    room_size: dict[int, int] = {}
    for room in room_of.values():
        room_size[room] = room_size.get(room, 0) + 1
    emitted, received = {}, {}
    counts = {"event": 0, "poses": 0, "ack": 0, "nack": 0}
    for result in results:
        emitted.update(result["emitted"])
        received.update(result["received"])
        for key in counts:
            counts[key] += result["counts"][key]
    arrivals: dict[str, list[float]] = {}
    for key, at in received.items():
        label, _ = key.rsplit("|", 1)
        arrivals.setdefault(label, []).append(at)
    latencies, lost = [], 0
    for label, at in emitted.items():
        if not window_start <= at < window_stop:
            continue
        sender = int(label[1:].split("-")[0])
        got = arrivals.get(label, [])
        if len(got) < room_size[room_of[sender]]:
            lost += 1
            continue
        latencies.append(max(got) - at)
    latencies.sort()
    total = WARMUP + (window_stop - window_start)

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    return {"delivered_per_s": (counts["event"] + counts["poses"]) / total, "ops": len(latencies), "lost": lost,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "cpu": cpu, "nacks": counts["nack"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per run (default 20)")
    parser.add_argument("--configs", default="1x30,10x10", help="rooms x clients per room, comma-separated")
    parser.add_argument("--procs", type=int, default=2, help="client processes (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per server; the best counts")
    parser.add_argument("--serve", choices=("ours", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile", type=Path, help="write each server's cProfile stats into this folder")
    parser.add_argument("--processes", help="several processes: comma-separated server counts (e.g. 1,2), each "
                                            "behind nginx on PostgreSQL and Redis, loaded in steps of users")
    parser.add_argument("--steps", default="50,100,150,200,250,300,400,500",
                        help="users at each step of --processes (rooms of --room-size)")
    parser.add_argument("--room-size", type=int, default=10, help="users per room with --processes")
    args = parser.parse_args()
    if args.serve:
        serve = (lambda: serve_ours(args.port, args.data)) if args.serve == "ours" else (lambda: serve_bare(args.port))
        if args.profile is None:
            return serve()
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            serve()
        finally:
            profiler.disable()
            profiler.dump_stats(args.profile)
        return None
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    if not (CLIENTS.parent.parent / "web-client" / "node_modules" / "socket.io-client").is_dir():
        sys.exit("bench/hub.py needs Node and socket.io-client: run `npm ci` in web-client")

    if args.processes:
        return main_cluster(args)
    print(f"session hub on loopback: poses {POSE_HZ:g} Hz + one annotation/s per client, {args.duration:g} s "
          f"measured after {WARMUP:g} s of warm-up, {args.procs} client processes, {os.cpu_count()} cores, "
          f"best of {args.rounds} alternating rounds, load average {os.getloadavg()[0]:.1f}")
    header = (f"{'config':<7} {'server':<6} {'delivered/s':>11} {'ops':>5} {'lost':>4} {'p50 ms':>7} "
              f"{'p99 ms':>7} {'server CPU':>10} {'client CPU':>10}")
    print(header)
    print("-" * len(header))
    for config in args.configs.split(","):
        rooms, per_room = (int(v) for v in config.lower().split("x"))
        runs: dict[str, list[dict]] = {"bare": [], "ours": []}
        for _ in range(args.rounds):
            for kind in runs:
                runs[kind].append(run(kind, rooms, per_room, args.duration, args.procs, args.profile))
        figures = {kind: min(found, key=lambda f: (f["lost"], f["p99_ms"])) for kind, found in runs.items()}
        for kind, f in figures.items():
            print(f"{config:<7} {kind:<6} {f['delivered_per_s']:>11.0f} {f['ops']:>5} {f['lost']:>4} "
                  f"{f['p50_ms']:>7.1f} {f['p99_ms']:>7.1f} {f['cpu'] * 100:>9.0f}% {f['client_cpu'] * 100:>9.0f}%")
        ours, bare = figures["ours"], figures["bare"]
        print(f"{config:<7} {'ratio':<6} {ours['delivered_per_s'] / bare['delivered_per_s']:>11.2f} {'':>5} "
              f"{'':>4} {ours['p50_ms'] / bare['p50_ms']:>7.2f} {ours['p99_ms'] / bare['p99_ms']:>7.2f} "
              f"{ours['cpu'] / bare['cpu']:>9.2f}x")
    return None


def main_cluster(args: argparse.Namespace) -> None:
    counts = [int(n) for n in args.processes.split(",")]
    steps = [int(n) for n in args.steps.split(",")]
    print(f"several processes behind nginx (PostgreSQL, Redis): rooms of {args.room_size}, poses {POSE_HZ:g} Hz + one "
          f"annotation/s per user, {args.duration:g} s measured per step, {args.procs} client processes, "
          f"{os.cpu_count()} cores; server CPU is all server processes together")
    header = (f"{'processes':>9} {'users':>5} {'delivered/s':>11} {'ops':>5} {'lost':>4} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'server CPU':>10} {'client CPU':>10}")
    print(header)
    print("-" * len(header))
    served = {}
    for count in counts:
        rows = run_cluster(count, steps, args.room_size, args.duration, args.procs)
        good = [r["users"] for r in rows if not r["lost"] and r["p99_ms"] <= P99_TARGET_MS]
        served[count] = max(good, default=0)
    print()
    print(f"{'processes':>9} {'users at p99 <= 50 ms':>22} {'ratio':>6}")
    reference = served[counts[0]] or float("nan")
    for count in counts:
        print(f"{count:>9} {served[count]:>22} {served[count] / reference:>6.2f}")


if __name__ == "__main__":
    main()
