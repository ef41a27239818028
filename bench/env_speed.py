"""Env steps per second of the wrapped sim env (IK, physics, FK proprioception, rendering).

    MUJOCO_GL=egl .venv/bin/python bench/env_speed.py [--steps 2000] [--task pick_cube]

Prints steps/s state-only and with one 128x128 camera, one process: wall-clock, and per
CPU-second of the process (all its threads: physics, IK and the llvmpipe rasterizer), which is
the per-core figure and does not depend on what else the machine runs. LP_NUM_THREADS=1 keeps
llvmpipe on one thread. Target: >= 300 steps/s per core with the camera. Actions are uniform
random, so the IK solves a new target every step.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from hilserl_ray.config import TrainConfig  # noqa: E402
from hilserl_ray.rig import make_env  # noqa: E402


def measure(task: str, cameras: list[dict], steps: int) -> tuple[float, float]:
    """(steps per wall second, steps per CPU second of this process, all its threads)."""
    cfg = TrainConfig.model_validate(
        {"env": {"task": task, "cameras": cameras, "max_episode_steps": 100}, "buffer": {"online_ratio": 1.0}}
    )
    env = make_env(cfg, seed=0)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    for _ in range(20):  # warm up (GL context, caches)
        env.step(env.action_space.sample())
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        a = np.array([*rng.uniform(-1, 1, 3), rng.integers(0, 3)], np.float32)
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    env.close()
    return steps / elapsed, steps / cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--task", default="pick_cube", choices=["reach", "pick_cube"])
    args = p.parse_args()
    print(
        f"task {args.task}, {args.steps} steps, MUJOCO_GL={os.environ['MUJOCO_GL']}, "
        f"LP_NUM_THREADS={os.environ.get('LP_NUM_THREADS', 'unset')}"
    )
    for label, cams in [
        ("state-only", []),
        ("1 camera 128x128 (front)", [{"name": "front", "height": 128, "width": 128}]),
        ("1 camera 128x128 (gripper_cam)", [{"name": "gripper_cam", "height": 128, "width": 128}]),
    ]:
        wall, cpu = measure(args.task, cams, args.steps)
        print(
            f"{label:32s} {wall:6.0f} steps/s wall  {cpu:6.0f} steps/s per CPU-second ({1000 / cpu:.2f} ms CPU/step)"
        )


if __name__ == "__main__":
    main()
