"""`theatrum verify BUNDLE [--rpc URL] [--key VKEY] [--strict] [--glb FILE]... [--report REPORT.dcm] [--json]`:
check a room's exported bundle, GLB files against the mesh provenance it records, and a consult record (DICOM SR)
against the events it cites.

Exit 0 when everything holds; 1 when something does not, naming the first failing seq or checkpoint; 2 for
bad input (not a bundle, an unreadable file, an unusable --key, an unreachable --rpc node), with one line
naming it. The check itself is sessions.ledger.verify (offline); --rpc adds server/services/evm.py's on-chain lookup.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from server.cli.errors import EXIT_FAILURE, EXIT_OK, UsageError


def add_verify_parser(sub: argparse._SubParsersAction) -> None:
    """Add the `verify` subcommand to the CLI's subparsers."""
    p = sub.add_parser("verify", help="check an exported room bundle: events, tree, signed checkpoints, anchors")
    p.add_argument("bundle", type=Path, metavar="BUNDLE",
                   help="the bundle: a .zip from GET /api/rooms/{id}/export, or the folder it unzips to")
    p.add_argument("--rpc", metavar="URL", help="also check each EVM anchor transaction on this JSON-RPC node")
    p.add_argument("--key", metavar="VKEY",
                   help="pin the server key: a verifier key (GET /api/ledger/key?room=ID), or a file with "
                        "one or with a PEM public key")
    p.add_argument("--strict", action="store_true",
                   help="also check that every line is the canonical encoding of its event (slower)")
    p.add_argument("--glb", type=Path, action="append", default=[], metavar="FILE.glb",
                   help="also check that this GLB is one the room's mesh provenance records (repeatable); "
                        "a file named <mesh id>.glb or <sha256>.glb must be that mesh's")
    p.add_argument("--report", type=Path, metavar="REPORT.dcm",
                   help="also check a consult record (GET /api/rooms/{id}/report.dcm): every item is the event it "
                        "cites, with an inclusion proof against the record's checkpoint, and none is missing")
    p.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    p.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    """Run the check and print the report; 0 or 1. Raises UsageError (exit 2) for bad input."""
    from sessions.ledger.bundle import BundleError
    from sessions.ledger.verify import verify_bundle

    trusted = _trusted_key(args.key) if args.key else None
    rpc_check, unreachable = None, ()
    if args.rpc:
        from server.services.evm import EvmError, EvmUnavailable, OnChainCheck

        try:
            rpc_check, unreachable = OnChainCheck(args.rpc), (EvmUnavailable,)
        except EvmError as error:
            raise UsageError(f"--rpc {args.rpc}: {error}") from None
    try:
        report = verify_bundle(args.bundle, rpc_check=rpc_check, trusted_key=trusted, strict=args.strict)
    except BundleError as error:
        raise UsageError(str(error)) from None
    except unreachable as error:
        raise UsageError(f"--rpc: {error}") from None
    glb_checks = _check_glbs(report, args.glb) if report.ok else []
    record = _check_report(args.bundle, report, args.report) if report.ok and args.report else None
    if args.json:
        print(json.dumps({**report.to_json(), "glb": [{"file": str(path), "mesh": mesh, "problem": problem}
                                                      for path, problem, mesh in glb_checks],
                          "report": record.to_json() if record else None}, indent=2))
    else:
        _print_report(report)
        for path, problem, mesh in glb_checks:
            print(f"FAILED {path}: {problem}" if problem else f"OK {path}: a GLB of mesh {mesh}")
        if record is not None:
            record.print()
    ok = report.ok and not any(problem for _, problem, _ in glb_checks) and (record is None or record.ok)
    return EXIT_OK if ok else EXIT_FAILURE


@dataclass(frozen=True)
class RecordCheck:
    """The outcome of --report: the file, its items, the checkpoint size it cites, and the problems found."""

    file: Path
    items: int
    size: int | None
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {"file": str(self.file), "ok": self.ok, "items": self.items, "checkpoint": self.size,
                "problems": list(self.problems)}

    def print(self) -> None:
        if self.ok:
            print(f"OK {self.file}: {self.items} items, each the annotation it cites, with an inclusion proof "
                  f"against checkpoint {self.size}; none missing")
        for problem in self.problems:
            print(f"FAILED {self.file}: {problem}")


def _check_report(bundle: Path, report, path: Path) -> RecordCheck:
    """Check the consult record at `path` against the verified bundle. Raises UsageError if it cannot be read
    as DICOM at all."""
    import pydicom

    from server.services.sr import RecordFormatError, read_record
    from sessions.ledger.note import CheckpointError, Verifier, parse_and_verify
    from sessions.ledger.verify import event_lines
    from sessions.report import check_record

    try:
        dataset = pydicom.dcmread(path)
    except (OSError, pydicom.errors.InvalidDicomError) as error:
        raise UsageError(f"{path}: not a readable DICOM file: {error}") from None
    except Exception as error:  # pydicom's parser on a damaged file: the file is the problem
        raise UsageError(f"{path}: a damaged DICOM file: {type(error).__name__}: {error}") from None
    try:
        record = read_record(dataset)
    except RecordFormatError as error:
        return RecordCheck(path, 0, None, (str(error),))
    verifier = Verifier.from_vkey(report.vkey)
    try:
        size = parse_and_verify(record.checkpoint, verifier).size
    except CheckpointError:
        size = None
    problems = check_record(record, report.room, event_lines(bundle), report.signed, verifier)
    return RecordCheck(path, len(record.items), size, tuple(str(p) for p in problems))


def _check_glbs(report, paths: list[Path]) -> list[tuple[Path, str | None, str | None]]:
    """(path, problem or None, mesh id) for each --glb file. Raises UsageError for a file that cannot be read."""
    from server.storage.artifacts import sha256_of
    from sessions.ledger.verify import glb_problem

    results = []
    for path in paths:
        try:
            digest = sha256_of(path)
        except OSError as error:
            raise UsageError(f"{path}: cannot read the GLB: {error.strerror or error}") from None
        mesh, problem = glb_problem(report.meshes, path.name, digest)
        results.append((path, problem, mesh.mesh if mesh is not None else None))
    return results


def _print_report(report) -> None:
    """The human-readable report on stdout. Requires a VerifyReport."""
    if report.failure is not None:
        print(f"FAILED {report.source}: {report.failure.where()}: {report.failure.message}")
        return
    print(f"OK {report.source}")
    print(f"  room {report.room}: {report.events:,} events, {report.checkpoints:,} checkpoints, "
          f"consistent; root {report.root}")
    print(f"  signed by {report.vkey}")
    evm = f", {report.evm_anchors} EVM ({report.evm_checked} checked on chain)" if report.evm_anchors else ""
    print(f"  anchors: {report.local_anchors} local{evm}")
    for mesh in report.meshes:
        glb = ", ".join(f"{variant} {digest[:16]}…" for variant, digest in sorted(mesh.glb.items()))
        inputs = f"inputs {mesh.inputs[:16]}…" if mesh.inputs else "inputs unknown"
        print(f"  mesh {mesh.mesh} ({mesh.preset}, seq {mesh.seq}): {inputs}; GLB {glb}")
    for note in report.notes:
        print(f"  note: {note}")


def _trusted_key(value: str) -> bytes:
    """The raw public key of --key: a verifier key, or a file holding one or a PEM. Raises UsageError."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from sessions.ledger.note import CheckpointError, Verifier

    text = value
    path = Path(value)
    if "+" not in value or path.is_file():
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"--key {value}: not a verifier key, and cannot read it as a file: {error}") from None
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        except ValueError as error:
            raise UsageError(f"--key {value}: not a PEM public key: {error}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise UsageError(f"--key {value}: the PEM holds a {type(key).__name__}, not an Ed25519 key")
        return key.public_bytes_raw()
    try:
        return Verifier.from_vkey(text).public_key
    except CheckpointError as error:
        raise UsageError(f"--key {value}: {error}") from None
