"""File-system helpers shared by everything that writes: atomic renames (checkpoints, buffers,
caches), the checks of where a command will write, and the one way a full disk is told to the
user (`DiskFull`)."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from hilserl_ray.errors import UserError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# Rust writers (safetensors) raise their own error type; its text carries the OS error number.
NO_SPACE_TEXT = tuple(f"(os error {n})" for n in NO_SPACE)


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries, so a rename into it survives a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DiskFull(UserError):
    """No space left (or over quota) where a run writes: the run stops with this one line (exit 2).

    What was committed before stays as it was (the replay store's last commit, the newest complete
    checkpoint), so `--resume` goes on from there once there is room."""

    def __init__(self, directory: str | Path, doing: str):
        self.directory, self.doing = str(directory), doing
        super().__init__(
            f"the disk is full (no space left while {doing})",
            where=self.directory,
            fix="free space on it, or point output_dir to another disk (with the run's directory "
            "copied there), then run again with --resume",
        )

    def message(self) -> str:
        return f"{self.where}: {self.what}; {self.fix}"


def no_space(e: BaseException | None) -> bool:
    """Did `e` (or what it was raised from) fail for want of disk space?"""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DiskFull) or (isinstance(e, OSError) and e.errno in NO_SPACE):
            return True
        if any(t in str(e) for t in NO_SPACE_TEXT):
            return True
        e = e.__cause__ or e.__context__
    return False


@contextlib.contextmanager
def disk_full_as(directory: str | Path, doing: str) -> Iterator[None]:
    """A write in this block that finds no space raises `DiskFull(directory, doing)`; other errors pass."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as e:
        if no_space(e):
            raise DiskFull(directory, doing) from e
        raise


def unwritable(path: Path | str) -> Path | None:
    """What stops this user from writing `path` (a file or directory, existing or to be made): the
    nearest existing one of it and its parents when this user cannot write into it; else None."""
    p = Path(path).expanduser().absolute()
    existing = next((q for q in [p, *p.parents] if os.path.exists(q)), None)  # never raises
    if existing is None:
        return None
    need = os.W_OK | os.X_OK if os.path.isdir(existing) else os.W_OK
    return None if os.access(existing, need) else existing
