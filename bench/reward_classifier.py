"""Reward classifier on sim pick-cube from the wrist camera: record, train, evaluate held out.

    MUJOCO_GL=egl .venv/bin/python bench/reward_classifier.py [--train-episodes 80] [--test-episodes 40]

Records two LeRobot datasets with `hilserl_ray.record --expert mix --until-time-limit` (expert
successes that keep holding the cube up, near misses that lift an empty gripper, grasp-then-slip,
hovering above the cube; labels = the sim's ground truth per frame), trains on the first with
`python -m hilserl_ray.reward train`, grades it on the second (other seeds, never seen) with
`evaluate`, and times one inference step on CPU. Goals: balanced accuracy >= 97%, false-positive
rate <= 1% on negative episodes, <= 5 ms per step for one 128x128 camera.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see policy/perf.py

import numpy as np  # noqa: E402
import torch  # noqa: E402
from demos import record_mix, train_classifier  # noqa: E402

from hilserl_ray.reward.__main__ import main as reward_main  # noqa: E402
from hilserl_ray.reward.model import Scorer  # noqa: E402

CONFIG = "configs/sim_pick_cube.yaml"
OVERRIDES = [
    "--env.max_episode_steps=60",
    "--env.dense_reward=false",
    "--pipeline.intervention.source=oracle",
]


def inference_ms(model: Path, repeats: int = 300) -> float:
    """Median wall-clock ms of one Scorer call (one observation, CPU, one torch thread as the actor)."""
    torch.set_num_threads(1)
    scorer = Scorer(model)
    rng = np.random.default_rng(0)
    shapes = {k: tuple(f["shape"]) for k, f in scorer.meta["input"]["features"].items()}
    obs = {k: rng.integers(0, 256, s, dtype=np.uint8) for k, s in shapes.items()}
    for _ in range(20):
        scorer(obs)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        scorer(obs)
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train-episodes", type=int, default=80)
    p.add_argument("--test-episodes", type=int, default=40)
    p.add_argument("--steps", type=int, default=1500, help="classifier training steps")
    p.add_argument("--out", type=Path, default=Path("outputs/bench/reward_classifier"))
    args = p.parse_args()
    t0 = time.monotonic()
    train_ds = record_mix(CONFIG, OVERRIDES, args.train_episodes, 200, args.out / "train_data")
    test_ds = record_mix(CONFIG, OVERRIDES, args.test_episodes, 300, args.out / "test_data")
    record_min = (time.monotonic() - t0) / 60
    model = args.out / "classifier"
    train_s = train_classifier(CONFIG, OVERRIDES, [train_ds], model, args.steps)
    rc = reward_main(
        ["evaluate", "--model", str(model), "--dataset", str(test_ds), "--out", str(args.out / "test_eval")]
    )
    if rc != 0:
        return rc
    ev = json.loads((args.out / "test_eval" / "evaluation.json").read_text())
    ms = inference_ms(model)
    f, ep = ev["frames"], ev["episodes"]
    print(
        f"\n== reward classifier, sim pick-cube, wrist camera 128x128 (recording took {record_min:.1f} min)"
    )
    print(
        f"held-out test episodes: {ep['episodes']} ({ep['negative_episodes']} never succeed), {f['frames']} frames"
    )
    print(f"frame accuracy          {f['accuracy']:.1%}")
    print(f"balanced accuracy       {f['balanced_accuracy']:.1%}   (goal >= 97%)")
    print(f"false positives, negative episodes  {ep['fp_rate_negative_episodes']:.1%}   (goal <= 1%)")
    print(f"missed positive episodes            {ep['miss_rate_positive_episodes']:.1%}")
    print(f"training time           {train_s:.0f} s ({args.steps} steps, this CPU)")
    print(f"inference per step      {ms:.2f} ms   (goal <= 5 ms, one 128x128 camera, 1 thread)")
    print(f"pictures: {model}/quality.png, {model}/worst.png, {args.out}/test_eval/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
