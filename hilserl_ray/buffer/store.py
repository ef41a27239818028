"""Durable ring storage for a ReplayBuffer: one file per field in `<dir>/`, plus a commit record.

Why files and not a copy in each checkpoint: a checkpoint that copies the buffers stalls training
for seconds and stores the same rows again and again, and everything since the last one dies with
the learner. Here every row is written once, with pwrite(2), straight into a preallocated-size
(sparse) `.npy` file; sampling reads the same files through a shared read-only mapping (the page
cache, so as fast as the heap ring once resident). A write is in the page cache when pwrite
returns, so it survives a kill -9 of the learner, the driver or the whole Ray node; `sync()`
(fdatasync, on a timer and at every checkpoint) bounds what a power loss can cost.

Why not an append-only log of chunks, rebuilt into a ring on restart: the rebuild re-reads and
copies the whole buffer (GBs at 100k rows) before training can go on, and disk then holds the
log and its compaction. Reopening this store reads 17 B per row (row_id, next, is_start).

Crash consistency, in write order per chunk:
1. `row_id` of the rows about to be overwritten is set to -1 (they stop being anyone's rows);
2. the fields are written, then `row_id` = each row's global number;
3. predecessor links (`next`) are set;
4. the commit record (written index, open episodes, per-sender sequence numbers, the owner's
   counters; JSON) is written into `commit.bin`, alternating between two slots each with a
   sequence number and a CRC, so a torn write leaves the previous commit readable. (A rename of a
   fresh file per commit cost 7 ms on ext4 here, which flushes a file renamed over another.)
   The chunk is acknowledged after this.
On open, the newest commit of this boot (`commit.bin`; after a reboot `synced.json`, the record
of the last fdatasync) defines what is stored: a row whose `row_id` is not its global number was
overwritten after that commit and is dropped, and links to rows past it are cut.

Before any of that, `check_store` holds the files against each other (the manifest, the commit
record, every field file's header and size, the committed rows' `row_id`s), reading headers and
`row_id` only. A store that fails is `StoreDamaged`, naming the file, what is wrong, how many
stored rows it touches and the fix: never an empty store in its place (a missing manifest used
to make a new, empty store over the old files) and never numpy's error from deep inside a load.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np

from hilserl_ray.errors import UserError
from hilserl_ray.fsutil import fsync_dir

FORMAT = "hilserl_ray.replay_store"
VERSION = 1
MANIFEST, COMMIT, SYNCED, LOCK = "manifest.json", "commit.bin", "synced.json", "writer.lock"
SLOT = 1 << 20  # bytes per commit slot (a commit record is a few KiB)
HEADER = struct.Struct("<QII")  # commit sequence number, JSON length, CRC32 of the JSON


class StoreError(UserError):
    """A replay store that cannot be opened as asked (other spec or capacity, held by a writer)."""


class StoreDamaged(UserError):
    """A replay store whose files disagree with each other (missing, cut short, unreadable).

    Not a StoreError: a tool that takes StoreError for "no store here" must not take this so."""


def boot_id() -> str:
    """Changes at every reboot: a commit record from this boot was never lost with the page cache."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


class RowStore:
    """Field files of `capacity` rows; `write` puts rows at ring positions, `commit` publishes them."""

    def __init__(
        self,
        directory: Path,
        layout: dict[str, tuple[tuple[int, ...], str]],
        capacity: int,
        spec_dict: dict,
        fingerprint: str,
        readonly: bool = False,
        lock_timeout_s: float = 30.0,
    ):
        self.dir = Path(directory)
        self.readonly = readonly
        self.capacity = capacity
        self._lock_fd = None
        self._commit_fd = None
        self._fds = {}
        self._boot = boot_id()
        self._sync_lock = threading.Lock()  # the sync timer and a checkpoint may sync at once
        if not readonly:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = _acquire(self.dir / LOCK, lock_timeout_s)
        try:
            self._open(capacity, layout, spec_dict, fingerprint)
        except BaseException:
            self.close()
            raise

    def _open(self, capacity, layout, spec_dict, fingerprint) -> None:
        readonly = self.readonly
        self._fds: dict[str, int] = {}
        manifest = check_store(self.dir, fingerprint, capacity, layout)
        if manifest is None and readonly:
            raise StoreError(f"{self.dir}: no replay store here ({MANIFEST} not found)")
        if manifest is None:
            manifest = self._create(layout, capacity, spec_dict, fingerprint)
        self.manifest = manifest
        mode = "r" if readonly else "r+"
        self.arrays: dict[str, np.ndarray] = {}
        self._maps: dict[str, np.memmap] = {}
        self._offsets: dict[str, int] = {}
        for name, entry in manifest["fields"].items():
            path = self.dir / entry["file"]
            small = name in ("next", "is_start", "row_id")  # scattered updates: writable mapping
            a = np.load(path, mmap_mode=mode if small else "r")
            self.arrays[name] = np.asarray(a)  # a plain view: no np.memmap overhead per indexing
            self._maps[name] = a
            if not readonly:
                self._fds[name] = os.open(path, os.O_RDWR)
                self._offsets[name] = a.offset
        latest = _read_commit(self.dir / COMMIT)
        self._commit_seq = latest["commit_seq"] if latest else 0
        if not readonly:
            self._commit_fd = os.open(self.dir / COMMIT, os.O_RDWR | os.O_CREAT, 0o644)

    # ----------------------------------------------------------------------------- create
    def _create(self, layout, capacity, spec_dict, fingerprint) -> dict:
        fields = {name: (shape, dtype) for name, (shape, dtype) in layout.items()}
        fields.update({"next": ((), "int64"), "is_start": ((), "bool"), "row_id": ((), "int64")})
        entries = {}
        for name, (shape, dtype) in fields.items():
            file = f"{name}.npy"
            # open_memmap sizes the file by seeking: sparse, disk is used only where rows are written
            a = np.lib.format.open_memmap(self.dir / file, "w+", np.dtype(dtype), (capacity, *shape))
            offset, nbytes = a.offset, a.nbytes
            del a
            if name in ("next", "row_id"):  # -1 everywhere: written, not through the mapping, so
                _fill_ones(self.dir / file, offset, nbytes)  # a full disk is an OSError, not a SIGBUS
            entries[name] = {"file": file, "shape": [capacity, *shape], "dtype": np.dtype(dtype).str}
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "capacity": capacity,
            "spec_fingerprint": fingerprint,
            "spec": spec_dict,
            "fields": entries,
            "created": time.time(),
        }
        _write_json(self.dir / MANIFEST, manifest, fsync=True)
        return manifest

    # ------------------------------------------------------------------------------ write
    def write(self, name: str, src: np.ndarray, g0: int) -> None:
        """Rows src[0..m) at global rows g0.. (ring positions g % capacity), by pwrite."""
        fd, a = self._fds[name], self.arrays[name]
        src = np.ascontiguousarray(src, dtype=a.dtype)
        row_bytes = a.itemsize * int(np.prod(a.shape[1:], dtype=np.int64))
        p0, m = g0 % self.capacity, len(src)
        first = min(m, self.capacity - p0)
        flat = memoryview(src).cast("B")
        _pwrite_all(fd, flat[: first * row_bytes], self._offsets[name] + p0 * row_bytes)
        if first < m:
            _pwrite_all(fd, flat[first * row_bytes :], self._offsets[name])

    def prefetch(self, rows: int) -> None:
        """Read the first `rows` rows of every field file into the page cache (after a reboot).

        A restarted learner samples from its first update on; from a cold cache each batch would
        wait for hundreds of random disk reads. Sequential reads fill the cache at disk speed.
        Run it on a thread."""
        block = bytearray(8 << 20)
        for a in self._maps.values():
            row_bytes = a.itemsize * int(np.prod(a.shape[1:], dtype=np.int64))
            end = a.offset + rows * row_bytes
            with open(a.filename, "rb", buffering=0) as f:
                pos = 0
                while pos < end and f.readinto(block):
                    pos += len(block)

    def commit(self, state: dict) -> None:
        """Publish `state` (JSON): what is stored after the rows just written. Survives a kill -9.

        A write that fails (disk full) tears only its own slot: the next try writes that slot
        again, never the other one, which holds the last intact commit."""
        seq = self._commit_seq + 1
        record = {**state, "boot_id": self._boot, "time": time.time(), "commit_seq": seq}
        body = json.dumps(record).encode()
        if HEADER.size + len(body) > SLOT:
            raise StoreError(
                f"{self.dir / COMMIT}: commit record of {len(body):,} B exceeds its {SLOT:,} B slot"
            )
        data = HEADER.pack(seq, len(body), zlib.crc32(body)) + body
        _pwrite_all(self._commit_fd, memoryview(data), (seq % 2) * SLOT)
        self._commit_seq = seq

    def sync(self, state: dict) -> None:
        """Flush every field to the disk, then record `state` as surviving a power loss.

        `state` must be taken before the flush begins: it then names only rows the flush covers."""
        with self._sync_lock:
            for fd in self._fds.values():
                os.fdatasync(fd)
            _write_json(self.dir / SYNCED, {**state, "boot_id": self._boot, "time": time.time()}, fsync=True)

    def last_commit(self) -> dict | None:
        """The commit that describes the files now: this boot's newest, else the last synced one."""
        records = [_read_commit(self.dir / COMMIT), _read_json(self.dir / SYNCED)]
        for r in records:
            if r is not None and r.get("boot_id") == self._boot:
                return r
        return records[1]

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        if self._commit_fd is not None:
            os.close(self._commit_fd)
            self._commit_fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


# ------------------------------------------------------------------------------------ checks
def check_store(
    directory: Path,
    fingerprint: str = "",
    capacity: int = 0,
    layout: dict[str, tuple[tuple[int, ...], str]] | None = None,
) -> dict | None:
    """The store's manifest, once its files agree with it and with each other; None where there
    is no store (a new one may be made). Reads headers, the commit record and `row_id` only.

    `fingerprint`, `capacity`, `layout` (when given) must match what the store was made with
    (StoreError, as before); files that disagree with the manifest are StoreDamaged."""
    d = Path(directory)
    present = _store_files(d)
    if not present or (MANIFEST not in present and COMMIT not in present and SYNCED not in present):
        return None  # nothing, or a creation cut short before its first open: no row was ever stored
    manifest = _read_store_manifest(d, present)
    cap, entries = _manifest_entries(d, manifest)
    _check_manifest(d, manifest, capacity, fingerprint)
    _check_field_entries(d, entries, layout)
    commit = _check_commit(d)
    written = int(commit["written"]) if commit else 0
    g = np.arange(max(0, written - cap), written)  # the committed rows' global numbers
    _check_field_files(d, entries, layout, cap, g)
    row_id_file = entries["row_id"][0]
    _check_commit_exists(d, row_id_file)
    _check_row_ids(d, row_id_file, cap, written, g)
    return manifest


def _store_files(d: Path) -> list[str]:
    """The names of the store's files, sorted (not the writer lock, not hidden files)."""
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if p.name != LOCK and not p.name.startswith("."))


def _read_store_manifest(d: Path, present: list[str]) -> dict:
    """The manifest as JSON: StoreDamaged when missing beside other store files or unreadable,
    StoreError when it is of another format or version."""
    if MANIFEST not in present:
        shown = ", ".join(present[:4]) + (f" and {len(present) - 4} more" if len(present) > 4 else "")
        raise StoreDamaged(
            f"missing, while the store holds {shown}: without it none of its rows can be read",
            where=str(d / MANIFEST),
            fix=_fix(d, f"restore {MANIFEST} from a copy of the run"),
        )
    manifest = _read_json(d / MANIFEST)
    if not isinstance(manifest, dict):
        raise StoreDamaged(
            "not a JSON object (unreadable)", where=str(d / MANIFEST), fix=_fix(d, "restore it")
        )
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise StoreError(
            f"{d / MANIFEST}: format {manifest.get('format')!r} v{manifest.get('version')}, "
            f"expected {FORMAT!r} v{VERSION}"
        )
    return manifest


def _manifest_entries(d: Path, manifest: dict) -> tuple[int, dict[str, tuple[str, tuple, np.dtype]]]:
    """(capacity, {field: (file, shape, dtype)}) from the manifest; StoreDamaged when incomplete."""
    try:
        cap, fields = int(manifest["capacity"]), dict(manifest["fields"])
        entries = {
            n: (str(e["file"]), tuple(int(x) for x in e["shape"]), np.dtype(e["dtype"]))
            for n, e in fields.items()
        }
        str(manifest["spec_fingerprint"])
    except (KeyError, TypeError, ValueError) as e:
        raise StoreDamaged(
            f"incomplete ({type(e).__name__}: {e}); expected capacity, spec_fingerprint and fields "
            "with file, shape and dtype",
            where=str(d / MANIFEST),
            fix=_fix(d, "restore it"),
        ) from None
    return cap, entries


def _check_field_entries(d: Path, entries: dict, layout: dict | None) -> None:
    """Every field of the layout, and the store's own LINKS, has a manifest entry."""
    for name in [*(layout or {}), *LINKS]:
        if name not in entries:
            raise StoreDamaged(
                f"no entry for field '{name}'", where=str(d / MANIFEST), fix=_fix(d, "restore it")
            )


def _check_field_files(d: Path, entries: dict, layout: dict | None, cap: int, g: np.ndarray) -> None:
    """Each field file is a .npy of its manifest's (and the config's) shape, holding all `cap` rows."""
    for name, (file, shape, dtype) in entries.items():
        path = d / file
        want = (cap, *layout[name][0]) if layout and name in layout else shape
        intact = _check_field(path, shape, dtype, want, cap, g % cap, d)
        if intact < cap:
            lost = int(np.count_nonzero(g % cap >= intact))
            raise StoreDamaged(
                f"cut short: its {path.stat().st_size:,} B hold {intact:,} of its {cap:,} ring positions; "
                f"{lost:,} of the {g.size:,} stored rows lie past the cut (rows at positions below "
                f"{intact:,} are whole)",
                where=str(path),
                fix=_fix(d, f"restore {file} from a copy of the run"),
            )


def _check_commit_exists(d: Path, row_id_file: str) -> None:
    """Stored rows need a commit record that says which are stored (it is made at the first open)."""
    no_record = not (d / COMMIT).exists() and not (d / SYNCED).exists()
    if no_record and _row_ids(d / row_id_file).max(initial=-1) >= 0:
        raise StoreDamaged(
            f"missing, while rows are stored: no commit record says which ({SYNCED} missing too)",
            where=str(d / COMMIT),
            fix=_fix(d, f"restore {COMMIT}"),
        )


def _check_row_ids(d: Path, row_id_file: str, cap: int, written: int, g: np.ndarray) -> None:
    """Every row's `row_id` is one a write leaves there.

    A kill or a power loss leaves in each row's row_id its global number, -1 (being
    overwritten) or a later number at the same position (written after the commit); anything
    else no write made."""
    row_id = _row_ids(d / row_id_file)
    pos = np.arange(cap)
    ok = (row_id == -1) | ((row_id >= written) & (row_id % cap == pos))
    ok[g % cap] |= row_id[g % cap] == g
    bad = int(np.count_nonzero(~ok))
    if bad:
        hit = int(np.count_nonzero(~ok[g % cap]))
        raise StoreDamaged(
            f"{bad:,} rows carry a row number no write leaves there ({hit:,} of the {g.size:,} stored rows)",
            where=str(d / row_id_file),
            fix=_fix(d, f"restore {row_id_file}"),
        )


LINKS = ("next", "is_start", "row_id")  # the store's own per-row fields, besides the layout's


def _fix(d: Path, restore: str) -> str:
    return (
        f"{restore}; or move {d} aside (e.g. to {d.name}.damaged) to resume with this buffer empty; "
        "or start over with --overwrite"
    )


def _check_manifest(d: Path, manifest: dict, capacity: int, fingerprint: str) -> None:
    """What the store was made for against what this run asks (StoreError: another spec or size)."""
    if fingerprint and manifest["spec_fingerprint"] != fingerprint:
        raise StoreError(
            f"{d}: replay data stored for another feature spec (fingerprint "
            f"{manifest['spec_fingerprint']}, this config {fingerprint}); resume with the run's own "
            "config.yaml, or start a new run in another output_dir"
        )
    if capacity and manifest["capacity"] != capacity:
        raise StoreError(
            f"{d}: replay data stored with capacity {manifest['capacity']:,} rows, this config asks "
            f"for {capacity:,}; set the capacity back to {manifest['capacity']} to resume this run"
        )


def _check_field(path: Path, shape: tuple, dtype: np.dtype, want: tuple, cap: int, live, d: Path) -> int:
    """How many ring positions the field file holds (== cap when whole); StoreDamaged when it is
    missing, not a .npy, or not the shape and dtype the manifest (and the config) give it."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            found_shape, fortran, found_dtype = read(f)
            offset, size = f.tell(), os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise StoreDamaged(
            f"missing ({live.size:,} stored rows have a part in it)",
            where=str(path),
            fix=_fix(d, f"restore {path.name}"),
        ) from None
    except (OSError, ValueError) as e:
        raise StoreDamaged(
            f"not a readable .npy file ({type(e).__name__}: {' '.join(str(e).split())[:160]})",
            where=str(path),
            fix=_fix(d, f"restore {path.name}"),
        ) from None
    if tuple(found_shape) != shape or found_dtype != dtype or shape != want or fortran or shape[0] != cap:
        raise StoreDamaged(
            f"holds {tuple(found_shape)} {found_dtype}, the manifest says {shape} {dtype}"
            + (f" and the config {want}" if want != shape else ""),
            where=str(path),
            fix=_fix(d, f"restore {path.name}"),
        )
    row_bytes = found_dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
    if size >= offset + cap * row_bytes:
        return cap
    return max(0, size - offset) // max(row_bytes, 1)


def _check_commit(d: Path) -> dict | None:
    """The commit record the store opens at (this boot's, else the last synced one), checked."""
    path = d / COMMIT
    latest = _read_commit(path)
    synced = _read_json(d / SYNCED)
    if synced is None and (d / SYNCED).exists():
        raise StoreDamaged("unreadable (not JSON)", where=str(d / SYNCED), fix=_fix(d, f"restore {SYNCED}"))
    boot = boot_id()
    # A kill tears at most the slot being written, and only the very first commit has no other;
    # after a power loss (a synced record of another boot) the commit file does not count.
    power_loss = synced is not None and synced.get("boot_id") != boot
    if latest is None and _slots_written(path) > 1 and not power_loss:
        raise StoreDamaged(
            "no intact commit record (both slots fail their checksum)",
            where=str(path),
            fix=_fix(d, f"restore {COMMIT}"),
        )
    record, where = (
        (latest, path) if latest is not None and latest.get("boot_id") == boot else (synced, d / SYNCED)
    )
    if record is None:
        return None
    try:
        ok = int(record["written"]) >= 0
        [(int(e), int(g)) for e, g in record["open_episodes"]]
        {str(k): int(v) for k, v in record["senders"].items()}
        dict(record["meta"])
    except (KeyError, TypeError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise StoreDamaged(
            "the commit record lacks written, open_episodes, senders or meta",
            where=str(where),
            fix=_fix(d, "restore it"),
        )
    return record


def _slots_written(path: Path) -> int:
    """Commit slots holding anything (a header that is not all zeros)."""
    n = 0
    try:
        with open(path, "rb") as f:
            for slot in (0, 1):
                f.seek(slot * SLOT)
                n += any(f.read(HEADER.size))
    except OSError:
        return 0
    return n


def _row_ids(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r")


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


def _fill_ones(path: Path, offset: int, nbytes: int) -> None:
    """Every byte of `path` from `offset` on, `nbytes` of them, set to 0xFF (int64 -1)."""
    block = memoryview(b"\xff" * min(nbytes, 1 << 20))
    fd = os.open(path, os.O_RDWR)
    try:
        for start in range(0, nbytes, len(block)):
            _pwrite_all(fd, block[: min(len(block), nbytes - start)], offset + start)
    finally:
        os.close(fd)


def _acquire(path: Path, timeout_s: float) -> int:
    """One writer per store: a second learner waits (a killed one releases the lock at once)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise StoreError(
                    f"{path.parent}: another process (a learner of this run?) writes this replay store; "
                    "stop it first"
                ) from None
            time.sleep(0.1)


def _write_json(path: Path, obj: dict, fsync: bool) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a write cut short (disk full) leaves nothing behind
        raise
    if fsync:
        fsync_dir(path.parent)


def _read_commit(path: Path) -> dict | None:
    """The newest intact slot of a commit file (a slot torn by a kill fails its CRC)."""
    best = None
    try:
        with open(path, "rb") as f:
            for slot in (0, 1):
                f.seek(slot * SLOT)
                head = f.read(HEADER.size)
                if len(head) < HEADER.size:
                    continue
                seq, n, crc = HEADER.unpack(head)
                body = f.read(n) if 0 < n <= SLOT - HEADER.size else b""
                if len(body) == n and n and zlib.crc32(body) == crc and (best is None or seq > best[0]):
                    best = (seq, body)
    except OSError:
        return None
    return json.loads(best[1]) if best else None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def read_manifest(directory: Path) -> dict:
    """A store's manifest, its files checked (StoreDamaged); StoreError where no store is."""
    manifest = check_store(Path(directory))
    if manifest is None:
        raise StoreError(f"{directory}: no replay store here ({MANIFEST} missing or unreadable)")
    return manifest
