"""SO101Reach from state through the full Ray runtime (target: >= 95% success over the last 50
episodes within 5,000 env steps).

    .venv/bin/python bench/learn_reach.py [--seeds 0 1] [--ablation no_demos|no_interventions|no_rlpd]
    .venv/bin/python bench/learn_reach.py --twin [--seeds 0]

Settings: 18-dim proprioception + the target position, dense shaping (a distance cost), 5 demos
recorded by the scripted oracle, the oracle taking over 20% of episodes early on (decaying to 0
over 40 episodes) and after 15 steps without progress, RLPD 50/50 mixing, one SAC update (UTD 2)
per env step (robot actors paced to the learner, as synchronous SAC).

--twin: the same task through the real-arm path (target: >= 90% within 5,000 env steps), against
`python -m hilserl_ray.twin`: the Feetech bus on a pty, calibration, safety clamps, watchdog,
leader-arm interventions by the twin's scripted person, the reward from the person's `s` key
(sparse: no shaping on a real arm), 10 Hz real time, the learner free-running as on a real arm.
A state policy cannot see a target, so the person keeps it at one place (`TWIN_TARGET`); no demos.
"""

import sys
import time
from pathlib import Path

from learning import parse_args, print_table, run, table

from hilserl_ray import train
from hilserl_ray.runtime.metrics import read_metrics
from hilserl_ray.twin.launch import running_twin

# configs/sim_reach.yaml already holds the benchmark's settings; only the logging differs.
OVERRIDES = ["--learner.weights_every=10", "--logging.every_seconds=10"]

TWIN_TARGET = (0.26, 0.06, 0.12)
TWIN_OVERRIDES = [
    "--env.task=reach",
    "--env.cameras=[]",
    "--pipeline.image.crop={}",
    "--env.max_episode_steps=50",
    "--pipeline.ee_action.step_size_m=0.02",
    "--pipeline.ee_action.max_step_m=0.03",
    "--pipeline.intervention.oracle.episode_probability=0.2",
    "--pipeline.intervention.oracle.decay_episodes=40",
    "--pipeline.intervention.oracle.stuck_steps=15",
    "--robot.reset_seconds=0.5",
    "--robot.bus_timeout_ms=500",  # this machine runs 6 other jobs: a starved twin must not crash the run
    "--actors.max_restarts=20",
    "--learner.training_starts=250",
    "--learner.weights_every=10",
    "--logging.every_seconds=10",
    "--checkpoint.every_updates=2500",
]


def twin_episodes(events: list[dict]) -> list[dict]:
    """Per episode, from the twin's log (this run: after its last start): did the person take
    over, did it press success."""
    starts = [i for i, e in enumerate(events) if e["event"] == "start"]
    eps: list[dict] = []
    for e in events[starts[-1] if starts else 0 :]:
        if e["event"] == "episode":
            eps.append({"intervened": False, "success": False})
        elif e["event"] == "key" and eps:
            if e["key"] == "space":
                eps[-1]["intervened"] = True
            elif e["key"] == "s":
                eps[-1]["success"] = True
    return eps


def start_ray(tries: int = 5) -> None:
    """The robot node, as the driver would start it; retried, because on a machine this loaded
    Ray's fixed 30 s raylet start-up wait sometimes runs out."""
    import ray

    for attempt in range(tries):
        try:
            ray.init(
                address="local", num_cpus=2, labels={"robot": "so101"}, resources={"so101": 1},
                include_dashboard=False,
            )  # fmt: skip
            return
        except Exception as e:
            print(f"ray.init failed ({e}); retrying ({attempt + 1}/{tries})", flush=True)
            ray.shutdown()
            time.sleep(5)
    raise SystemExit("could not start Ray")


def run_twin(args) -> None:
    import ray

    for seed in args.seeds:
        out = args.out or Path("outputs/bench/reach_twin") / f"seed{seed}"
        cfg = ["--config", "configs/so101_twin.yaml", *TWIN_OVERRIDES, *args.overrides]
        target = ["--target", *map(str, TWIN_TARGET)]
        twin_dir = out.parent / f"{out.name}_twin"  # not inside out: --overwrite empties out
        with running_twin(cfg[1], twin_dir, *cfg[2:], *target, "--seed", str(seed)) as twin:
            start_ray()
            t0 = time.monotonic()
            rc = train.main(
                [
                    *cfg,
                    *twin.overrides(),
                    f"--seed={seed}",
                    f"--total_env_steps={args.steps}",
                    f"--output_dir={out}",
                    "--overwrite",
                ]
            )
            minutes = (time.monotonic() - t0) / 60
            events = twin.events()
            ray.shutdown()
        if rc != 0:
            raise SystemExit(f"training exited {rc}")
        rows = read_metrics(out)
        print(f"\n== reach through the twin, seed {seed}: {minutes:.1f} min wall clock")
        print_table(table(rows, args.steps))
        eps = twin_episodes(events)[-50:]
        alone = [e for e in eps if not e["intervened"]]
        last = rows[-1]
        print(
            f"success over the last 50 episodes {last.get('success_rate', 0):.0%} (metrics; the person's s key), "
            f"intervention rate {last.get('intervention_rate', 0):.0%}; in the twin's log: "
            f"{sum(e['success'] for e in eps)}/{len(eps)} episodes succeeded, "
            f"{sum(e['success'] for e in alone)}/{len(alone)} of those without a takeover"
        )


if __name__ == "__main__":
    if "--twin" in sys.argv:
        sys.argv.remove("--twin")
        run_twin(parse_args(__doc__, default_steps=5000))
    else:
        args = parse_args(__doc__, default_steps=5000)
        run("reach", "configs/sim_reach.yaml", OVERRIDES, demos=5, args=args)
