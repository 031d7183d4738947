"""The study catalog: studies, series, instances, reconstruction jobs and meshes, in SQLite (WAL), or in the
PostgreSQL database several server processes share (THEATRUM_DATABASE_URL; server/storage/postgres.py).

Rows hold pseudonymous ids for everything a client sees. The original DICOM UIDs are kept only in columns
that never leave the server (``series.uid``, ``instances.sop_uid``), because the pipeline needs them to pick a
series. Queries are short and run on the caller's thread; the server calls them from the event loop.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.storage.errors import database_errors, quick_check
from server.storage.postgres import PgConnection, is_postgres_url
from sessions.ledger.dialects import POSTGRESQL, ddl

SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    modalities TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS series (
    id TEXT PRIMARY KEY,
    study_id TEXT NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    uid TEXT NOT NULL,
    modality TEXT NOT NULL,
    description TEXT NOT NULL,
    slices INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    columns INTEGER NOT NULL,
    spacing_mm TEXT NOT NULL,
    input_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    study_id TEXT NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_id);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    study_id TEXT NOT NULL,
    series_id TEXT NOT NULL,
    params TEXT NOT NULL,
    cache_key TEXT NOT NULL,
    state TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT '',
    percent REAL NOT NULL DEFAULT 0,
    error TEXT,
    mesh_ids TEXT NOT NULL DEFAULT '[]',
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS meshes (
    id TEXT PRIMARY KEY,
    study_id TEXT NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    series_id TEXT NOT NULL,
    preset TEXT NOT NULL,
    threshold REAL NOT NULL,
    triangles INTEGER NOT NULL,
    vertices INTEGER NOT NULL,
    bbox_lps_mm TEXT NOT NULL,
    artifacts TEXT NOT NULL,
    created_at REAL NOT NULL,
    params TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS meshes_study ON meshes(study_id);
"""
# Columns added after a table's first release: (table, column, definition), added to older catalogs at open.
# studies.clean_descriptors: 1 once its descriptions are clean descriptors (every import since they exist; older
# rows are cleaned at start by server/services/imports.clean_stored_descriptions).
ADDED_COLUMNS = (("meshes", "params", "TEXT NOT NULL DEFAULT '{}'"),
                 ("studies", "clean_descriptors", "INTEGER NOT NULL DEFAULT 0"),
                 # what the reconstruction of a series warns of (uneven spacing, gaps, dropped duplicates): JSON
                 ("series", "warnings", "TEXT NOT NULL DEFAULT '[]'"))

# Migrations, by the schema version they lead to (PRAGMA user_version); each runs once, in order.
MIGRATIONS: dict[int, str] = {
    # Segmentations (SEG, RTSTRUCT, NIfTI, or grown in a room) and their structures. `files` lists the stored
    # source files {digest, suffix}; `masks` is the digest of the structures' masks on the series' grid (.npz).
    1: """
CREATE TABLE IF NOT EXISTS segmentations (
    id TEXT PRIMARY KEY,
    study_id TEXT NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    series_id TEXT NOT NULL,
    format TEXT NOT NULL,
    files TEXT NOT NULL,
    masks TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS segmentations_study ON segmentations(study_id);
CREATE TABLE IF NOT EXISTS structures (
    segmentation_id TEXT NOT NULL REFERENCES segmentations(id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    name TEXT NOT NULL,
    color TEXT NOT NULL,
    code TEXT NOT NULL,
    volume_ml REAL NOT NULL,
    PRIMARY KEY (segmentation_id, number)
);
ALTER TABLE meshes ADD COLUMN segmentation_id TEXT;
""",
}



def postgres_schema() -> list[str]:
    """The whole schema, migrations included, as PostgreSQL statements that can run again (IF NOT EXISTS)."""
    script = SCHEMA + "".join(MIGRATIONS[v] for v in sorted(MIGRATIONS))
    statements = [s.strip() for s in script.split(";") if s.strip()]
    statements += [f"ALTER TABLE {table} ADD COLUMN {column} {definition}" for table, column, definition in
                   ADDED_COLUMNS]
    return [ddl(s.replace("ADD COLUMN ", "ADD COLUMN IF NOT EXISTS "), POSTGRESQL) for s in statements]


def _series_row(row: dict) -> dict:
    """A series row with its JSON columns decoded."""
    row["spacing_mm"] = json.loads(row["spacing_mm"])
    row["warnings"] = json.loads(row.get("warnings") or "[]")
    return row


JOB_STATES = ("queued", "running", "done", "failed", "cancelled")


@dataclass(frozen=True)
class SeriesRecord:
    """A series row: its pseudonym, its study, the original UID (never shown), what it is, and the content
    address of its pixels (`input_hash`, over its instances' SHA-256)."""

    id: str
    study_id: str
    uid: str
    modality: str
    description: str
    slices: int
    rows: int
    columns: int
    spacing_mm: list[float]
    input_hash: str
    warnings: tuple[str, ...] = ()  # the reconstruction's warnings about the series (no identifying values)


class Catalog:
    """A thin, typed wrapper over the catalog database. Thread-safe through one lock."""

    def __init__(self, location: Path | str) -> None:
        """Open (or create) the catalog: a SQLite file, or a PostgreSQL URL. Raises CorruptStoreError naming the
        file if SQLite finds it damaged, StorageError if PostgreSQL cannot be reached."""
        self._lock = threading.RLock()
        if is_postgres_url(location):
            self.path = "the catalog (PostgreSQL)"
            with database_errors("the catalog"):
                self._db = PgConnection(str(location), rows="named", autocommit=True, name="theatrum-catalog")
                self._db.create_schema(postgres_schema())
            return
        path = Path(location)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            quick_check(self._db, path)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
            self._migrate()
            for table, column, definition in ADDED_COLUMNS:
                present = {row["name"] for row in self._db.execute(f"PRAGMA table_info({table})")}
                if column not in present:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        """Run the migrations this database has not had yet, each in one transaction with its version."""
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        for target in sorted(v for v in MIGRATIONS if v > version):
            try:
                script = f"BEGIN IMMEDIATE;{MIGRATIONS[target]}PRAGMA user_version = {int(target)};COMMIT;"
                self._db.executescript(script)
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    # -- low level ---------------------------------------------------------------------------------------
    def _all(self, sql: str, args: Iterable[Any] = ()) -> list[dict]:
        with self._lock, database_errors("the catalog"):
            return [dict(r) for r in self._db.execute(sql, tuple(args)).fetchall()]

    def _execute(self, sql: str, args: Iterable[Any] = ()) -> None:
        with self._lock, database_errors("the catalog"):
            self._db.execute(sql, tuple(args))

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection | PgConnection]:
        """The connection inside one IMMEDIATE transaction, under the lock."""
        with self._lock, database_errors("the catalog"):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _one(self, sql: str, args: Iterable[Any] = ()) -> dict | None:
        rows = self._all(sql, args)
        return rows[0] if rows else None

    def transaction(self) -> _Transaction:
        """``with catalog.transaction() as batch:`` makes the batch's writes atomically (an import)."""
        return _Transaction(self)

    # -- studies -----------------------------------------------------------------------------------------
    def study(self, study_id: str) -> dict | None:
        return self._one("SELECT * FROM studies WHERE id = ?", (study_id,))

    def studies(self) -> list[dict]:
        return self._all("SELECT * FROM studies ORDER BY created_at DESC, id")

    def series_of(self, study_id: str) -> list[dict]:
        rows = self._all("SELECT * FROM series WHERE study_id = ? ORDER BY description, id", (study_id,))
        return [_series_row(r) for r in rows]

    def series(self, series_id: str) -> dict | None:
        r = self._one("SELECT * FROM series WHERE id = ?", (series_id,))
        return _series_row(r) if r else None

    def studies_to_clean(self) -> list[str]:
        """The studies whose descriptions were stored before they were cleaned of the patient's identifiers."""
        return [r["id"] for r in self._all("SELECT id FROM studies WHERE clean_descriptors = 0 ORDER BY id")]

    def set_clean_descriptions(self, study_id: str, description: str, series: dict[str, str]) -> None:
        """Store a study's clean description and its series' (series id -> description), and mark it clean."""
        with self._writing() as db:
            db.execute("UPDATE studies SET description = ?, clean_descriptors = 1 WHERE id = ?",
                       (description, study_id))
            for series_id, text in series.items():
                db.execute("UPDATE series SET description = ? WHERE id = ? AND study_id = ?",
                           (text, series_id, study_id))

    def instances_of(self, study_id: str) -> list[dict]:
        return self._all("SELECT * FROM instances WHERE study_id = ? ORDER BY sop_uid", (study_id,))

    def instance(self, sop_uid: str) -> dict | None:
        return self._one("SELECT * FROM instances WHERE sop_uid = ?", (sop_uid,))

    def instance_count(self, study_id: str) -> int:
        r = self._one("SELECT count(*) AS n FROM instances WHERE study_id = ?", (study_id,))
        return int(r["n"]) if r else 0

    def delete_study(self, study_id: str) -> list[str]:
        """Remove a study and everything derived from it; returns the artifact digests no longer referenced."""
        with self._writing() as db:
            shas = [r[0] for r in db.execute("SELECT sha256 FROM instances WHERE study_id = ?", (study_id,))]
            for (arts,) in db.execute("SELECT artifacts FROM meshes WHERE study_id = ?", (study_id,)):
                shas.extend(json.loads(arts).values())
            for files, masks in db.execute("SELECT files, masks FROM segmentations WHERE study_id = ?", (study_id,)):
                shas.extend(f["digest"] for f in json.loads(files))
                shas.append(masks)
            db.execute("DELETE FROM structures WHERE segmentation_id IN "
                       "(SELECT id FROM segmentations WHERE study_id = ?)", (study_id,))
            db.execute("DELETE FROM segmentations WHERE study_id = ?", (study_id,))
            db.execute("DELETE FROM meshes WHERE study_id = ?", (study_id,))
            db.execute("DELETE FROM jobs WHERE study_id = ?", (study_id,))
            db.execute("DELETE FROM instances WHERE study_id = ?", (study_id,))
            db.execute("DELETE FROM series WHERE study_id = ?", (study_id,))
            db.execute("DELETE FROM studies WHERE id = ?", (study_id,))
            still = set()
            for sha in shas:
                if db.execute("SELECT 1 FROM instances WHERE sha256 = ? LIMIT 1", (sha,)).fetchone():
                    still.add(sha)
        return sorted(set(shas) - still)

    def referenced(self) -> set[tuple[str, str]]:
        """Every (digest, suffix) a row refers to: instances (.dcm), mesh artifacts (.glb), segmentation files
        and their masks (.npz)."""
        files = {(row["sha256"], ".dcm") for row in self._all("SELECT sha256 FROM instances")}
        for row in self._all("SELECT artifacts FROM meshes"):
            files.update((digest, ".glb") for digest in json.loads(row["artifacts"]).values())
        for row in self._all("SELECT files, masks FROM segmentations"):
            files.update((f["digest"], f["suffix"]) for f in json.loads(row["files"]))
            files.add((row["masks"], ".npz"))
        return files

    # -- jobs --------------------------------------------------------------------------------------------
    def add_job(self, job: dict) -> None:
        self._execute(
            "INSERT INTO jobs (id, study_id, series_id, params, cache_key, state, created_at) "
            "VALUES (?, ?, ?, ?, ?, 'queued', ?)",
            (job["id"], job["study_id"], job["series_id"], json.dumps(job["params"], sort_keys=True),
             job["cache_key"], time.time()),
        )

    def job(self, job_id: str) -> dict | None:
        r = self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _decode_job(r) if r else None

    def jobs_in(self, states: Iterable[str]) -> list[dict]:
        states = tuple(states)
        marks = ",".join("?" * len(states))
        rows = self._all(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY created_at", states)
        return [_decode_job(r) for r in rows]

    def count_jobs(self, states: Iterable[str]) -> int:
        """How many jobs are in one of `states`."""
        states = tuple(states)
        r = self._one(f"SELECT count(*) AS n FROM jobs WHERE state IN ({','.join('?' * len(states))})", states)
        return int(r["n"]) if r else 0

    def update_job(self, job_id: str, **fields: Any) -> None:
        if "mesh_ids" in fields:
            fields["mesh_ids"] = json.dumps(fields["mesh_ids"])
        if "state" in fields and fields["state"] not in JOB_STATES:
            raise ValueError(f"unknown job state {fields['state']!r}")
        cols = ", ".join(f"{k} = ?" for k in fields)
        self._execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))

    # -- meshes ------------------------------------------------------------------------------------------
    def add_mesh(self, mesh: dict) -> None:
        self._execute(
            upsert("meshes", ("id", "study_id", "series_id", "preset", "threshold", "triangles", "vertices",
                              "bbox_lps_mm", "artifacts", "created_at", "params", "segmentation_id")),
            (mesh["id"], mesh["study_id"], mesh["series_id"], mesh["preset"], mesh["threshold"],
             mesh["triangles"], mesh["vertices"], json.dumps(mesh["bbox_lps_mm"]),
             json.dumps(mesh["artifacts"], sort_keys=True), time.time(),
             json.dumps(mesh.get("params", {}), sort_keys=True), mesh.get("segmentation_id")),
        )

    def mesh(self, mesh_id: str) -> dict | None:
        r = self._one("SELECT * FROM meshes WHERE id = ?", (mesh_id,))
        return _decode_mesh(r) if r else None

    def meshes_of(self, study_id: str) -> list[dict]:
        rows = self._all("SELECT * FROM meshes WHERE study_id = ? ORDER BY created_at, preset", (study_id,))
        return [_decode_mesh(r) for r in rows]


    # -- segmentations ---------------------------------------------------------------------------------------
    def segmentation(self, segmentation_id: str) -> dict | None:
        r = self._one("SELECT * FROM segmentations WHERE id = ?", (segmentation_id,))
        return self._with_structures(r) if r else None

    def segmentations_of(self, study_id: str) -> list[dict]:
        rows = self._all("SELECT * FROM segmentations WHERE study_id = ? ORDER BY created_at, id", (study_id,))
        return [self._with_structures(r) for r in rows]

    def _with_structures(self, r: dict) -> dict:
        r["files"] = json.loads(r["files"])
        r["structures"] = [{**row, "code": json.loads(row["code"])} for row in self._all(
            "SELECT number, name, color, code, volume_ml FROM structures WHERE segmentation_id = ? ORDER BY number",
            (r["id"],))]
        return r

    def add_segmentation(self, segmentation: dict) -> None:
        """Add a segmentation and its structures in one transaction (a grown structure; imports use a Batch)."""
        with self.transaction() as batch:
            batch.add_segmentation(segmentation)


class Batch:
    """The writes of one import, in one transaction (see `Catalog.transaction`)."""

    def __init__(self, db: sqlite3.Connection | PgConnection) -> None:
        self._db = db

    def add_study(self, study_id: str, description: str, modality: str) -> None:
        """Add the study if it is new, and `modality` to its modalities."""
        self._db.execute("INSERT INTO studies (id, created_at, description, modalities, clean_descriptors) "
                         "VALUES (?, ?, ?, '', 1) ON CONFLICT (id) DO NOTHING", (study_id, time.time(), description))
        (current,) = self._db.execute("SELECT modalities FROM studies WHERE id = ?", (study_id,)).fetchone()
        modalities = set(filter(None, current.split("\\"))) | {modality}
        self._db.execute("UPDATE studies SET modalities = ? WHERE id = ?", ("\\".join(sorted(modalities)), study_id))

    def instance_sha256(self, sop_uid: str) -> str | None:
        """The content hash of a stored instance, or None if it is new."""
        row = self._db.execute("SELECT sha256 FROM instances WHERE sop_uid = ?", (sop_uid,)).fetchone()
        return row[0] if row else None

    def add_instance(self, sop_uid: str, study_id: str, sha256: str, size: int) -> None:
        """Record a stored instance. Requires a new SOPInstanceUID."""
        self._db.execute("INSERT INTO instances (sop_uid, study_id, sha256, bytes) VALUES (?, ?, ?, ?)",
                         (sop_uid, study_id, sha256, size))

    def put_series(self, series: SeriesRecord) -> None:
        """Add or replace a series row."""
        self._db.execute(
            upsert("series", ("id", "study_id", "uid", "modality", "description", "slices", "rows", "columns",
                              "spacing_mm", "input_hash", "warnings")),
            (series.id, series.study_id, series.uid, series.modality, series.description, series.slices,
             series.rows, series.columns, json.dumps(series.spacing_mm), series.input_hash,
             json.dumps(list(series.warnings))))


    def add_segmentation(self, segmentation: dict) -> None:
        """Add a segmentation row {id, study_id, series_id, format, files, masks, structures: [{number, name,
        color, code, volume_ml}]} (replacing one of the same id) and its structures."""
        self._db.execute("DELETE FROM structures WHERE segmentation_id = ?", (segmentation["id"],))
        self._db.execute(
            upsert("segmentations", ("id", "study_id", "series_id", "format", "files", "masks", "created_at")),
            (segmentation["id"], segmentation["study_id"], segmentation["series_id"], segmentation["format"],
             json.dumps(segmentation["files"]), segmentation["masks"], time.time()))
        self._db.executemany(
            "INSERT INTO structures (segmentation_id, number, name, color, code, volume_ml) VALUES (?, ?, ?, ?, ?, ?)",
            [(segmentation["id"], s["number"], s["name"], s["color"], json.dumps(s["code"], sort_keys=True),
              s["volume_ml"]) for s in segmentation["structures"]])


class _Transaction:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def __enter__(self) -> Batch:
        self.catalog._lock.acquire()
        try:
            with database_errors("the catalog"):
                self.catalog._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.catalog._lock.release()
            raise
        return Batch(self.catalog._db)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            with database_errors("the catalog"):
                self.catalog._db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.catalog._lock.release()


def upsert(table: str, columns: tuple[str, ...], key: str = "id") -> str:
    """INSERT of one row that replaces the values of a row with the same `key` (both engines' ON CONFLICT)."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates}")


def _decode_job(r: dict) -> dict:
    r["params"] = json.loads(r["params"])
    r["mesh_ids"] = json.loads(r["mesh_ids"])
    return r


def _decode_mesh(r: dict) -> dict:
    r["bbox_lps_mm"] = json.loads(r["bbox_lps_mm"])
    r["artifacts"] = json.loads(r["artifacts"])
    r["params"] = json.loads(r["params"])
    return r
