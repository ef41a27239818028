"""ReplayBuffer: a preallocated ring of observation rows; transitions link to their next row.

Each observation is stored once (images uint8). Row t's next observation is the row `next[t]`
of the same episode, recorded as a *global* row number (how many rows were ever written before
it); global row g lives at position g % capacity and is alive while g >= written - capacity.
So links stay correct across chunk boundaries, interleaved actors and ring wrap-around. Links
only point forward in time and rows are overwritten oldest first, so a live row's next row is
always live: overwriting a row only ends that row's own transition. A truncated episode
bootstraps from its own final observation (the `is_last` row), never from another episode's.

The storage is a ring (RLlib's choice), not learner-owned chunks in Ray's object store:
`bench/buffer_storage_choice.py` measured sample(256) from the ring ~3x faster (1.4-1.7 vs
4.5-5.1 ms, one core): a batch from chunk views needs one gather per chunk touched. Ray's object
store carries the chunks in flight: a robot actor puts each chunk once and keeps the reference
until the learner acknowledges it, so a chunk survives a learner death and is sent again without
being serialized again. With `storage=<dir>` the ring lives in files (`store.py`): every
acknowledged row survives a kill of any process, and nothing needs copying into checkpoints."""

from __future__ import annotations

import mmap
import threading
from pathlib import Path

import numpy as np
import torch

from hilserl_ray.buffer import batch as batching
from hilserl_ray.buffer import persist
from hilserl_ray.buffer.chunk import chunk_layout, validate_chunk
from hilserl_ray.buffer.prefault import Prefaulter
from hilserl_ray.buffer.store import RowStore, read_manifest
from hilserl_ray.device import resolve_device
from hilserl_ray.features import FeatureSpec

# Bookkeeping arrays per row, besides the chunk fields.
LINK_FIELDS = {"next": "int64", "is_start": "bool", "valid": "bool"}
MAX_SENDERS = 256  # sequence numbers remembered (robot actor incarnations)


def episode_runs(eid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a chunk's rows into runs of one episode: (same episode as the row before, run starts,
    run ends), the ends inclusive: a chunk may span several episodes."""
    same_prev = np.zeros(len(eid), bool)
    same_prev[1:] = eid[1:] == eid[:-1]
    run_starts = np.flatnonzero(~same_prev)
    run_ends = np.r_[run_starts[1:], len(eid)] - 1
    return same_prev, run_starts, run_ends


def lazy_zeros(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Zeroed storage that takes RAM only where rows are written (a `Prefaulter` runs ahead).

    Anonymous mmap memory is mapped on first write, so a 100k-row capacity costs nothing until
    used. No MADV_HUGEPAGE: on the project's VM a huge-page fault (zeroing and compacting 2 MiB)
    made filling 5-7x slower (11-15 vs 72-74 ms per 3.1 MB of images) for a ~25% faster random
    gather of 256 images (1.4 vs 1.9 ms), a small part of an update.
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if nbytes < 4 << 20:
        return np.zeros(shape, dtype)
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(buf, dtype).reshape(shape)  # the array keeps the mapping alive


class ReplayBuffer:
    """FIFO transition storage for SAC; `add_chunk` and `sample` may run in different threads.

    `capacity` counts rows, one per observation: an episode of T transitions takes T + 1 rows.
    With `storage` (a directory) the rows live in files there and an existing store is reopened
    with everything its last commit holds (see `store.py`); without, in memory.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        capacity: int,
        device: str | torch.device = "cpu",
        seed: int = 0,
        storage: str | Path | None = None,
        readonly: bool = False,
    ):
        if int(capacity) <= 0:
            raise ValueError(f"ReplayBuffer capacity: expected a positive number of rows, got {capacity}")
        self.spec = spec
        self.capacity = int(capacity)
        self.device = resolve_device(device, where="ReplayBuffer device")
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._layout = chunk_layout(spec)
        self._written = 0  # rows ever written; the next row gets global number `_written`
        self._open: dict[int, int] = {}  # episode_id -> global row of its latest (not final) row
        self._senders: dict[str, int] = {}  # sender -> sequence number of its last stored chunk
        self.meta: dict = {}  # the owner's state committed with the rows (the learner's counters)
        self._n_valid = 0
        self._valid_idx: np.ndarray | None = None  # cache of flatnonzero(valid), dropped on add
        self._store: RowStore | None = None
        self._prefault = Prefaulter({}, self.capacity)  # in-memory rows only (a store's are files)
        if storage is None:
            self._data = {
                k: lazy_zeros((self.capacity, *shape), dt) for k, (shape, dt) in self._layout.items()
            }
            self._data.update({k: lazy_zeros((self.capacity,), dt) for k, dt in LINK_FIELDS.items()})
            self._data["next"][:] = -1
            big = {k: a for k, a in self._data.items() if a.nbytes >= 4 << 20}
            self._prefault = Prefaulter(big, self.capacity)
        else:
            self._store = RowStore(
                Path(storage), self._layout, self.capacity, spec.to_dict(), spec.fingerprint(), readonly
            )
            self._data = dict(self._store.arrays)
            self._data["valid"] = lazy_zeros((self.capacity,), "bool")
            self._recover(self._store.last_commit())

    @classmethod
    def open(cls, directory: str | Path, readonly: bool = True, device: str = "cpu") -> ReplayBuffer:
        """A stored buffer as its last commit left it, with the spec and capacity it was made with.

        Read-only by default: for tools that read a run's transitions (`replay_dirs`), also while
        the run's learner writes more."""
        manifest = read_manifest(Path(directory))
        spec = FeatureSpec.from_dict(manifest["spec"])
        return cls(spec, manifest["capacity"], device=device, storage=directory, readonly=readonly)

    def __repr__(self) -> str:
        return f"ReplayBuffer({self.memory_report()}, device={self.device})"

    # ------------------------------------------------------------------------------ size
    def __len__(self) -> int:
        """Number of sampleable transitions (rows whose next observation is stored)."""
        return self._n_valid

    @property
    def size(self) -> int:
        """Rows held (observations, including each episode's final one)."""
        return min(self._written, self.capacity)

    @property
    def written(self) -> int:
        """Rows ever written (the position in the stored data; above `capacity` once it wrapped)."""
        return self._written

    @property
    def rng_state(self) -> dict:
        """The sampling generator's state: a checkpoint keeps it, so a resumed run samples on."""
        return self._rng.bit_generator.state

    @rng_state.setter
    def rng_state(self, state: dict) -> None:
        self._rng.bit_generator.state = state

    @property
    def fields(self) -> tuple[str, ...]:
        """The stored chunk fields (observations, action, scalars, episode ids), in layout order."""
        return tuple(self._layout)

    def column(self, name: str) -> np.ndarray:
        """One stored field's rows by ring position (memory-mapped for a store; do not write)."""
        return self._data[name]

    @property
    def bytes_per_transition(self) -> int:
        """Bytes of storage per row: observations once, plus action, scalars and links."""
        return int(sum(a.itemsize * int(np.prod(a.shape[1:])) for a in self._data.values()))

    @property
    def nbytes(self) -> int:
        """Bytes of storage in use (rows written so far)."""
        return self.size * self.bytes_per_transition

    def memory_report(self) -> str:
        per = self.bytes_per_transition
        return (
            f"{len(self)} transitions in {self.size}/{self.capacity} rows, {per:,} B per row "
            f"({self.nbytes / 2**20:,.1f} MiB used, {self.capacity * per / 2**30:,.2f} GiB at capacity)"
        )

    # ------------------------------------------------------------------------------- add
    def add_chunk(
        self,
        chunk: dict[str, np.ndarray],
        only_interventions: bool = False,
        source: tuple[str, int] | None = None,
        meta: dict | None = None,
    ) -> int:
        """Copy a chunk's rows into the ring; return the number of rows stored.

        The learner holds its own copy afterwards: a chunk from `ray.get` (read-only, owned by the
        actor that put it) may vanish with that actor once this returns.
        With `only_interventions` (the offline buffer) only intervention transitions are kept,
        plus the rows holding their next observation, also when that row is in the next chunk.
        `source` = (sender, sequence number) of a stream of chunks: a chunk already stored is
        skipped (`is_stored`), and a chunk that does not directly follow the sender's last stored
        one (some were lost) starts its episode afresh instead of linking to a row of long ago.
        With storage, the rows and `meta` are committed together before this returns.
        """
        k, cols = validate_chunk(self.spec, chunk)
        if source is not None and self.is_stored(source):
            return 0
        link = self._follows_last(source)
        if k == 0:
            with self._lock:
                self._commit(source, meta)
            return 0
        eid, last = cols["episode_id"], cols["is_last"]
        start = ~last & cols["is_intervention"] if only_interventions else ~last
        same_prev, run_starts, run_ends = episode_runs(eid)
        with self._lock:
            if only_interventions:
                rows = self._intervention_rows(eid, start, same_prev, run_starts, link)
            else:
                rows = np.arange(k)
            # More rows than capacity: the oldest would be overwritten.
            rows = rows[max(0, rows.size - self.capacity) :]
            g_of = np.full(k, -1, np.int64)  # each chunk row's global row number (-1: not stored)
            g_of[rows] = np.arange(self._written, self._written + rows.size)
            if rows.size:
                pred = self._predecessors(eid, same_prev, run_starts, g_of, link)
                self._write_rows(cols, rows, start[rows])
                self._link(pred[rows], g_of[rows])
                self._advance(rows.size)
            self._update_open(eid, last, run_starts, run_ends, g_of)
            self._commit(source, meta)
        return rows.size

    def _follows_last(self, source: tuple[str, int] | None) -> bool:
        """Does the chunk directly follow its sender's last stored one (or is it the sender's first)?

        If not, chunks were lost between them: the chunk's episodes start afresh instead of linking
        to a row of long ago."""
        if source is None:
            return True
        last = self._senders.get(source[0])
        return last is None or last == source[1] - 1

    def _intervention_rows(self, eid, start, same_prev, run_starts, link: bool) -> np.ndarray:
        """The chunk rows the offline buffer keeps: intervention transitions, the rows holding their
        next observation, and a run's first row when it is the next observation of a stored row."""
        keep = start.copy()
        keep[1:] |= start[:-1] & same_prev[1:]
        for s in run_starts if link else ():
            g = self._alive_open(int(eid[s]))
            if g is not None and self._data["is_start"][g % self.capacity]:
                keep[s] = True
        return np.flatnonzero(keep)

    def _predecessors(self, eid, same_prev, run_starts, g_of, link: bool) -> np.ndarray:
        """Global row of each chunk row's previous observation (-1: none stored).

        Within the chunk it is the row before in the same episode; a run's first row continues its
        episode's latest stored row (if alive and `link`)."""
        pred = np.full(len(eid), -1, np.int64)
        pred[1:] = np.where(same_prev[1:], g_of[:-1], -1)
        for s in run_starts if link else ():
            g = self._alive_open(int(eid[s]))
            if g is not None:
                pred[s] = g
        return pred

    def _write_rows(self, cols: dict[str, np.ndarray], rows: np.ndarray, is_start: np.ndarray) -> None:
        """Write the chunk's `rows` as the next global rows (at most two contiguous slices of the ring).

        Stored rows stop being the rows they overwrite first, and are named by their global
        number last: a kill mid-write leaves no row claiming data it does not hold."""
        g0, m = self._written, rows.size
        stored = self._store is not None
        if stored:
            self._write("row_id", np.full(m, -1, np.int64), g0)
        whole = m == len(cols["episode_id"])
        for name in self._layout:
            self._write(name, cols[name] if whole else cols[name][rows], g0)
        self._write("next", np.full(m, -1, np.int64), g0)
        self._write("is_start", is_start, g0)
        self._write("valid", np.zeros(m, bool), g0)
        if stored:
            self._write("row_id", np.arange(g0, g0 + m), g0)

    def _link(self, pred: np.ndarray, g: np.ndarray) -> None:
        """Link each new row's predecessor to it, if still alive (the new rows may overwrite it).

        A linked predecessor that starts a transition becomes sampleable."""
        d = self._data
        ok = pred >= self._written + g.size - self.capacity
        pos = pred[ok] % self.capacity
        d["next"][pos] = g[ok]
        d["valid"][pos] = d["is_start"][pos]

    def _advance(self, m: int) -> None:
        """Count m new rows as written: the prefaulter runs ahead of them, the valid count is redone."""
        d = self._data
        self._written += m
        if self._written < self.capacity and all(d[name] is a for name, a in self._prefault.arrays.items()):
            self._prefault.advance(self._written)
        self._n_valid = int(np.count_nonzero(d["valid"]))
        self._valid_idx = None

    def commit_meta(self, meta: dict) -> None:
        """Commit the owner's state alone, with no rows (with storage: it survives a kill -9)."""
        with self._lock:
            self._commit(None, meta)

    def is_stored(self, source: tuple[str, int]) -> bool:
        """Was this chunk of this sender stored already (sent again after a lost acknowledgement)?"""
        last = self._senders.get(source[0])
        return last is not None and source[1] <= last

    def _commit(self, source: tuple[str, int] | None, meta: dict | None) -> None:
        """Publish the rows just written. The chunk counts as stored (`is_stored`) only once its
        commit is written: a commit that fails (disk full) leaves it to be sent again."""
        senders = dict(self._senders)
        if source is not None:
            senders.pop(source[0], None)  # re-insert: the dict stays in last-heard order
            senders[source[0]] = int(source[1])
            while len(senders) > MAX_SENDERS:
                senders.pop(next(iter(senders)))
        meta = self.meta if meta is None else meta
        if self._store is not None:
            self._store.commit({**self._state(), "senders": senders, "meta": meta})
        self._senders, self.meta = senders, meta

    def _state(self) -> dict:
        return {
            "written": self._written,
            "open_episodes": [[int(e), int(g)] for e, g in self._open.items()],
            "senders": dict(self._senders),
            "meta": self.meta,
        }

    def _recover(self, commit: dict | None) -> None:
        """Take the state of the store's last commit; drop rows and links written after it."""
        commit = commit or {"written": 0, "open_episodes": [], "senders": {}, "meta": {}}
        d, cap, w = self._data, self.capacity, int(commit["written"])
        low = max(0, w - cap)
        g = np.arange(low, w)
        pos = g % cap
        alive = np.zeros(cap, bool)
        alive[pos] = d["row_id"][pos] == g  # overwritten after the commit: not these rows any more
        nxt = d["next"][pos]
        linked = (nxt >= low) & (nxt < w)
        linked[linked] &= alive[nxt[linked] % cap]
        valid = d["valid"]
        valid[:] = False
        valid[pos] = alive[pos] & d["is_start"][pos] & linked
        if self._store is not None and not self._store.readonly:
            cut = pos[(nxt >= 0) & ~linked]
            d["next"][cut] = -1  # links to rows the commit does not hold; re-made when they come again
        self._written = w
        self._open = {int(e): int(r) for e, r in commit["open_episodes"] if low <= r < w and alive[r % cap]}
        self._senders = {str(k): int(v) for k, v in commit["senders"].items()}
        self.meta = commit["meta"]
        self._n_valid = int(np.count_nonzero(valid))
        self._valid_idx = None

    def sync(self) -> None:
        """Flush stored rows to the disk (a power loss then costs nothing committed before this)."""
        if self._store is None or self._store.readonly:
            return
        with self._lock:
            state = self._state()
        self._store.sync(state)

    def prefetch(self) -> None:
        """Bring a stored buffer's rows into the page cache (blocking; see RowStore.prefetch)."""
        if self._store is not None:
            self._store.prefetch(self.size)

    def close(self) -> None:
        """Release the store's files and its writer lock (another learner may open it then)."""
        if self._store is not None:
            self._store.close()

    def live_positions(self) -> np.ndarray:
        """Ring positions of the stored rows, oldest first (for exporting a run's transitions)."""
        g = np.arange(max(0, self._written - self.capacity), self._written)
        pos = g % self.capacity
        if "row_id" in self._data:  # rows overwritten after the last commit (a kill mid-write)
            pos = pos[np.asarray(self._data["row_id"])[pos] == g]
        return pos

    def _alive_open(self, episode_id: int) -> int | None:
        g = self._open.get(episode_id)
        return g if g is not None and g >= self._written - self.capacity else None

    def _update_open(self, eid, last, run_starts, run_ends, g_of) -> None:
        for s, e in zip(run_starts, run_ends, strict=True):
            key = int(eid[s])
            if last[e] or g_of[e] < 0:
                self._open.pop(key, None)
            else:
                self._open[key] = int(g_of[e])
        low = self._written - self.capacity
        if len(self._open) > 64:  # forget episodes whose rows are gone (actors that died mid-episode)
            self._open = {k: g for k, g in self._open.items() if g >= low}

    def _write(self, name: str, src: np.ndarray, g0: int) -> None:
        if self._store is not None and name != "valid":
            self._store.write(name, src, g0)
            return
        dst = self._data[name]
        p0, m = g0 % self.capacity, len(src)
        first = min(m, self.capacity - p0)
        dst[p0 : p0 + first] = src[:first]
        if first < m:
            dst[: m - first] = src[first:]

    # ---------------------------------------------------------------------------- sample
    def sample(self, batch_size: int) -> dict:
        """A uniform batch (with replacement) as torch tensors on `device` (the Batch format)."""
        host = batching.allocate(self.spec, batch_size, self.device)
        self.fill(batching.as_numpy(host), 0, batch_size, batch_size)
        return batching.to_batch(self.spec, host, batch_size, self.device)

    def fill(self, out: dict[str, np.ndarray], offset: int, n: int, batch_size: int) -> None:
        """Write n sampled transitions into rows [offset, offset+n) of a `batch.allocate` output."""
        if n <= 0:
            return
        with self._lock:
            if self._n_valid == 0:
                raise RuntimeError(
                    f"cannot sample from an empty replay buffer ({self.size} rows, no complete transition "
                    "yet); wait until len(buffer) > 0"
                )
            if self._valid_idx is None:
                self._valid_idx = np.flatnonzero(self._data["valid"])
            idx = self._valid_idx[self._rng.integers(0, self._valid_idx.size, n)]
            d = self._data
            nxt = d["next"][idx] % self.capacity
            a, b = offset, offset + n
            for k in self.spec.observation:
                # mode="clip": indices are valid, and the default "raise" buffers the whole copy.
                np.take(d[k], idx, axis=0, out=out[k][a:b], mode="clip")
                np.take(d[k], nxt, axis=0, out=out[k][batch_size + a : batch_size + b], mode="clip")
            np.take(d["action"], idx, axis=0, out=out["action"][a:b], mode="clip")
            for k in batching.BATCH_SCALARS:
                out[k][a:b] = d[k][idx]

    # ---------------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        """Write the buffer atomically (temp dir + rename): .npy per field + manifest.json."""
        with self._lock:
            return persist.save(self, Path(directory))

    @classmethod
    def load(
        cls,
        directory: str | Path,
        device: str | torch.device = "cpu",
        spec: FeatureSpec | None = None,
        capacity: int | None = None,
        seed: int = 0,
        mmap: bool = False,
    ) -> ReplayBuffer:
        """Load a saved buffer; with `spec`, refuse one saved for a different pipeline.

        `capacity` (default: the saved one) may grow or shrink the ring (shrinking keeps the
        newest rows). `mmap=True` maps the files copy-on-write instead of reading them, when the
        saved buffer is full at the requested capacity (an offline buffer sized to its dataset).
        """
        return persist.load(cls, Path(directory), device, spec, capacity, seed, mmap)
