"""Where should the learner keep transitions: chunks in Ray's object store, or a ring in its heap?

The mission's design allowed either: keep each chunk as a learner-owned Ray object and sample from
its zero-copy read-only numpy views (Ray spills for free), or copy chunks into a preallocated
ring in the learner heap (RLlib's choice, `ReplayBuffer`). This measures sample() for batch 256 on
one core for both, with the same rows (64-row chunks, one 128x128 camera, 18-dim state).

    .venv/bin/python bench/buffer_storage_choice.py [--rows 16000]
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import ray
import torch
from buffer_speed import timed  # the same timer as bench/buffer_speed.py

from hilserl_ray.buffer import ReplayBuffer
from hilserl_ray.buffer import batch as batching
from hilserl_ray.buffer.synthetic import episodes_chunk, identity, split_rows
from hilserl_ray.config import TrainConfig
from hilserl_ray.envs.pipeline import pipeline_spec

CHUNK = 64


class ObjectStoreBuffer:
    """Chunks as learner-owned Ray objects; a batch gathers row by chunk from their zero-copy views.

    Simplified for the measurement (one actor, fixed 64-row chunks, every row a transition start
    except an episode's final row); a real one would also need cross-chunk links and eviction.
    """

    def __init__(self, spec):
        self.spec, self.refs, self.views, self.rng = spec, [], [], np.random.default_rng(0)
        self.is_last = np.zeros(0, bool)

    def add_chunk(self, chunk) -> None:
        ref = ray.put({k: np.ascontiguousarray(v) for k, v in chunk.items()})  # the learner owns it
        self.refs.append(ref)
        self.views.append(ray.get(ref))  # read-only views into shared memory
        self.is_last = np.concatenate([self.is_last, self.views[-1]["is_last"]])

    def sample(self, batch_size: int) -> dict:
        n_rows = len(self.views) * CHUNK
        g = self.rng.integers(0, n_rows - 1, 4 * batch_size)
        g = g[~self.is_last[g]][:batch_size]
        nxt = g + 1  # single actor: the next row is the next global row (maybe in the next chunk)
        host = batching.allocate(self.spec, batch_size, torch.device("cpu"))
        out = batching.as_numpy(host)
        both = np.concatenate([g, nxt])
        chunk_of, row_of = both // CHUNK, both % CHUNK
        order = np.argsort(chunk_of, kind="stable")
        bounds = np.flatnonzero(np.diff(chunk_of[order])) + 1
        for grp in np.split(order, bounds):
            view, rows = self.views[chunk_of[grp[0]]], row_of[grp]
            for k in self.spec.observation:
                out[k][grp] = view[k][rows]
            first = grp[grp < batch_size]
            if first.size:
                r = row_of[first]
                out["action"][first] = view["action"][r]
                for k in batching.BATCH_SCALARS:
                    out[k][first] = view[k][r]
        return batching.to_batch(self.spec, host, batch_size, torch.device("cpu"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=16_000)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    spec = pipeline_spec(TrainConfig(buffer={"online_ratio": 1.0}, env={"cameras": [{"name": "front"}]}))
    rng = np.random.default_rng(0)
    episodes = args.rows // 101 + 1
    chunk = episodes_chunk(spec, [100] * episodes)
    chunk["observation.images.front"] = rng.integers(
        0, 256, chunk["observation.images.front"].shape, np.uint8
    )
    n = len(chunk["episode_id"]) // CHUNK * CHUNK
    pieces = split_rows({k: v[:n] for k, v in chunk.items()}, [CHUNK] * (n // CHUNK))

    ray.init(
        address="local",
        num_cpus=1,
        include_dashboard=False,
        object_store_memory=int(3e9),
        log_to_driver=False,
    )
    # pin only this process (Ray's own processes started above keep both cores)
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)
    try:
        store = ObjectStoreBuffer(spec)
        for p in pieces:
            store.add_chunk(p)
        ring = ReplayBuffer(spec, capacity=100_000)
        for p in pieces:
            ring.add_chunk(p)
        for b in (store.sample(args.batch), ring.sample(args.batch)):  # both return correct pairs
            e, s, ne, ns = identity(b)
            assert (ne == e).all() and (ns == s + 1).all()
        t_store = timed(lambda: store.sample(args.batch), 100)[1]  # median
        t_ring = timed(lambda: ring.sample(args.batch), 100)[1]
        print(
            f"{n:,} rows in {n // CHUNK} chunks of {CHUNK}, one 128x128 camera, batch {args.batch}, one core"
        )
        print(f"  object store (learner-owned chunks, zero-copy views): sample {t_store:6.2f} ms")
        print(f"  learner-heap ring (ReplayBuffer):                      sample {t_ring:6.2f} ms")
        print(f"  -> ring is {t_store / t_ring:.1f}x faster to sample; ReplayBuffer keeps the ring")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
