"""Content-addressed files: ``<root>/<sha256[:2]>/<sha256><suffix>``, each written whole (server/storage/files.py).

DICOM instances (``.dcm``) and mesh artifacts (``.glb``) live here, named by the SHA-256 of their content, so
the same bytes are stored once and a name always means the same content.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from server.storage.errors import CorruptStoreError
from server.storage.files import atomic_write, remove_partials


class ArtifactStore:
    """Immutable files named by the SHA-256 of their content."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._verified: dict[Path, tuple[int, int, int]] = {}

    def path_for(self, digest: str, suffix: str = "") -> Path:
        """Requires ``digest`` to be 64 lowercase hex characters."""
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a sha256 hex digest: {digest!r}")
        return self.root / digest[:2] / f"{digest}{suffix}"

    def put_bytes(self, data: bytes, suffix: str = "") -> str:
        """Store `data` (once) and return its digest."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.path_for(digest, suffix)
        if not path.exists():
            atomic_write(path, data)
        return digest

    def exists(self, digest: str, suffix: str = "") -> bool:
        return self.path_for(digest, suffix).exists()

    def delete(self, digest: str, suffix: str = "") -> None:
        self.path_for(digest, suffix).unlink(missing_ok=True)

    def stored(self) -> Iterator[tuple[str, str, Path]]:
        """(digest, suffix, path) of every stored file."""
        for path in self.root.glob("??/*"):
            digest, suffix = path.name[:64], path.name[64:]
            if len(digest) == 64 and path.is_file():
                yield digest, suffix, path

    def verified_path(self, digest: str, suffix: str = "") -> Path:
        """The path of a stored file whose content still hashes to `digest`. Raises CorruptStoreError naming the
        file if it does not (a disk error, someone editing it). A file's check is remembered while its size,
        modification time and inode stay the same, so a hot file is hashed once."""
        path = self.path_for(digest, suffix)
        stat = path.stat()
        key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if self._verified.get(path) != key:
            if sha256_of(path) != digest:
                raise CorruptStoreError(f"{path}: its content no longer matches its content address; it is not "
                                        "served (restore it, or delete the study and import it again)")
            self._verified[path] = key
        return path

    def remove_partials(self, older_than: float = 0.0) -> int:
        """Delete the temporary files a crash left behind (not modified for `older_than` s); returns how many."""
        return remove_partials(self.root, older_than)


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's content, hex, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
