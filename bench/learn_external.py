"""Pick-and-place on an environment nobody here wrote: lerobot_env_so101/SO101PickPlace-v0, state only
(target: deterministic eval >= 90% within 20,000 env steps, seeds 0-2).

    .venv/bin/python bench/learn_external.py [--seed 0] [--steps 20000] [-- --a.b=value ...]

The env's own sparse reward, success (`info["succeed"]`) and random block and goal; 10 demos
recorded by its own scripted controller (`PickPlaceController`, through
`hilserl_ray.gymenv.lerobot_experts:PickPlace`) with `hilserl_ray.record`; then
`hilserl_ray.train` (local Ray, learner + robot actor, that controller intervening by the oracle's
rule) and `hilserl_ray.evaluate` (deterministic policy, 20 episodes, no video: the env renders
on the CPU). Prints the env steps at which the success over the last 50 episodes first reached
90%, the deterministic eval success, the intervention rate and the wall time. Settings:
configs/lerobot_env_so101_pick_place.yaml plus OVERRIDES.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from learning import print_table, record_demos, table

from hilserl_ray import train
from hilserl_ray.evaluate import evaluate
from hilserl_ray.runtime.metrics import read_metrics

CONFIG = "configs/lerobot_env_so101_pick_place.yaml"
DEMOS = 10
TARGET = 0.9
OVERRIDES = [
    "--policy.batch_size=256",
    "--learner.weights_every=10",
    "--checkpoint.every_updates=5000",
    "--logging.every_seconds=20",
]


def steps_to(rows: list[dict], target: float) -> int | None:
    """The env steps of the first metrics row whose last-50-episode success reached `target`
    (with 50 episodes behind it)."""
    for r in rows:
        if r.get("episodes", 0) >= 50 and r.get("success_rate", 0.0) >= target:
            return int(r["env_steps"])
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=20_000, help="env steps of the training run")
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--out", type=Path, default=Path("outputs/bench/learn_external"))
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="config overrides after --: -- --a.b=value")
    args = p.parse_args()
    extra = [o for o in args.overrides if o != "--"]
    out = args.out / f"seed{args.seed}"
    t0 = time.monotonic()
    demos = record_demos(
        CONFIG, [f"--seed={args.seed + 100}", *extra], DEMOS, args.out / f"demos_seed{args.seed}"
    )
    rc = train.main(
        [
            "--config",
            CONFIG,
            "--overwrite",
            *OVERRIDES,
            f"--seed={args.seed}",
            f"--total_env_steps={args.steps}",
            f"--output_dir={out}",
            f"--dataset.path={demos}",
            *extra,
        ]
    )
    if rc != 0:
        raise SystemExit(f"training exited {rc}")
    train_minutes = (time.monotonic() - t0) / 60
    rows = read_metrics(out)
    print_table(table(rows, args.steps))
    ev = evaluate(out, episodes=args.eval_episodes)
    minutes = (time.monotonic() - t0) / 60
    last = rows[-1]
    reached = steps_to(rows, TARGET)
    reached_text = str(reached) if reached is not None else f"not within {int(last['env_steps'])}"
    interventions = last.get("intervention_steps", 0) / max(last.get("env_steps", 1), 1)
    result = {
        "seed": args.seed,
        "env_steps": int(last["env_steps"]),
        "env_steps_to_90pct_last_50": reached,
        "success_last_50": last.get("success_rate"),
        "unassisted_success_last_50": last.get("unassisted_success_rate"),  # no intervention step
        "eval_success": ev["success_rate"],
        "eval_episodes": args.eval_episodes,
        "intervention_rate_last_50": last.get("intervention_rate"),
        "intervention_rate_overall": round(interventions, 4),
        "updates": int(last.get("updates", 0)),
        "train_minutes": round(train_minutes, 1),
        "wall_minutes": round(minutes, 1),
    }
    (out / "bench_result.json").write_text(json.dumps(result, indent=1))
    print(
        f"\n== {CONFIG} seed {args.seed}: env steps to {TARGET:.0%} (last 50 episodes): "
        f"{reached_text}; the policy alone over the last 50: {last.get('unassisted_success_rate', 0):.0%}; deterministic eval "
        f"{ev['success_rate']:.0%} ({args.eval_episodes} episodes); interventions {result['intervention_rate_overall']:.1%} "
        f"of all env steps ({last.get('intervention_rate', 0):.0%} over the last 50 episodes); wall time "
        f"{minutes:.1f} min (training {train_minutes:.1f})"
    )


if __name__ == "__main__":
    main()
