"""Atomic checkpoint directories: `<root>/<step>/` plus a `last` pointer file.

A checkpoint is written into a temp dir, renamed into place, and only then is `last` switched
(itself by rename). A kill at any moment leaves the previous `last` intact and loadable. The same
step saved twice (a final save right after a periodic one) swaps the new directory in with one
atomic exchange, so the name never points at nothing.

Rotation (`keep_last`) counts only checkpoints whose files read back: a damaged one is renamed
`<name>.damaged` (kept for a look, never loaded, never counted) and reported in one line, so
it never takes the place of a good one, and a checkpoint is deleted only once `keep_last`
newer good ones are complete.

A final save that finds the disk full may `make_room`: the oldest good checkpoint goes, one at a
time, never the newest. Where the new `last` pointer does not fit, the old one is removed
instead: without a pointer, the newest complete checkpoint (the one just written) is the last.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
from safetensors import safe_open

from hilserl_ray.errors import NO_SPACE
from hilserl_ray.fsutil import fsync_dir

COMPLETE = "COMPLETE"  # marker written last inside a checkpoint dir
POINTER = "last"
DAMAGED = ".damaged"  # suffix of a checkpoint set aside: its name no longer matches a step


def write_checkpoint(
    root: Path,
    step: int | None,
    write: Callable[[Path], dict],
    keep_last: int = 3,
    check: Callable[[Path], str | None] | None = None,
    report: Callable[[str], None] = print,
) -> Path:
    """Call `write(tmp_dir)` (which fills the dir and returns a JSON-able summary), then publish it.

    With `step=None` the directory is named for the summary's "step": the step the contents
    were taken at, known only once `write` has run (training goes on until the learner saves).
    With `check` (a checkpoint -> what is damaged in it, or None; the run's: `damaged_file`)
    rotation sets damaged checkpoints aside and does not count them; `report` gets one line each.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    try:
        summary = dict(write(tmp) or {})
        step = int(summary.pop("step")) if step is None else step
        name = f"{step:010d}"
        final = root / name
        (tmp / COMPLETE).write_text(json.dumps({"step": step, **summary}, indent=1))
        fsync_dir(tmp)
        if final.exists():  # the same step saved twice (e.g. a final save right after a periodic one)
            _swap_in(tmp, final)  # tmp now holds the previous copy
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_pointer(root, name)
    _prune(root, keep_last, keep=name, check=check, report=report)
    return final


def _swap_in(new: Path, final: Path) -> None:
    """Put `new` at `final` and the old `final` at `new`, never leaving `final` missing."""
    try:
        exchange(new, final)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
        # No RENAME_EXCHANGE here: move the old copy aside first. `last` briefly names nothing;
        # `latest_checkpoint` then falls back to the newest complete checkpoint.
        aside = final.parent / f".tmp-old-{final.name}-{uuid.uuid4().hex[:8]}"
        os.replace(final, aside)
        os.replace(new, final)
        os.replace(aside, new)


def exchange(a: Path, b: Path) -> None:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); OSError where unsupported."""
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        raise OSError(errno.ENOSYS, "renameat2 not available")
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(a), None, str(b))


def _write_pointer(root: Path, name: str) -> None:
    """`last` names `name` (the newest complete checkpoint). On a full disk the old pointer goes
    (freeing its block) and the new one is tried again; if it still does not fit, no pointer is
    left, which `latest_checkpoint` reads as the newest complete checkpoint: `name` all the same."""
    try:
        _replace_pointer(root, name)
    except OSError as e:
        if e.errno not in NO_SPACE:
            raise
        (root / POINTER).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            _replace_pointer(root, name)
    fsync_dir(root)


def _replace_pointer(root: Path, name: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".last-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(name + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, root / POINTER)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def pointed_at(root: Path) -> str | None:
    """The checkpoint name the `last` pointer file holds; None without one."""
    pointer = Path(root) / POINTER
    return pointer.read_text().strip() if pointer.is_file() else None


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint `last` points at, if complete; else the newest complete one; else None."""
    root = Path(root)
    name = pointed_at(root)
    if name is not None:
        candidate = root / name
        if (candidate / COMPLETE).is_file():
            return candidate
    complete = sorted(p for p in root.glob("[0-9]" * 10) if (p / COMPLETE).is_file())
    return complete[-1] if complete else None


def _prune(root: Path, keep_last: int, keep: str, check, report: Callable[[str], None]) -> None:
    """Keep the newest `keep_last` good checkpoints (and `keep`, just written); set damaged ones aside."""
    for leftover in root.glob(".tmp-*"):  # from a run killed mid-write
        shutil.rmtree(leftover, ignore_errors=True)
    if check is not None:
        set_aside_damaged(root, report, trusted=keep, check=check)
    good = sorted(p for p in root.glob("[0-9]" * 10) if (p / COMPLETE).is_file())
    for old in good[:-keep_last]:
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)


def make_room(root: Path, check: Callable[[Path], str | None] | None = None) -> Path | None:
    """Delete the oldest good checkpoint (`check`: what is damaged in one, as in rotation) to make
    room for a new one on a full disk; never the one `last` names, so one always stays. Returns
    it, or None when there is none to spare. It leaves the checkpoints' names first, so a kill
    during the deletion leaves no half-deleted checkpoint that looks complete."""
    root = Path(root)
    good = [p for p in complete_checkpoints(root) if check is None or check(p) is None]
    if len(good) < 2:
        return None
    oldest = min(good[1:], key=lambda p: p.name)  # good[0]: the one `last` names
    aside = root / f".tmp-room-{oldest.name}-{uuid.uuid4().hex[:8]}"
    os.replace(oldest, aside)
    shutil.rmtree(aside, ignore_errors=True)
    return oldest


def damaged_file(ckpt: Path) -> str | None:
    """The first file of `ckpt` that does not read back (agent, counters, RNG), or None."""
    agent = ckpt / "agent"
    try:
        meta = json.loads((agent / "agent.json").read_text())
        for key in ("spec", "policy_config", "num_updates"):
            meta[key]  # noqa: B018 (a KeyError names the missing part)
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{agent / 'agent.json'} ({_short(e)})"
    for name in ("model.safetensors", "train.safetensors"):
        try:
            with safe_open(str(agent / name), framework="np") as f:
                f.keys()
        except Exception as e:  # safetensors raises its own error types for a bad header
            return f"{agent / name} ({_short(e)})"
    try:
        json.loads((ckpt / "learner.json").read_text())["counters"]  # noqa: B018
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{ckpt / 'learner.json'} ({_short(e)})"
    try:
        np.load(ckpt / "torch_rng.npy")
    except (OSError, ValueError, EOFError) as e:
        return f"{ckpt / 'torch_rng.npy'} ({_short(e)})"
    return None


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:160]}" if text else type(e).__name__


def set_aside_damaged(
    root: Path,
    report: Callable[[str], None] = print,
    unloadable: dict[Path, str] | None = None,
    trusted: str | None = None,
    check: Callable[[Path], str | None] | None = None,
) -> list[Path]:
    """Rename every complete checkpoint whose files do not read back, or that is in `unloadable`
    (what a full load found, by checkpoint), to `<name>.damaged`, one `report` line each; `last`
    then names the newest good one. `trusted`: a checkpoint not read (just written); `check`:
    what is damaged in a checkpoint (default `damaged_file`). Returns the new paths."""
    root = Path(root)
    unloadable = {Path(k).name: v for k, v in (unloadable or {}).items()}
    moved = []
    for ckpt in sorted(p for p in root.glob("[0-9]" * 10) if (p / COMPLETE).is_file()):
        if ckpt.name == trusted:
            continue
        problem = unloadable.get(ckpt.name) or (check or damaged_file)(ckpt)
        if problem is None:
            continue
        target = ckpt.with_name(ckpt.name + DAMAGED)
        n = 2
        while target.exists():
            target, n = ckpt.with_name(f"{ckpt.name}{DAMAGED}-{n}"), n + 1
        os.replace(ckpt, target)
        moved.append(target)
        report(f"warning: checkpoint {ckpt.name} is damaged ({problem}); set aside as {target}")
    if moved:
        fsync_dir(root)
        pointer = root / POINTER
        name = pointed_at(root)
        if name is None or not (root / name / COMPLETE).is_file():
            newest = sorted(p for p in root.glob("[0-9]" * 10) if (p / COMPLETE).is_file())
            if newest:
                _write_pointer(root, newest[-1].name)
            elif pointer.is_file():
                pointer.unlink()
    return moved


def complete_checkpoints(root: Path) -> list[Path]:
    """Every complete checkpoint, newest first, the one `last` points at leading (resume fallback)."""
    root = Path(root)
    done = sorted((p for p in root.glob("[0-9]" * 10) if (p / COMPLETE).is_file()), reverse=True)
    name = pointed_at(root)
    if name is not None:
        target = root / name
        if target in done:
            done.remove(target)
            done.insert(0, target)
    return done
