"""Checkpoints and learner restarts with the durable replay store, at 10k and 100k transitions.

For one and two 128x128 cameras (sim pick-cube pipeline, default policy), fills a learner's
online store with 100-step episodes in 64-row chunks, then prints:
  - checkpoint stall: how long training is held (the learner's lock) and the whole save;
  - checkpoint size on disk, and the run's total disk use (replay store + checkpoint);
  - resume time: a new learner on the same output dir (agent + store reopened), page cache cold;
  - sample(256) from the store (first batch after the resume = cold, then warm median) next to
    today's in-memory ring holding the same rows, and what copying the ring into a checkpoint
    (the previous design) cost for it.

    .venv/bin/python bench/checkpoint_speed.py [--rows 10000 100000] [--cameras 1 2] [--out DIR]

Disk: 100k rows with two cameras take ~9.8 GB; each case's directory is deleted after it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from buffer_speed import timed  # the same timer as bench/buffer_speed.py

from hilserl_ray.buffer import ReplayBuffer
from hilserl_ray.buffer.synthetic import episodes_chunk, split_rows
from hilserl_ray.config import TrainConfig
from hilserl_ray.configio import load_config
from hilserl_ray.runtime.checkpoint import write_checkpoint
from hilserl_ray.runtime.learner import Learner
from hilserl_ray.runtime.rundir import replay_dir

ROOT = Path(__file__).resolve().parents[1]
CAMERAS = ["gripper_cam", "front"]


def du_mib(path: Path) -> float:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True).stdout.split()
    return int(out[0]) / 1024 if out else 0.0


def evict(path: Path) -> None:
    """Drop the files' pages from the page cache (only these files), as after a reboot."""
    for f in path.rglob("*.npy"):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def chunks(spec, rows: int, rng: np.random.Generator):
    """64-row chunks of 100-step episodes, pixels from a pool of random images (not zero pages)."""
    pool = {
        k: rng.integers(0, 256, (1000, *spec.observation[k].shape), dtype=np.uint8) for k in spec.image_keys
    }
    made, eid = 0, 0
    while made < rows:
        chunk = episodes_chunk(spec, [99] * 10, first_episode_id=eid)  # 1000 rows
        eid += 10
        for k in spec.image_keys:
            chunk[k] = np.roll(pool[k], eid, axis=0)[: len(chunk[k])]
        yield from split_rows(chunk, [64] * 15 + [40])
        made += 1000


def case(rows: int, n_cams: int, base: Path) -> None:
    out = base / f"run-{rows}-{n_cams}cam"
    cfg = load_config(
        ROOT / "configs" / "sim_pick_cube.yaml",
        [
            f"--output_dir={out}",
            "--learner.training_starts=1000000000",
            f"--buffer.online_capacity={rows + 1000}",
        ],
    )
    d = cfg.model_dump(mode="json")
    d["env"]["cameras"] = [{**d["env"]["cameras"][0], "name": c} for c in CAMERAS[:n_cams]]
    d = TrainConfig.model_validate(d).model_dump(mode="json")
    learner = Learner(d)
    spec, rng = learner.spec, np.random.default_rng(0)
    t0 = time.perf_counter()
    sent = 0
    for i, piece in enumerate(chunks(spec, rows, rng)):
        learner.add_chunk(piece, source=("bench", i))
        sent += len(piece["is_last"])
    fill_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    learner.sync()
    flush_s = time.perf_counter() - t0
    # five seconds' worth of a 10 Hz arm since the last timer sync, then the checkpoint
    for j, piece in enumerate(chunks(spec, 64, rng)):
        learner.add_chunk(piece, source=("bench", 10**6 + j))
        break
    t0 = time.perf_counter()
    stall = {}

    def write(tmp: Path) -> dict:
        stall.update(learner.save(str(tmp)))
        return {"step": 0}

    ckpt = write_checkpoint(out / "checkpoints", None, write)
    save_s = time.perf_counter() - t0
    n_online = len(learner.online)
    learner.close()
    evict(replay_dir(out))
    t0 = time.perf_counter()
    resumed = Learner(d, resume_from=str(ckpt))
    resume_s = time.perf_counter() - t0
    assert len(resumed.online) == n_online
    t0 = time.perf_counter()
    resumed.online.sample(256)
    cold_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    resumed._prefetch.join()  # the learner reads the store into the page cache in the background
    warm_s = time.perf_counter() - t0 + cold_ms / 1e3
    store_min, store_med, store_p90 = timed(lambda: resumed.online.sample(256), 50)
    print(
        f"\n{rows:,} transitions, {n_cams} camera(s) 128x128 ({resumed.online.bytes_per_transition:,} B/row):"
        f"\n  fill {sent / fill_s:,.0f} rows/s into the store; first full flush {flush_s:.2f} s"
        f"\n  checkpoint: training stalled {stall['stall_s'] * 1e3:.0f} ms; whole save {save_s:.2f} s"
        f"\n  checkpoint size {du_mib(ckpt):.1f} MiB; run total on disk {du_mib(out):,.0f} MiB "
        f"(replay {du_mib(replay_dir(out)):,.0f} MiB)"
        f"\n  resume (new learner: agent + store, cold page cache) {resume_s:.2f} s"
        f"\n  sample(256) from the store: first (cold page cache) {cold_ms:.0f} ms; read back into the page "
        f"cache in the background in {warm_s:.1f} s; then median {store_med:.2f} ms p90 {store_p90:.2f} ms min {store_min:.2f} ms",
        flush=True,
    )
    resumed.close()
    if rows <= 20_000:  # the in-memory ring for comparison (RAM: rows x bytes per row)
        ring = ReplayBuffer(spec, resumed.online.capacity)
        for piece in chunks(spec, rows, np.random.default_rng(0)):
            ring.add_chunk(piece)
        mem_min, mem_med, mem_p90 = timed(lambda: ring.sample(256), 50)
        tmp = Path(tempfile.mkdtemp(dir=base))
        t0 = time.perf_counter()
        ring.save(tmp / "online")
        old_s = time.perf_counter() - t0
        print(
            f"  in-memory ring, same rows: sample(256) median {mem_med:.2f} ms p90 {mem_p90:.2f} ms min {mem_min:.2f} ms; "
            f"copying it into a checkpoint (before) {old_s:.2f} s, {du_mib(tmp):,.0f} MiB per checkpoint",
            flush=True,
        )
        shutil.rmtree(tmp)
        del ring
    shutil.rmtree(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--cameras", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default=None, help="where the runs go (default: a temp dir under outputs/)")
    args = ap.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as buffer_speed
    torch.set_num_threads(1)
    base = Path(args.out or tempfile.mkdtemp(prefix="ckptbench-", dir=ROOT / "outputs"))
    base.mkdir(parents=True, exist_ok=True)
    print(
        f"one core; machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; runs in {base}"
    )
    try:
        for rows in args.rows:
            for n in args.cameras:
                case(rows, n, base)
    finally:
        if args.out is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
