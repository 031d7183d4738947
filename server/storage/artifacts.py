"""Content-addressed artifact files: ``<root>/<sha256[:2]>/<sha256><suffix>``, written atomically.

A file is written to a temporary name in the same folder, fsynced, then renamed into place, so a crash
never leaves a partial artifact under a final name. Temporary files left by a crash are removed at start.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

TMP_PREFIX = ".tmp-"


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` via a temporary file + rename (same folder, so the rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class ArtifactStore:
    """Immutable files named by the SHA-256 of their content."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, digest: str, suffix: str = "") -> Path:
        """Requires ``digest`` to be 64 lowercase hex characters."""
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a sha256 hex digest: {digest!r}")
        return self.root / digest[:2] / f"{digest}{suffix}"

    def put_bytes(self, data: bytes, suffix: str = "") -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self.path_for(digest, suffix)
        if not path.exists():
            atomic_write_bytes(path, data)
        return digest

    def put_file(self, src: Path, suffix: str = "", *, move: bool = False) -> str:
        """Store a file's content (moving it when ``move`` and on the same filesystem)."""
        digest = sha256_file(src)
        path = self.path_for(digest, suffix)
        if path.exists():
            if move:
                src.unlink(missing_ok=True)
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
        os.close(fd)
        try:
            if move:
                shutil.move(str(src), tmp)
            else:
                shutil.copyfile(src, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def exists(self, digest: str, suffix: str = "") -> bool:
        return self.path_for(digest, suffix).exists()

    def delete(self, digest: str, suffix: str = "") -> None:
        self.path_for(digest, suffix).unlink(missing_ok=True)

    def remove_partials(self) -> int:
        """Delete temporary files a crash left behind; returns how many."""
        n = 0
        for p in self.root.rglob(f"{TMP_PREFIX}*"):
            p.unlink(missing_ok=True)
            n += 1
        return n
