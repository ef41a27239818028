"""The offline buffer: the dataset's rows read in place (never copied) plus a ring of interventions.

The converted dataset already sits on disk in the conversion cache (`data/cache.py`, memory-
mapped); copying it into the ring at every start and into every checkpoint cost time and disk for
data that never changes. Online intervention transitions go to a ring of their own (durable when
given a storage directory). A batch's offline share is split between the two by their sizes, so
it is uniform over all offline transitions, as one ring holding both would be.
"""

from __future__ import annotations

import numpy as np

from hilserl_ray.buffer import batch as batching
from hilserl_ray.buffer.chunk import validate_chunk
from hilserl_ray.buffer.replay import ReplayBuffer
from hilserl_ray.features import FeatureSpec


class DatasetRows:
    """A Chunk of complete episodes (each ends with its `is_last` row), sampled where it lies."""

    def __init__(self, spec: FeatureSpec, chunk: dict[str, np.ndarray], seed: int = 0):
        self.spec = spec
        _, self._cols = validate_chunk(spec, chunk)  # memory maps of the right dtype stay maps
        # Every row but an episode's final one starts a transition; its next obs is the next row.
        eid, last = self._cols["episode_id"], self._cols["is_last"]
        self._starts = np.flatnonzero(~last[:-1] & (eid[1:] == eid[:-1]))
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return int(self._starts.size)

    def fill(self, out: dict[str, np.ndarray], offset: int, n: int, batch_size: int) -> None:
        if n <= 0:
            return
        idx = self._starts[self._rng.integers(0, self._starts.size, n)]
        d, a, b = self._cols, offset, offset + n
        for k in self.spec.observation:
            np.take(d[k], idx, axis=0, out=out[k][a:b], mode="clip")
            np.take(d[k], idx + 1, axis=0, out=out[k][batch_size + a : batch_size + b], mode="clip")
        np.take(d["action"], idx, axis=0, out=out["action"][a:b], mode="clip")
        for k in batching.BATCH_SCALARS:
            out[k][a:b] = d[k][idx]


class OfflineBuffer:
    """Dataset rows + a ring of intervention transitions, sampled as one (the mixer's offline side)."""

    def __init__(self, ring: ReplayBuffer, datasets: list[DatasetRows] = (), seed: int = 0):
        self.ring, self.datasets = ring, list(datasets)
        self.spec, self.device = ring.spec, ring.device
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.ring) + sum(len(d) for d in self.datasets)

    def add_chunk(self, chunk, only_interventions: bool = False, source=None, meta=None) -> int:
        return self.ring.add_chunk(chunk, only_interventions=only_interventions, source=source, meta=meta)

    def fill(self, out: dict[str, np.ndarray], offset: int, n: int, batch_size: int) -> None:
        parts = [p for p in (*self.datasets, self.ring) if len(p)]
        if n <= 0 or not parts:
            return
        sizes = np.array([len(p) for p in parts], dtype=float)
        for part, k in zip(parts, self._rng.multinomial(n, sizes / sizes.sum()), strict=True):
            part.fill(out, offset, int(k), batch_size)
            offset += int(k)

    def rng_states(self) -> dict:
        return {
            "split": self._rng.bit_generator.state,
            "ring": self.ring.rng_state,
            "datasets": [d._rng.bit_generator.state for d in self.datasets],
        }

    def set_rng_states(self, states: dict) -> None:
        self._rng.bit_generator.state = states["split"]
        self.ring.rng_state = states["ring"]
        for d, st in zip(self.datasets, states.get("datasets", []), strict=False):
            d._rng.bit_generator.state = st
