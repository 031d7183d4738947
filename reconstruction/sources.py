"""Inputs -> DICOM file candidates: folders (recursive), .zip archives, DICOMDIRs and single files.

A candidate is a `FileRef`: a file on disk or a member of a zip archive, read later (headers while finding
series, pixels while assembling). Nothing here parses images. What cannot hold DICOM images (a DICOMDIR's
missing files, unsafe DICOMDIR records) is listed as `Skipped` with a reason; an input that cannot be read at
all, or an unsafe zip (zip-slip member names, zip bombs), raises `InputError`.

Files are deduplicated by their resolved path, so a folder given together with its DICOMDIR is read once.
"""

from __future__ import annotations

import io
import os
import re
import threading
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import pydicom
from pydicom.uid import DeflatedExplicitVRLittleEndian, MediaStorageDirectoryStorage

from .deflate import file_meta_syntax
from .errors import InputError

_DIRECTORY_NAMES = {"dicomdir", "dirfile"}
_DIRECTORY_RECORD_TYPES = {"PATIENT", "STUDY", "SERIES"}  # records that point at a nested directory file


@dataclass(frozen=True)
class Skipped:
    """An input file (or group of files) left out, and why. ``path`` is for people, not for reading."""

    path: str
    reason: str


@dataclass(frozen=True, order=True)
class FileRef:
    """A readable file: ``path`` on disk, or member ``member`` of the zip archive at ``path``."""

    path: Path
    member: str | None = None

    def __str__(self) -> str:
        return f"{self.path}!{self.member}" if self.member is not None else str(self.path)

    def read_bytes(self) -> bytes:
        """The whole file. Requires the file (or archive member) to still exist."""
        if self.member is None:
            return self.path.read_bytes()
        try:
            with zipfile.ZipFile(self.path) as archive:
                return archive.read(self.member)
        except (zipfile.BadZipFile, KeyError, OSError, RuntimeError, EOFError) as e:
            raise InputError(str(self), f"cannot read zip member ({e})") from e

    def open(self) -> BinaryIO:
        """A binary stream on the file; the caller closes it."""
        if self.member is None:
            return open(self.path, "rb")
        return io.BytesIO(self.read_bytes())


class Archives:
    """The zip archives one read goes through: one open ZipFile per archive and thread, all closed together.

    A context manager. `open` and `read_bytes` read a FileRef like FileRef's own methods do, without parsing
    an archive's central directory for every member; files on disk are opened directly.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._opened: list[zipfile.ZipFile] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Archives:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            for archive in self._opened:
                archive.close()
            self._opened.clear()

    def open(self, ref: FileRef) -> BinaryIO:
        """A stream on the file or member (a member decompresses as it is read); the caller closes it."""
        if ref.member is None:
            return ref.open()
        try:
            return self._archive(ref.path).open(ref.member)
        except (zipfile.BadZipFile, KeyError, OSError, RuntimeError, EOFError) as e:
            raise InputError(str(ref), f"cannot read zip member ({e})") from e

    def read_bytes(self, ref: FileRef) -> bytes:
        """The whole file or member."""
        with self.open(ref) as stream:
            try:
                return stream.read()
            except (zipfile.BadZipFile, OSError, RuntimeError, EOFError) as e:
                raise InputError(str(ref), f"cannot read zip member ({e})") from e

    def _archive(self, path: Path) -> zipfile.ZipFile:
        archives: dict[Path, zipfile.ZipFile] = self._local.__dict__.setdefault("archives", {})
        if path not in archives:
            archives[path] = zipfile.ZipFile(path)
            with self._lock:
                self._opened.append(archives[path])
        return archives[path]


@dataclass(frozen=True)
class ZipLimits:
    """Zip bomb guards. An archive is refused when its declared uncompressed size exceeds ``max_bytes``,
    or when it (or one member) expands more than ``max_ratio`` times and is larger than ``ratio_floor``."""

    max_bytes: int = 4 * 1024**3
    max_members: int = 200_000
    max_ratio: float = 100.0
    ratio_floor: int = 16 * 1024**2


@dataclass(frozen=True)
class Sources:
    """The candidate files found in the inputs, in a stable order, and what was left out."""

    files: tuple[FileRef, ...]
    skipped: tuple[Skipped, ...] = field(default_factory=tuple)


def expand_inputs(
    inputs: Sequence[str | Path], *, zip_limits: ZipLimits | Mapping[str, float] | None = None
) -> Sources:
    """Expand folders, zips, DICOMDIRs and files into candidate files.

    Requires every input to exist (else InputError). ``zip_limits`` may also be a mapping of ZipLimits
    fields. DICOMDIRs given directly are followed first, so that a folder given with its DICOMDIR does not
    list the DICOMDIR itself as skipped.
    """
    if isinstance(zip_limits, Mapping):
        zip_limits = ZipLimits(**zip_limits)  # type: ignore[arg-type]
    limits = zip_limits or ZipLimits()
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.exists():
            raise InputError(str(p), "no such file or folder")
    collector = _Collector(limits)
    directories = [p for p in paths if p.is_file() and is_directory_file(p)]
    for p in directories:
        collector.follow_directory(p)
    for p in paths:
        if p in directories:
            continue
        if p.is_dir():
            collector.walk(p)
        elif _is_zip(p) or _has_zip_magic(p):
            collector.add_zip(p)
        else:
            collector.add(FileRef(p))
    return Sources(tuple(collector.files), tuple(collector.skipped))


def is_directory_file(path: Path) -> bool:
    """True for a DICOMDIR or a Philips DIRFILE (both are Media Storage Directory Storage objects)."""
    if path.name.lower() in _DIRECTORY_NAMES:
        return True
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
    except Exception:  # whatever pydicom raises on a file without a File Meta: not a directory file
        return False
    return str(meta.get("MediaStorageSOPClassUID", "")) == MediaStorageDirectoryStorage


class _Collector:
    """Accumulates candidates in order, deduplicated by resolved path (and zip member)."""

    def __init__(self, limits: ZipLimits) -> None:
        self.limits = limits
        self.files: list[FileRef] = []
        self.skipped: list[Skipped] = []
        self._seen: set[tuple[str, str | None]] = set()

    def _first_time(self, path: Path, member: str | None = None) -> bool:
        key = (os.path.realpath(path), member)
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    def add(self, ref: FileRef) -> None:
        if self._first_time(ref.path, ref.member):
            self.files.append(ref)

    def walk(self, folder: Path) -> None:
        """Add every file under ``folder`` (recursively, sorted); zips inside (by name or content) are
        expanded."""
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if _is_zip(path) or _has_zip_magic(path):
                    self.add_zip(path)
                else:
                    self.add(FileRef(path))

    def add_zip(self, path: Path) -> None:
        """Add the members of a zip archive. Requires a safe archive (else InputError)."""
        if not self._first_time(path, "*"):
            return
        for member in zip_members(path, self.limits):
            if _is_zip_name(member):
                self.skipped.append(Skipped(f"{path}!{member}", "zip archive inside a zip archive"))
            else:
                self.add(FileRef(path, member))

    def follow_directory(self, path: Path) -> None:
        """Add the files a DICOMDIR (or DIRFILE) references; missing ones are summarised as one Skipped."""
        self._first_time(path)
        report = _DirectoryReport()
        _follow_directory(path, None, report, visited=set())
        for ref in report.files:
            if self._first_time(ref):
                self.files.append(FileRef(ref))
        label = path.name
        if report.missing:
            self.skipped.append(
                Skipped(str(path), f"{report.missing} files referenced by {label} are missing")
            )
        if report.unsafe:
            self.skipped.append(
                Skipped(str(path), f"{report.unsafe} records of {label} point outside its folder (ignored)")
            )
        for nested, problem in report.unreadable:
            self.skipped.append(Skipped(str(nested), problem))
        if not report.files and not report.missing and not report.unsafe and not report.unreadable:
            self.skipped.append(Skipped(str(path), f"{label} references no files"))


@dataclass
class _DirectoryReport:
    files: list[Path] = field(default_factory=list)
    missing: int = 0
    unsafe: int = 0
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    listings: dict[Path, dict[str, str] | None] = field(default_factory=dict)


def _follow_directory(path: Path, root: Path | None, report: _DirectoryReport, visited: set[str]) -> None:
    """Collect the files a directory object references, relative to the file-set ``root`` (found from the
    references when None). Philips DIRFILEs nest: STUDY and SERIES records point at further DIRFILEs, all
    relative to the same root. Requires a readable ``path`` when ``root`` is None (else InputError).
    """
    real = os.path.realpath(path)
    if real in visited:
        return
    visited.add(real)
    try:
        records = _directory_records(path)
    except InputError as e:
        if root is None:
            raise
        report.unreadable.append((path, e.problem))
        return
    references = [_file_id_parts(r.get("ReferencedFileID")) for r in records]
    if root is None:
        root = _file_set_root(path, references, report.listings)
    for record, parts in zip(records, references, strict=True):
        if not parts or record.get("RecordInUseFlag", 0xFFFF) == 0:
            continue
        if not _safe_file_id(parts):
            report.unsafe += 1
            continue
        target = _resolve_file_id(root, parts, report.listings)
        if target is None:
            report.missing += 1
            continue
        nested = (
            str(record.get("DirectoryRecordType", "")).strip().upper() in _DIRECTORY_RECORD_TYPES
            or str(record.get("ReferencedSOPClassUIDInFile", "")) == MediaStorageDirectoryStorage
        )
        if nested:
            _follow_directory(target, root, report, visited)
        else:
            report.files.append(target)


def _file_set_root(path: Path, references: list[list[str]], listings: dict) -> Path:
    """The folder Referenced File IDs are relative to: the DICOMDIR's own folder, as the standard says; for a
    nested Philips DIRFILE given directly, the nearest ancestor where its references resolve."""
    samples = [parts for parts in references if parts and _safe_file_id(parts)][:5]
    for candidate in [path.parent, *path.parent.parents][:6]:
        if any(_resolve_file_id(candidate, parts, listings) for parts in samples):
            return candidate
    return path.parent


def _directory_records(path: Path) -> list[pydicom.Dataset]:
    """The directory records of a DICOMDIR, flat (robust to reordered or invalid record hierarchies)."""
    try:
        with open(path, "rb") as fp:
            deflated = file_meta_syntax(fp)[0] == DeflatedExplicitVRLittleEndian
    except OSError as e:
        raise InputError(str(path), f"cannot read DICOMDIR ({e})") from e
    if deflated:  # pydicom would inflate it whole; PS3.10 requires Explicit VR Little Endian of a DICOMDIR
        raise InputError(str(path), "a DICOMDIR must be Explicit VR Little Endian, not deflated")
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as e:  # pydicom raises many types on malformed files; report one typed error
        raise InputError(str(path), f"cannot read DICOMDIR ({type(e).__name__}: {e})") from e
    if "DirectoryRecordSequence" not in ds:
        raise InputError(str(path), "not a DICOMDIR (no Directory Record Sequence)")
    return list(ds.DirectoryRecordSequence or [])


def _file_id_parts(value: object) -> list[str]:
    if value is None:
        return []
    parts = [value] if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    return [str(p).strip() for p in parts if str(p).strip()]


def _safe_file_id(parts: list[str]) -> bool:
    return all(p not in (".", "..") and "/" not in p and "\\" not in p and ":" not in p for p in parts)


def _resolve_file_id(
    root: Path, parts: list[str], listings: dict[Path, dict[str, str] | None]
) -> Path | None:
    """The file a Referenced File ID names under ``root``; case-insensitive (media IDs are upper case)."""
    direct = root.joinpath(*parts)
    if direct.is_file():
        return direct
    current = root
    for part in parts:
        if current not in listings:
            try:
                listings[current] = {n.lower(): n for n in os.listdir(current)}
            except OSError:
                listings[current] = None
        names = listings[current]
        if names is None or part.lower() not in names:
            return None
        current = current / names[part.lower()]
    return current if current.is_file() else None


def zip_members(path: Path, limits: ZipLimits) -> list[str]:
    """The file members of a zip, sorted. Requires a safe archive: raises InputError for zip-slip names,
    zip bombs (size or ratio limits), or an unreadable archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = [i for i in archive.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise InputError(str(path), f"not a readable zip archive ({e})") from e
    if len(infos) > limits.max_members:
        raise InputError(str(path), f"{len(infos)} members exceed the limit of {limits.max_members}")
    for info in infos:
        if not _safe_member_name(info.filename):
            raise InputError(str(path), f"unsafe member name {info.filename!r} (absolute or '..': zip-slip)")
        if info.flag_bits & 0x1:
            raise InputError(str(path), f"member {info.filename!r} is encrypted")
        _check_ratio(path, info.file_size, info.compress_size, limits, f"member {info.filename!r}")
    total = sum(i.file_size for i in infos)
    if total > limits.max_bytes:
        raise InputError(
            str(path), f"uncompressed size {total} bytes exceeds the limit of {limits.max_bytes} (zip bomb?)"
        )
    _check_ratio(path, total, sum(i.compress_size for i in infos), limits, "archive")
    return sorted(i.filename for i in infos)


def _check_ratio(path: Path, size: int, compressed: int, limits: ZipLimits, what: str) -> None:
    if size > limits.ratio_floor and size > limits.max_ratio * max(compressed, 1):
        ratio = size / max(compressed, 1)
        raise InputError(
            str(path), f"{what} expands {ratio:.0f}x (limit {limits.max_ratio:.0f}x): refused as a zip bomb"
        )


def _safe_member_name(name: str) -> bool:
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or re.match(r"^[A-Za-z]:", normalized):
        return False
    return ".." not in PurePosixPath(normalized).parts


def _is_zip_name(name: str) -> bool:
    return name.lower().endswith(".zip")


def _is_zip(path: Path) -> bool:
    return _is_zip_name(path.name) and path.is_file()


def _has_zip_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False
