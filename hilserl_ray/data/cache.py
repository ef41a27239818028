"""On-disk cache of a converted offline chunk: .npy files + manifest.json, memory-mapped on load.

The directory name carries a key that hashes the dataset's files (paths, sizes, mtimes), the
pipeline spec's fingerprint and the conversion code's version, so a change to any of them
(6 -> 18 state dims, another image size, an edited dataset) misses the cache instead of
loading stale data. A cache is built in a temporary sibling directory and renamed into
place only when complete; an unreadable one is reported with a warning and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hilserl_ray.fsutil import fsync_dir

log = logging.getLogger(__name__)

FORMAT = "hilserl_ray.offline_chunk"
FORMAT_VERSION = 1
KEEP_CACHES = 2  # older offline-* caches in the same output dir are pruned (each can be GBs)
SMALL_FIELD_BYTES = 64 << 20  # fields up to this size carry a content hash in the manifest


class CacheError(RuntimeError):
    """A cache directory that cannot be trusted (incomplete, truncated, mismatched)."""


def files_fingerprint(root: Path, files: list[Path]) -> str:
    """Hash of each file's path relative to `root`, size and mtime: cheap, changes on any edit."""
    h = hashlib.sha256()
    for p in sorted(files):
        st = p.stat()
        h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def cache_key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def path_tag(root: Path) -> str:
    """A short tag of a dataset's location: caches of one dataset are pruned together."""
    return hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:8]


def cache_dir(cache_root: Path, key: str, tag: str = "") -> Path:
    return Path(cache_root) / (f"offline-{tag}-{key}" if tag else f"offline-{key}")


class CacheWriter:
    """Allocate memory-mapped .npy fields in a temp dir, fill them, then `commit()` atomically."""

    def __init__(self, final: Path):
        self.final = Path(final)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.final.parent / f".{self.final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir()
        self.fields: dict[str, np.ndarray] = {}

    def alloc(self, name: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        arr = np.lib.format.open_memmap(
            self.tmp / f"{name}.npy", mode="w+", dtype=np.dtype(dtype), shape=shape
        )
        self.fields[name] = arr
        return arr

    def commit(self, meta: dict) -> Path:
        fields = {}
        for name, arr in self.fields.items():
            arr.flush()
            entry = {"file": f"{name}.npy", "shape": list(arr.shape), "dtype": arr.dtype.str}
            if arr.nbytes <= SMALL_FIELD_BYTES:
                entry["blake2b"] = _digest(arr)
            fields[name] = entry
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": time.time(),
            "fields": fields,
            **meta,
        }
        (self.tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        fsync_dir(self.tmp)
        self.fields.clear()
        if self.final.exists():  # built meanwhile by someone else, or a corrupt one being replaced
            _remove(self.final)
        os.replace(self.tmp, self.final)
        fsync_dir(self.final.parent)
        return self.final

    def abort(self) -> None:
        self.fields.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


def load(path: Path, verify: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """(fields as read-only memmaps, manifest); CacheError if anything is off."""
    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except FileNotFoundError:
        raise CacheError(f"{path}: no manifest.json (an interrupted build)") from None
    except json.JSONDecodeError as e:
        raise CacheError(f"{path}/manifest.json: not valid JSON ({e})") from None
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise CacheError(
            f"{path}: format {manifest.get('format')!r} v{manifest.get('format_version')}, expected {FORMAT} v{FORMAT_VERSION}"
        )
    out = {}
    for name, entry in manifest["fields"].items():
        f = path / entry["file"]
        try:
            arr = np.load(f, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise CacheError(f"{f}: unreadable ({e})") from None
        if list(arr.shape) != entry["shape"] or arr.dtype.str != entry["dtype"]:
            raise CacheError(
                f"{f}: shape {arr.shape} {arr.dtype.str}, manifest says {entry['shape']} {entry['dtype']}"
            )
        if verify and "blake2b" in entry and _digest(arr) != entry["blake2b"]:
            raise CacheError(f"{f}: content does not match its checksum")
        out[name] = arr
    return out, manifest


def is_valid(final: Path) -> bool:
    """True when `load_or_build` would load the cache at `final` rather than build it."""
    if not final.exists():
        return False
    try:
        load(final)
    except CacheError:
        return False
    return True


def load_or_build(
    final: Path, build: Callable[[CacheWriter], dict], verify: bool = True
) -> tuple[dict[str, np.ndarray], dict]:
    """Load the cache at `final`, or build it with `build(writer) -> manifest extras` and load that."""
    if final.exists():
        try:
            return load(final, verify)
        except CacheError as e:
            log.warning("offline cache %s is corrupt (%s); rebuilding it", final, e)
            _remove(final)
    writer = CacheWriter(final)
    try:
        meta = build(writer)
        writer.commit(meta)
    except BaseException:
        writer.abort()
        raise
    prune(final.parent, keep=final)
    return load(final, verify=False)


def prune(cache_root: Path, keep: Path, n: int = KEEP_CACHES) -> None:
    """Drop all but the `n` newest caches of the same dataset (other datasets' caches stay)
    and any leftover temp dirs of dead builds."""
    prefix = keep.name.rsplit("-", 1)[0]  # offline-<tag> (or offline)
    caches = sorted(
        (
            p
            for p in cache_root.glob(f"{prefix}-*")
            if p.is_dir() and p != keep and p.name.rsplit("-", 1)[0] == prefix
        ),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for p in caches[n - 1 :]:
        _remove(p)
    for p in cache_root.glob(".offline-*.tmp-*"):
        pid = p.name.rsplit(".tmp-", 1)[-1].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _digest(arr: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(arr).data, digest_size=16).hexdigest()


def _remove(path: Path) -> None:
    trash = path.parent / f".{path.name}.trash-{uuid.uuid4().hex[:8]}"
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
