"""Robot actor -> learner transport and learner -> robot weight broadcast, on a real local Ray.

Sends Chunk-format transitions with two 128x128 cameras + 18-dim state from one actor to the
real LearnerActor (training held off so only ingest is measured: the buffer copy is included),
for several chunk sizes; then times the weight broadcast of the agent's actor state (numpy via
ray.put) into a robot-side ActorPolicy.

    .venv/bin/python bench/transport_speed.py

Two learners in turn: one keeping rows in RAM (storage.durable=false), one writing into its
file-backed replay store (storage.durable=true, the default). Measured (chunk 64, 2 cores, both
actors on this machine): 6,300-13,000 transitions/s into RAM; 4,100-5,400 into the store while
the page cache absorbs the writes, ~3,200 (315 MB/s) once the disk's writeback bounds it
(`dd bs=3M count=2500` sustains 233 MB/s here). Four seconds per size: the figures swing with
the page cache and with what else runs; TRANSPORT_SECONDS=20 shows the sustained rates.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import ray

from hilserl_ray.config import TrainConfig
from hilserl_ray.configio import load_config
from hilserl_ray.envs.pipeline import pipeline_spec
from hilserl_ray.features import FeatureSpec
from hilserl_ray.policy import ActorPolicy
from hilserl_ray.runtime.learner import LearnerActor

CHUNK_SIZES = (1, 16, 64, 256)
SECONDS_PER_SIZE = float(os.environ.get("TRANSPORT_SECONDS", 4.0))


def make_cfg(durable: bool = True):
    return load_config(
        "configs/sim_pick_cube.yaml",
        [
            "--env.cameras=[{name: gripper_cam, width: 128, height: 128}, {name: front, width: 128, height: 128}]",
            "--learner.training_starts=100000000",
            "--buffer.online_capacity=60000",
            "--output_dir=outputs/bench_transport",
            f"--storage.durable={str(durable).lower()}",
        ],
    )


@ray.remote(num_cpus=1)
class Sender:
    def __init__(self, spec_dict: dict):
        self.spec = FeatureSpec.from_dict(spec_dict)

    def chunk(self, k: int, episode: int) -> dict:
        rng = np.random.default_rng(episode)
        c = {
            name: (
                rng.integers(0, 255, (k, *f.shape), dtype=np.uint8)
                if f.is_image
                else rng.standard_normal((k, *f.shape)).astype(np.float32)
            )
            for name, f in self.spec.observation.items()
        }
        c.update(
            action=rng.uniform(-1, 1, (k, *self.spec.action.shape)).astype(np.float32),
            reward=np.zeros(k, np.float32),
            discrete_penalty=np.zeros(k, np.float32),
            terminated=np.zeros(k, bool),
            truncated=np.zeros(k, bool),
            is_intervention=np.zeros(k, bool),
            episode_id=np.full(k, episode, np.int64),
            is_last=np.zeros(k, bool),
        )
        return c

    def send(self, learner, k: int, seconds: float, max_pending: int = 8) -> float:
        chunk = self.chunk(k, episode=k)  # pre-built: we time transport + ingest, not generation
        pending, sent, t0 = [], 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            if len(pending) >= max_pending:
                _, pending = ray.wait(pending, num_returns=1)
            pending.append(learner.add_chunk.remote(chunk, []))
            sent += k
        ray.get(pending)
        return sent / (time.perf_counter() - t0)

    def weights_latency(self, learner, cfg_dict: dict, repeats: int = 5) -> list[float]:
        cfg = TrainConfig.model_validate(cfg_dict)
        policy = ActorPolicy(self.spec, cfg.policy)
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            version, (ref,) = ray.get(learner.get_weights.remote(-1))
            policy.load_state_numpy(ray.get(ref))
            out.append((time.perf_counter() - t0) * 1000)
        return out


def ingest(cfg, spec, sender):
    """A learner with `cfg`'s storage, fed by `sender`: transitions/s per chunk size."""
    learner = LearnerActor.options(num_cpus=1).remote(cfg.model_dump(mode="json"), None)
    ray.get(learner.counters_now.remote())
    where = (
        "file-backed replay store (storage.durable=true)"
        if cfg.storage.durable
        else "RAM only (storage.durable=false)"
    )
    print(f"into {where}:")
    print(f"{'chunk size':>10} {'transitions/s':>14} {'MB/s':>7}")
    row_mb = sum(int(np.prod(f.shape)) for f in spec.observation.values() if f.is_image) / 1e6
    for k in CHUNK_SIZES:
        rate = ray.get(sender.send.remote(learner, k, SECONDS_PER_SIZE))
        print(f"{k:>10d} {rate:>14,.0f} {rate * row_mb:>7,.0f}")
    return learner


def main() -> None:
    cfg = make_cfg()
    spec = pipeline_spec(cfg)
    shutil.rmtree(Path(cfg.output_dir) / "replay", ignore_errors=True)  # a store left by an earlier run
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    print(f"features: {', '.join(f'{k} {f.shape}' for k, f in spec.observation.items())}")
    print(
        f"machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (others' work skews this)"
    )
    sender = Sender.remote(spec.to_dict())
    # RAM first: the store's GBs of dirty pages, still being written back after its run, would
    # slow whatever runs next
    for durable in (False, True):
        learner = ingest(make_cfg(durable), spec, sender)
        if not durable:
            ray.kill(learner)
    ms = ray.get(sender.weights_latency.remote(learner, cfg.model_dump(mode="json")))
    state = ray.get(ray.get(learner.get_weights.remote(-1))[1][0])
    mb = sum(v.nbytes for v in state.values()) / 1e6
    t0 = time.perf_counter()
    ray.put(state)
    put_ms = (time.perf_counter() - t0) * 1000
    print(
        f"weight broadcast: {mb:.1f} MB actor state; ray.put {put_ms:.1f} ms; get + load into the robot's "
        f"policy: median {np.median(ms):.1f} ms (min {min(ms):.1f}, max {max(ms):.1f})"
    )
    ray.shutdown()
    shutil.rmtree(Path(cfg.output_dir) / "replay", ignore_errors=True)  # the learner's replay store


if __name__ == "__main__":
    main()
