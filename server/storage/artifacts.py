"""Content-addressed files: ``<root>/<sha256[:2]>/<sha256><suffix>``, each written whole (server/storage/files.py).

DICOM instances (``.dcm``) and mesh artifacts (``.glb``) live here, named by the SHA-256 of their content, so
the same bytes are stored once and a name always means the same content.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from server.storage.files import atomic_write, remove_partials


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
        """Store `data` (once) and return its digest."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.path_for(digest, suffix)
        if not path.exists():
            atomic_write(path, data, mode=0o644)
        return digest

    def exists(self, digest: str, suffix: str = "") -> bool:
        return self.path_for(digest, suffix).exists()

    def delete(self, digest: str, suffix: str = "") -> None:
        self.path_for(digest, suffix).unlink(missing_ok=True)

    def remove_partials(self) -> int:
        """Delete the temporary files a crash left behind; returns how many."""
        return remove_partials(self.root)
