"""Replay buffer speed and size: sample() for batch 256 with one and two 128x128 cameras, on one core.

Prints per camera count: sample() median/p90 (target < 5 ms), the 50/50 online/offline mixer's
sample(), add_chunk throughput for 64-row chunks, bytes per stored transition (LeRobot: 196,703 B
with one camera; target <= 50,000 B), RAM growth while filling vs the buffer's own size, and
save/load times.

    .venv/bin/python bench/buffer_speed.py [--rows 16000] [--batch 256]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hilserl_ray.buffer import MixedSampler, ReplayBuffer
from hilserl_ray.buffer.synthetic import episodes_chunk, split_rows
from hilserl_ray.config import TrainConfig
from hilserl_ray.envs.pipeline import pipeline_spec

LEROBOT_BYTES_ONE_CAMERA = 196_703


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def spec_for(cameras: tuple[str, ...]):
    cfg = TrainConfig(
        buffer={"online_ratio": 1.0}, env={"cameras": [{"name": c} for c in cameras]}
    )  # default pipeline: 128x128 images, 18-dim state, 4-dim action
    return pipeline_spec(cfg)


def fill(buf: ReplayBuffer, rows: int, first_episode_id: int, rng: np.random.Generator) -> float:
    """Add 100-step episodes in 64-row chunks with random pixels; return the add throughput (rows/s)."""
    spec, added, eid, elapsed = buf.spec, 0, first_episode_id, 0.0
    while added < rows:
        chunk = episodes_chunk(spec, [100] * 10, first_episode_id=eid)
        for k in spec.image_keys:  # real pixels: untouched (zero) pages would make reads look free
            chunk[k] = rng.integers(0, 256, chunk[k].shape, dtype=np.uint8)
        eid += 10
        pieces = split_rows(chunk, [64] * (len(chunk["episode_id"]) // 64) + [len(chunk["episode_id"]) % 64])
        t0 = time.perf_counter()
        for p in pieces:
            added += buf.add_chunk(p)
        elapsed += time.perf_counter() - t0
    return added / elapsed


def timed(fn, n: int) -> tuple[float, float, float]:
    """(min, median, p90) in ms; min is the figure least disturbed by other processes."""
    fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.min(ts) * 1e3), float(np.median(ts) * 1e3), float(np.percentile(ts, 90) * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=16_000, help="transitions stored per buffer")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=100)
    args = ap.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(f"one core, batch {args.batch}, {args.rows:,} rows per buffer, 128x128 images, state 18, action 4")
    print(
        f"machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other processes skew medians)"
    )
    for cams in [("front",), ("front", "gripper_cam")]:
        spec = spec_for(cams)
        before = rss_mb()
        online = ReplayBuffer(spec, capacity=100_000)
        add_rate = fill(online, args.rows, 0, rng)
        grown = rss_mb() - before
        low, med, p90 = timed(lambda b=online: b.sample(args.batch), args.repeats)
        per = online.bytes_per_transition
        print(f"\n{len(cams)} camera(s):")
        print(
            f"  sample({args.batch})           median {med:6.2f} ms  p90 {p90:6.2f} ms  min {low:5.2f} ms  (target < 5 ms)"
        )
        offline = ReplayBuffer(spec, capacity=args.rows // 2)  # full, as one sized to its dataset
        fill(offline, args.rows // 2, 10**6, rng)
        mixer = MixedSampler(online, offline, 0.5)
        low, med, p90 = timed(lambda m=mixer: m.sample(args.batch), args.repeats)
        print(
            f"  mixer.sample({args.batch})     median {med:6.2f} ms  p90 {p90:6.2f} ms  min {low:5.2f} ms  (50/50)"
        )
        print(f"  add_chunk (64 rows)      {add_rate:,.0f} rows/s")
        print(
            f"  bytes per transition     {per:,} B (LeRobot {LEROBOT_BYTES_ONE_CAMERA * len(cams):,} B: "
            f"{LEROBOT_BYTES_ONE_CAMERA * len(cams) / per:.1f}x smaller; target <= {50_000 * len(cams):,} B)"
        )
        print(
            f"  RAM while filling        +{grown:,.0f} MiB for {online.nbytes / 2**20:,.0f} MiB of rows "
            f"(capacity 100,000 = {online.capacity * per / 2**30:.1f} GiB reserved, not touched)"
        )
        tmp = Path(tempfile.mkdtemp(prefix="bufbench-"))
        try:
            t0 = time.perf_counter()
            online.save(tmp / "buf")
            t_save = time.perf_counter() - t0
            t0 = time.perf_counter()
            loaded = ReplayBuffer.load(tmp / "buf", spec=spec)
            t_load = time.perf_counter() - t0
            offline.save(tmp / "offline")
            t0 = time.perf_counter()
            mapped = ReplayBuffer.load(tmp / "offline", spec=spec, mmap=True)
            t_map = time.perf_counter() - t0
            assert len(loaded) == len(online) and len(mapped) > 0
            print(
                f"  save {online.nbytes / 2**20:,.0f} MiB        {t_save:.2f} s; load {t_load:.2f} s "
                f"(into fresh RAM); full offline buffer load with mmap=True {t_map * 1e3:.0f} ms"
            )
            del loaded, mapped
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        del online, offline, mixer


if __name__ == "__main__":
    main()
