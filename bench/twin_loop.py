"""The real-arm control loop against the twin: period jitter, bus load, CPU per step, vs the sim.

    .venv/bin/python bench/twin_loop.py [--steps 150]

Runs `make_env` with configs/so101_twin.yaml (Feetech bus on the twin's pty, calibration,
safety clamps, watchdog + guard, the 64x64 pipeline from an MJPEG camera, leader arm and keys)
at 10 and 30 Hz, the policy replaced by a small random EE action, and prints:
- control-loop period p50/p99 and its jitter (|period - 1/fps|, p50/p99), from step start to
  step start, as the policy sees it;
- bus transactions/s on the follower's and the leader's bus (the twin counts instruction packets);
- CPU time per step of this process (the robot's side: bus, safety, IK, camera decode, pipeline),
  next to the same pipeline on the MuJoCo sim path (robot.type sim, the same camera rendered in
  process). The twin's own CPU (physics, rendering, JPEG) is a separate process and not counted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hilserl_ray.configio import load_config  # noqa: E402
from hilserl_ray.rig import make_env  # noqa: E402
from hilserl_ray.twin.launch import running_twin  # noqa: E402

CONFIG = "configs/so101_twin.yaml"
COMMON = ["--env.max_episode_steps=1000", "--robot.reset_seconds=0.5", "--robot.bus_timeout_ms=250"]


def drive(env, steps: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Step with small random EE actions; (step start times, process CPU seconds)."""
    env.reset(seed=0)
    starts = []
    cpu0 = time.process_time()
    for _ in range(steps):
        starts.append(time.monotonic())
        a = np.concatenate([rng.uniform(-0.3, 0.3, 3), [1.0]]).astype(np.float32)
        env.step(a)
    return np.array(starts), time.process_time() - cpu0


def real_path(fps: int, steps: int, out: Path) -> dict:
    args = [*COMMON, f"--env.fps={fps}", f"--env.cameras.0.fps={max(15, fps)}"]
    with running_twin(CONFIG, out / f"twin_{fps}hz", *args, "--no-intervene") as twin:
        cfg = load_config(CONFIG, [*args, *twin.overrides()])
        env = make_env(cfg, seed=0)
        try:
            st0 = twin.status()["bus"]
            t0 = time.monotonic()
            starts, cpu = drive(env, steps, np.random.default_rng(0))
            wall = time.monotonic() - t0
            st1 = twin.status()["bus"]
        finally:
            env.close()
    period = np.diff(starts)
    return {
        "period_ms": np.percentile(period, [50, 99]) * 1000,
        "jitter_ms": np.percentile(np.abs(period - 1.0 / fps), [50, 99]) * 1000,
        "follower_tps": (st1["transactions"] - st0["transactions"]) / wall,
        "leader_tps": (st1["leader_transactions"] - st0["leader_transactions"]) / wall,
        "cpu_ms": 1000 * cpu / steps,
    }


def sim_path(steps: int) -> float:
    cfg = load_config(
        "configs/sim_pick_cube.yaml",
        ["--pipeline.intervention.source=none", "--buffer.online_ratio=1.0", "--pipeline.image.size=[64,64]"],
    )
    env = make_env(cfg, seed=0)
    try:
        _, cpu = drive(env, steps, np.random.default_rng(0))
    finally:
        env.close()
    return 1000 * cpu / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--out", type=Path, default=Path("outputs/bench/twin_loop"))
    args = p.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    print(
        f"{'path':<22}{'period p50/p99 ms':>20}{'jitter p50/p99 ms':>20}{'bus tx/s (leader)':>20}{'CPU ms/step':>13}"
    )
    for fps in (10, 30):
        r = real_path(fps, args.steps, args.out)
        print(
            f"{f'real path, {fps} Hz':<22}{r['period_ms'][0]:>10.1f}/{r['period_ms'][1]:<9.1f}"
            f"{r['jitter_ms'][0]:>10.2f}/{r['jitter_ms'][1]:<9.2f}"
            f"{r['follower_tps']:>12.0f} ({r['leader_tps']:.0f})  {r['cpu_ms']:>10.2f}",
            flush=True,
        )
    print(f"{'sim path (no pacing)':<22}{'':>20}{'':>20}{'':>20}{sim_path(args.steps):>13.2f}")
    print("CPU = this process only (the robot's side); load on this machine:", os.getloadavg())


if __name__ == "__main__":
    main()
