"""Writing a file whole or not at all: a temporary file in the same folder, fsynced, then renamed (or linked).

A crash never leaves a partial file under its final name; `remove_partials` sweeps the temporary files a
crash left behind (they all start with TMP_PREFIX).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

TMP_PREFIX = ".tmp-"


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600, exclusive: bool = False) -> bool:
    """Write `data` to `path` atomically with permissions `mode`; returns whether this call wrote it.

    exclusive: never replace an existing file (the final step is a hard link, which fails if `path` exists), so
    two writers racing for a key file both end up with the first one's; the call then returns False.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        if not exclusive:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def make_private(root: Path) -> int:
    """Make `root` and everything below it readable by the owner only (folders 0700, files 0600); returns how
    many had wider permissions (a data folder from an earlier version, or one copied with a wide umask)."""
    changed = 0
    for path in (root, *root.rglob("*")):
        mode = path.stat().st_mode & 0o777
        private = 0o700 if path.is_dir() else 0o600
        if mode & 0o077:
            os.chmod(path, private)
            changed += 1
    return changed


def remove_partials(root: Path, older_than: float = 0.0) -> int:
    """Delete the temporary files a crash left anywhere under `root`, unless modified in the last `older_than`
    seconds (another process sharing the folder may be writing them); returns how many."""
    now = time.time()
    return sum(remove_unless_recent(path, older_than, now) for path in root.rglob(f"{TMP_PREFIX}*"))


def remove_unless_recent(path: Path, older_than: float, now: float) -> bool:
    """Delete `path` unless it was modified in the `older_than` seconds before `now` (0: delete it anyway);
    whether it was deleted (a file another process removed first was not)."""
    try:
        if older_than and now - path.stat().st_mtime < older_than:
            return False
        path.unlink()
    except FileNotFoundError:
        return False
    return True
