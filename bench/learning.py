"""Shared harness of the learning benchmarks (learn_reach.py, learn_pick_cube.py).

Each run goes through the real product: demos recorded by `hilserl_ray.record` into a LeRobot
v3.0 dataset, `hilserl_ray.train` (local Ray, learner + robot actor, the oracle intervening),
then `hilserl_ray.plot` (curves.png) and `hilserl_ray.evaluate` (deterministic policy, eval.mp4).
Prints a table of env steps vs success, return, intervention rate and learner updates/s.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # the classifier's training here: see policy/perf.py

import numpy as np
from demos import record_demos, record_mix, train_classifier

from hilserl_ray import train
from hilserl_ray.evaluate import evaluate
from hilserl_ray.plot import plot
from hilserl_ray.runtime.metrics import read_metrics

# Each switch removes one HIL-SERL ingredient, so a user can see what it buys.
ABLATIONS = {
    "full": [],
    "no_demos": ["--dataset.path=null"],
    "no_interventions": ["--pipeline.intervention.source=none"],
    "no_rlpd": ["--buffer.online_ratio=1.0"],
}


def parse_args(description: str, default_steps: int) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--ablation", choices=sorted(ABLATIONS), default="full")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=default_steps, help="env steps per run")
    p.add_argument("--out", type=Path, default=None, help="default outputs/bench/<name>/<ablation>")
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument(
        "--reward",
        choices=["env", "classifier"],
        default="env",
        help="classifier: record labelled sim episodes, train a reward classifier on the run's camera and "
        "use it as the only reward (sparse, no shaping, no privileged state; demos included)",
    )
    p.add_argument(
        "overrides", nargs=argparse.REMAINDER, help="extra config overrides after --: -- --a.b=value ..."
    )
    args = p.parse_args()
    args.overrides = [o for o in args.overrides if o != "--"]
    return args


def table(rows: list[dict], total_steps: int, buckets: int = 10) -> list[dict]:
    """The last metrics row at or below each tenth of the run's env steps."""
    out = []
    for i in range(1, buckets + 1):
        limit = total_steps * i / buckets
        below = [r for r in rows if r["env_steps"] <= limit and "success_rate" in r]
        if below:
            out.append(below[-1])
    return out


def print_table(rows: list[dict]) -> None:
    gt = any("env_success_rate" in r for r in rows)  # reward classifier: show the sim's own success too
    print(
        f"{'env steps':>9} {'success':>8} {'gt succ.' if gt else '':>8} {'return':>8} {'interv.':>8} "
        f"{'upd/s':>7} {'updates':>8}"
    )
    for r in rows:
        truth = f"{r.get('env_success_rate', 0):>8.0%}" if gt else f"{'':>8}"
        print(
            f"{int(r['env_steps']):>9d} {r.get('success_rate', 0):>8.0%} {truth} {r.get('episode_return', 0):>+8.2f} "
            f"{r.get('intervention_rate', 0):>8.0%} {r.get('updates_per_s', 0):>7.1f} {int(r.get('updates', 0)):>8d}"
        )


def classifier_overrides(config: str, overrides: list[str], seed: int, root: Path) -> list[str]:
    """Record labelled episodes with the run's pipeline, train a classifier, return the overrides
    that make it the run's only reward (see bench/reward_classifier.py)."""
    base = [*overrides, "--env.dense_reward=false"]
    data = record_mix(config, base, 60, seed + 200, root / f"classifier_data_seed{seed}")
    clf = root / f"classifier_seed{seed}"
    seconds = train_classifier(config, base, [data], clf, steps=1500)
    meta = json.loads((clf / "classifier.json").read_text())["validation"]
    print(
        f"reward classifier {clf}: trained in {seconds:.0f} s; held-out balanced accuracy "
        f"{meta['frames']['balanced_accuracy']:.1%}, false successes on "
        f"{meta['episode_summary']['fp_rate_negative_episodes']:.0%} of negative episodes"
    )
    return ["--env.dense_reward=false", f"--pipeline.reward.classifier={clf}"]


def run(name: str, config: str, overrides: list[str], demos: int, args: argparse.Namespace) -> list[dict]:
    root = args.out or Path("outputs/bench") / name / args.ablation
    if args.reward == "classifier" and args.out is None:
        root = Path("outputs/bench") / name / f"{args.ablation}_classifier_reward"
    results = []
    for seed in args.seeds:
        out = root / f"seed{seed}"
        reward = classifier_overrides(config, overrides, seed, root) if args.reward == "classifier" else []
        if reward:  # e.g. --pipeline.reward.min_ee_height_m=0.05: the demos get the same reward rule
            reward += [o for o in args.overrides if o.startswith("--pipeline.reward.")]
        run_overrides = [
            *overrides,
            f"--seed={seed}",
            f"--total_env_steps={args.steps}",
            f"--output_dir={out}",
            *reward,
            *args.overrides,
        ]
        if demos and args.ablation != "no_demos":
            # shared by the ablations of this benchmark (root.parent), never by another benchmark
            kind = "demos" if not reward else "demos_classifier"
            demo_dir = root.parent / f"{name}_{kind}_seed{seed}"
            ds = record_demos(config, [f"--seed={seed + 100}", *overrides, *reward], demos, demo_dir)
            run_overrides.append(f"--dataset.path={ds}")
        run_overrides += ABLATIONS[args.ablation]
        t0 = time.monotonic()
        rc = train.main(["--config", config, "--overwrite", *run_overrides])
        minutes = (time.monotonic() - t0) / 60
        if rc != 0:
            raise SystemExit(f"training exited {rc}")
        rows = read_metrics(out)
        print(f"\n== {name} [{args.ablation}] seed {seed}: {minutes:.1f} min wall clock")
        print_table(table(rows, args.steps))
        plot(out)
        ev = evaluate(out, episodes=args.eval_episodes, video=out / "eval.mp4")
        last = rows[-1]
        result = {
            "seed": seed,
            "ablation": args.ablation,
            "env_steps": int(last["env_steps"]),
            "success_last_50": last.get("success_rate"),
            "intervention_rate_last_50": last.get("intervention_rate"),
            "eval_success": ev["success_rate"],
            "eval_env_success": ev.get("env_success_rate"),
            "env_success_last_50": last.get("env_success_rate"),
            "updates": int(last.get("updates", 0)),
            "minutes": round(minutes, 1),
        }
        (out / "bench_result.json").write_text(json.dumps(result, indent=1))
        print(
            f"success over the last 50 episodes {result['success_last_50']:.0%}, intervention rate "
            f"{result['intervention_rate_last_50'] or 0:.0%}, deterministic eval {ev['success_rate']:.0%} "
            f"({args.eval_episodes} episodes); curves {out / 'curves.png'}, video {out / 'eval.mp4'}"
        )
        if reward:
            print(
                f"ground truth (the sim's own success) next to the classifier's: last 50 training episodes "
                f"{result['env_success_last_50'] or 0:.0%} vs {result['success_last_50']:.0%}; deterministic eval "
                f"{ev['env_success_rate']:.0%} vs {ev['success_rate']:.0%}"
            )
        results.append(result)
    if len(results) > 1:
        s = [r["success_last_50"] for r in results]
        print(
            f"\nacross seeds {args.seeds}: success over the last 50 episodes {np.mean(s):.0%} "
            f"(min {min(s):.0%}, max {max(s):.0%})"
        )
    return results
