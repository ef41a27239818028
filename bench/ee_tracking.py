"""End-effector tracking: does a held EE command move the arm as far as it asks, from anywhere?

From N seeded random-walk poses of the MuJoCo SO-101 (configs/sim_pick_cube.yaml, no camera),
each of the six directions is held for `--steps` steps. Prints per direction the fraction of the
commanded motion achieved (the command capped by the room left to the workspace bound; runs
whose goal is out of reach from the pose's joints, by position-only IK, are left out), how many
runs stalled (< 50%), the drift of the EE while a zero action is held (servo sag creeping in),
and the speed of the EEAction wrapper.

    .venv/bin/python bench/ee_tracking.py [--poses 40] [--steps 7] [--scale 1.0] [--before]

--before: `pipeline.ee_action.max_lag_m=0`, steps from the measured EE as before the fix (the
IK change that came with it stays).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hilserl_ray.configio import load_config
from hilserl_ray.rig import make_env
from hilserl_ray.so101 import STAY

DIRECTIONS = {"+x": (0, 1), "-x": (0, -1), "+y": (1, 1), "-y": (1, -1), "+z": (2, 1), "-z": (2, -1)}
MIN_ROOM_M = 0.01  # a run with less room than this to the workspace bound says nothing


def wrapper(env, name: str):
    while type(env).__name__ != name:
        env = env.env
    return env


def walk(env, seed: int, rng_seed: int):
    """Reset and take 20-200 uniform random EE actions (a pose anywhere the policy could leave
    the arm), then 5 zero actions for it to settle."""
    env.reset(seed=seed)
    rng = np.random.default_rng(rng_seed)
    for _ in range(int(rng.integers(20, 200))):
        env.step(np.r_[rng.uniform(-1, 1, 3), STAY].astype(np.float32))
    for _ in range(5):
        env.step(np.array([0.0, 0.0, 0.0, STAY], np.float32))


def reachable(kin, q: np.ndarray, goal: np.ndarray, tol_m: float = 0.003) -> bool:
    """Whether the arm can put its gripperframe at `goal` from joints `q` (position-only IK from
    there): a goal beyond the reach or the joint limits says nothing about tracking."""
    return bool(np.linalg.norm(kin.fk(kin.ik(goal, q, restarts=False))[0] - goal) < tol_m)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--poses", type=int, default=40)
    ap.add_argument("--steps", type=int, default=7, help="steps each direction is held")
    ap.add_argument("--scale", type=float, default=1.0, help="size of the held action (1: full step)")
    ap.add_argument("--before", action="store_true", help="max_lag_m=0: steps from the measured EE")
    args = ap.parse_args()
    overrides = ["--env.cameras=[]", "--pipeline.intervention.source=none", "--buffer.online_ratio=1.0"]
    if args.before:
        overrides.append("--pipeline.ee_action.max_lag_m=0")
    cfg = load_config("configs/sim_pick_cube.yaml", overrides)
    ee = cfg.pipeline.ee_action
    lo, hi = np.asarray(ee.workspace_low), np.asarray(ee.workspace_high)
    env = make_env(cfg, seed=0)
    inner, ee_wrap = env.unwrapped, wrapper(env, "EEAction")
    calls, spent = 0, 0.0
    joint_targets = ee_wrap.joint_targets

    def timed(action):
        nonlocal calls, spent
        t = time.perf_counter()
        out = joint_targets(action)
        spent += time.perf_counter() - t
        calls += 1
        return out

    ee_wrap.joint_targets = timed
    fractions: dict[str, list[float]] = {d: [] for d in DIRECTIONS}
    drift, t0 = [], time.perf_counter()
    for p in range(args.poses):
        for name, (axis, sign) in DIRECTIONS.items():
            walk(env, p, 1000 + p)
            start = inner.ee_pos().copy()  # (the wrapper's joints are these, measured)
            room = hi[axis] - start[axis] if sign > 0 else start[axis] - lo[axis]
            want = min(args.steps * args.scale * ee.step_size_m, room)
            action = np.array([0.0, 0.0, 0.0, STAY], np.float32)
            action[axis] = sign * args.scale
            for _ in range(args.steps):
                env.step(action)
            goal = start.copy()
            goal[axis] += sign * want
            if want >= MIN_ROOM_M and reachable(ee_wrap.kin, ee_wrap._q, goal):
                fractions[name].append(min(sign * (inner.ee_pos()[axis] - start[axis]) / want, 1.0))
        walk(env, p, 1000 + p)
        hold = np.array([0.0, 0.0, 0.0, STAY], np.float32)
        start = inner.ee_pos().copy()
        for _ in range(10):
            env.step(hold)
        drift.append(np.linalg.norm(inner.ee_pos() - start))
    elapsed = time.perf_counter() - t0
    mode = "before (max_lag_m=0)" if args.before else f"max_lag_m={getattr(ee, 'max_lag_m', None)}"
    print(
        f"EE tracking, {args.poses} random-walk poses, each direction held {args.steps} steps "
        f"of {args.scale * ee.step_size_m * 100:.1f} cm; {mode}"
    )
    print("direction  runs  achieved (mean)  achieved (p10)  stalled (<50%)")
    for name, f in fractions.items():
        f = np.asarray(f)
        print(
            f"{name:>9}  {len(f):4d}  {100 * f.mean():14.0f}%  {100 * np.percentile(f, 10):13.0f}%  "
            f"{int((f < 0.5).sum()):5d}"
        )
    allf = np.concatenate([np.asarray(f) for f in fractions.values()])
    print(
        f"all        {len(allf):4d}  {100 * allf.mean():14.0f}%  {100 * np.percentile(allf, 10):13.0f}%  "
        f"{int((allf < 0.5).sum()):5d}"
    )
    d = np.asarray(drift) * 1000
    print(f"zero action held 10 more steps: EE drift median {np.median(d):.1f} mm, max {d.max():.1f} mm")
    print(
        f"EEAction.joint_targets (FK + IK): {calls / spent:.0f} calls/s ({1e3 * spent / calls:.2f} ms); "
        f"whole env step incl. physics: ~{calls / elapsed:.0f} steps/s"
    )


if __name__ == "__main__":
    main()
