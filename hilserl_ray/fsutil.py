"""File-system helpers shared by everything that writes: atomic renames (checkpoints, buffers,
caches) and the checks of where a command will write (a full disk is `errors.DiskFull`)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries, so a rename into it survives a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unwritable(path: Path | str) -> Path | None:
    """What stops this user from writing `path` (a file or directory, existing or to be made): the
    nearest existing one of it and its parents when this user cannot write into it; else None."""
    p = Path(path).expanduser().absolute()
    existing = next((q for q in [p, *p.parents] if os.path.exists(q)), None)  # never raises
    if existing is None:
        return None
    need = os.W_OK | os.X_OK if os.path.isdir(existing) else os.W_OK
    return None if os.access(existing, need) else existing
