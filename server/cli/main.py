"""The `theatrum` command line: list series, reconstruct meshes, serve, and verify a room's bundle.

Exit codes: 0 success; 1 an internal failure; 2 bad input, with one line on stderr naming the file and the
problem (never a traceback unless THEATRUM_DEBUG=1).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from reconstruction import __version__
from reconstruction.errors import ReconstructionError
from reconstruction.surface import DEFAULT_TARGET_TRIANGLES
from server.cli.errors import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, UsageError
from server.cli.verify import add_verify_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="theatrum", description="Theatrum: DICOM to VR-ready meshes, collaboration rooms, session ledger."
    )
    parser.add_argument("--version", action="version", version=f"theatrum {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("series", help="list the DICOM series found in the inputs, and what was skipped and why")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="folders, .zip files, DICOMDIRs or DICOM files")
    p.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    p.set_defaults(func=cmd_series)

    p = sub.add_parser("reconstruct", help="rebuild the anatomy of one series as meshes in a GLB")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="folders, .zip files, DICOMDIRs or DICOM files")
    p.add_argument("--series", metavar="UID", help="the series to use (UID or number from `theatrum series`)")
    p.add_argument(
        "--preset", action="append", metavar="NAME", help="tissue preset (repeatable); default: the modality's"
    )
    p.add_argument("--threshold", type=float, metavar="VALUE", help="custom iso-level (HU for CT)")
    p.add_argument("--target-triangles", type=int, default=DEFAULT_TARGET_TRIANGLES, metavar="N",
                   help="budget per preset")
    p.add_argument("--allow-gaps", action="store_true", help="build a non-contiguous series anyway (warns)")
    p.add_argument("--largest-only", action="store_true",
                   help="keep only the largest connected surface of each preset (the skull without the head holder)")
    p.add_argument("--slice-smoothing", action=argparse.BooleanOptionalAction, default=None,
                   help="smooth the terraces of thick slices, moving no vertex more than half the slice spacing "
                        "(default: on for slices over 2 mm)")
    p.add_argument("--out", type=Path, default=Path("reconstruction.glb"), metavar="FILE.glb")
    p.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("serve", help="run the server: API, socket.io hub and web client")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1; THEATRUM_HOST)")
    p.add_argument("--port", type=int, default=None, help="port (default 8080; THEATRUM_PORT)")
    p.add_argument("--tls", action="store_true", default=None,
                   help="serve HTTPS with a self-signed certificate kept in the data folder (THEATRUM_TLS)")
    p.add_argument("--tls-cert", default=None, metavar="PEM",
                   help="serve HTTPS with this certificate (chain) file (THEATRUM_TLS_CERT)")
    p.add_argument("--tls-key", default=None, metavar="PEM", help="the certificate's private key (THEATRUM_TLS_KEY)")
    p.add_argument("--data", type=Path, default=None, help="data folder (default ./data; THEATRUM_DATA)")
    p.add_argument("--import", dest="imports", action="append", metavar="PATH",
                   help="import this study at start and build its default meshes (repeatable; THEATRUM_IMPORTS)")
    p.add_argument("--dicom-port", type=int, default=None, metavar="PORT",
                   help="also receive DICOM (C-STORE, C-ECHO) on this port (default off; THEATRUM_DICOM_PORT)")
    p.add_argument("--ae-title", default=None, metavar="AET",
                   help="the receiver's AE title (default THEATRUM; THEATRUM_AE_TITLE)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="run reconstruction jobs queued by servers in Redis (several processes: "
                                      "THEATRUM_DATABASE_URL and THEATRUM_REDIS_URL)")
    p.add_argument("--data", type=Path, default=None, help="the data folder the servers share (THEATRUM_DATA)")
    p.add_argument("--workers", type=int, default=None,
                   help="jobs at once (default: one per core; THEATRUM_WORKERS)")
    p.set_defaults(func=cmd_worker)

    add_verify_parser(sub)
    return parser


def _progress(quiet: bool):
    from server.cli.progressbar import StageProgressBar

    return StageProgressBar(enabled=not quiet)


def cmd_series(args: argparse.Namespace) -> int:
    from reconstruction.series import find_series
    from server.cli.summaries import scan_summary

    bar = _progress(quiet=False)
    scan = find_series(args.inputs, progress=bar)
    bar.close()
    summary = scan_summary(scan)
    if args.json:
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    if not summary["series"]:
        print("No 3D series found.")
    for s in summary["series"]:
        spacing = " x ".join(f"{v:.4g}" for v in s["spacing_mm"])
        print(f"[{s['number']}] {s['modality']:<3} {s['slices']:>4} slices  {s['rows']}x{s['columns']}  "
              f"{spacing} mm  {s['description']!r}")
        print(f"     uid {s['uid']}")
    if summary["skipped"]:
        print(f"Skipped {len(summary['skipped'])}:")
        for k in summary["skipped"]:
            print(f"  {k['path']}: {k['reason']}")
    return EXIT_OK


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from reconstruction.pipeline import reconstruct

    if args.target_triangles <= 0:
        raise UsageError(f"--target-triangles: must be positive, got {args.target_triangles}")
    out: Path = args.out
    if out.suffix.lower() != ".glb":
        raise UsageError(f"{out}: the output must be a .glb file")
    if not out.parent.resolve().is_dir():
        raise UsageError(f"{out}: folder {out.parent} does not exist")
    bar = _progress(args.quiet)
    result = reconstruct(
        args.inputs,
        out=out,
        series_uid=_series_uid(args),
        presets=args.preset,
        threshold=args.threshold,
        target_triangles=args.target_triangles,
        largest_only=args.largest_only,
        slice_smoothing=args.slice_smoothing,
        allow_gaps=args.allow_gaps,
        progress=bar,
    )
    bar.close()
    summary = result.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    s = summary["series"]
    print(f"Series: {s['modality']} {s['description']!r}, {s['slices']} slices, shape {s['shape']}")
    for w in s["warnings"]:
        print(f"warning: {w}")
    for m in summary["meshes"]:
        print(f"  {m['preset']:<12} level {m['threshold']:g}: {m['triangles']} triangles, {m['vertices']} vertices")
    total = sum(summary["seconds"].values())
    print(f"Wrote {summary['out']} ({summary['bytes']} bytes) in {total:.2f} s")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from aiohttp import web

    from server.app import build_app, import_on_start
    from server.appkeys import ADMIN_TOKEN, RECEIVER
    from server.config import SettingsError, from_environment
    from server.eventloop import new_event_loop

    try:
        settings = from_environment(host=args.host, port=args.port, data=args.data,
                                    imports=tuple(args.imports) if args.imports else None,
                                    dicom_port=args.dicom_port, ae_title=args.ae_title, tls=args.tls,
                                    tls_cert=args.tls_cert, tls_key=args.tls_key)
    except SettingsError as e:
        raise UsageError(str(e)) from None
    ssl_context = _tls_context(settings)
    if not 0 <= settings.dicom_port <= 65535 or not 1 <= len(settings.ae_title.strip()) <= 16:
        raise UsageError(f"--dicom-port must be 0 to 65535 and --ae-title 1 to 16 characters "
                         f"(got {settings.dicom_port}, {settings.ae_title!r})")
    os.umask(0o077)  # everything the server (and its workers) writes is the owner's alone: it is patient data
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(_one_line_for_bad_requests)
    from redis.exceptions import RedisError

    from server.services.receiver import DicomPortError, PeerError
    from server.storage.errors import CorruptStoreError, StorageError
    from sessions.log import LogError

    try:
        app = build_app(settings)
    except SettingsError as e:
        raise UsageError(str(e)) from None
    except StorageError as e:
        raise UsageError(f"{settings.database_url or settings.data}: {e}") from None
    except OSError as e:
        raise UsageError(f"{settings.data}: cannot use the data folder: {e.strerror or e}") from None
    except sqlite3.OperationalError as e:
        raise UsageError(f"{settings.data}: a database there is in use by another Theatrum server, or "
                         f"unreadable: {e}") from None
    except sqlite3.DatabaseError as e:
        raise UsageError(f"{settings.data}: a database there is damaged ({e}); restore it from a backup "
                         "(docs/operations.md)") from None
    except (CorruptStoreError, PeerError) as e:
        raise UsageError(str(e)) from None
    except LogError as e:
        raise UsageError(f"{settings.data / 'rooms.sqlite'}: {e}") from None
    token = app[ADMIN_TOKEN]

    async def announce(_app: web.Application) -> None:
        url = settings.base_url
        print(f"Theatrum {__version__} is serving on {url}", flush=True)
        print(f"Open this URL to log in as admin (the token is in {settings.data / 'admin-token'}):", flush=True)
        print(f"    {url}/?token={token}", flush=True)
        if settings.dicom_port:
            receiver = app[RECEIVER]
            print(f"Receiving DICOM as {receiver.ae_title} on {receiver.host}:{receiver.port}", flush=True)

    app.on_startup.append(announce)
    app.on_startup.append(import_on_start)
    try:
        web.run_app(app, host=settings.host, port=settings.port, print=None, handle_signals=True,
                    ssl_context=ssl_context, shutdown_timeout=5, loop=new_event_loop())
    except DicomPortError as e:
        raise UsageError(str(e)) from None
    except RedisError as e:
        raise UsageError(f"{settings.redis_url}: cannot use Redis: {e}") from None
    except OSError as e:
        raise UsageError(f"cannot listen on {settings.host}:{settings.port}: {e.strerror or e}") from None
    except CorruptStoreError as e:
        raise UsageError(str(e)) from None
    except LogError as e:
        raise UsageError(f"{settings.data / 'rooms.sqlite'}: {e}") from None
    return EXIT_OK


def _tls_context(settings):
    """The HTTPS context `settings` ask for (None: plain HTTP). Exits 2 naming a certificate or key it cannot use."""
    if not settings.serves_tls:
        return None
    from server.services.tls import Certificate, TlsError, self_signed, server_context

    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise UsageError("--tls-cert and --tls-key go together (THEATRUM_TLS_CERT, THEATRUM_TLS_KEY)")
    try:
        if settings.tls_cert:
            certificate = Certificate(Path(settings.tls_cert), Path(settings.tls_key))
        else:
            certificate = self_signed(settings.data / "tls")
        return server_context(certificate)
    except TlsError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(f"{settings.data / 'tls'}: cannot write the certificate: {e.strerror or e}") from None


def cmd_worker(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from server.api.views import job_view
    from server.config import SettingsError, from_environment
    from server.services.job_worker import JobWorker
    from server.storage.artifacts import ArtifactStore
    from server.storage.catalog import Catalog
    from server.storage.errors import StorageError

    try:
        settings = from_environment(data=args.data, workers=args.workers)
    except SettingsError as e:
        raise UsageError(str(e)) from None
    if not settings.database_url or not settings.redis_url:
        raise UsageError("a worker serves several server processes: set THEATRUM_DATABASE_URL (their PostgreSQL) "
                         "and THEATRUM_REDIS_URL (their Redis); one server alone runs its jobs itself")
    os.umask(0o077)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        catalog = Catalog(settings.database_url)
    except StorageError as e:
        raise UsageError(f"{settings.database_url}: {e}") from None
    store = ArtifactStore(Path(settings.data) / "objects")
    worker = JobWorker(catalog, store, settings.redis_url, workers=settings.worker_count, job_event=job_view,
                       lease_s=settings.job_lease)
    print(f"Theatrum {__version__} worker: {settings.worker_count} job(s) at once, data in {settings.data}",
          flush=True)
    try:
        asyncio.run(worker.run())
    finally:
        catalog.close()
    return EXIT_OK


def _one_line_for_bad_requests(record) -> bool:
    """aiohttp logs a malformed request from a client with a traceback; one line says it all."""
    from aiohttp.http_exceptions import BadHttpMessage

    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, BadHttpMessage):
        record.msg, record.args, record.exc_info = "malformed HTTP request: %s", (exc.message,), None
        record.levelname, record.levelno = "WARNING", 30
    return True


def _series_uid(args: argparse.Namespace) -> str | None:
    """``--series`` accepts a UID or the 1-based number `theatrum series` prints."""
    if args.series is None or not args.series.isdigit():
        return args.series
    from reconstruction.series import find_series

    scan = find_series(args.inputs)
    n = int(args.series)
    if not 1 <= n <= len(scan.series):
        raise UsageError(f"--series {n}: there are {len(scan.series)} series (numbered from 1)")
    return scan.series[n - 1].uid


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or EXIT_OK)
    except (ReconstructionError, UsageError) as e:
        print(f"theatrum {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (e.g. piped into head): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as e:  # an internal failure: say so plainly, the traceback only on request
        if os.environ.get("THEATRUM_DEBUG"):
            traceback.print_exc()
        print(f"theatrum {args.command}: internal error: {type(e).__name__}: {e} "
              "(set THEATRUM_DEBUG=1 for details)", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
