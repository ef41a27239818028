"""`make smoke-test`: the whole loop in sim on this machine, small enough for a few minutes on 2 cores.

Local Ray, sim pick-cube with one wrist camera and the scripted oracle intervening; trains a few
hundred env steps and updates, checkpoints, then resumes from that checkpoint and continues the
counters. Prints what happened and exits non-zero if any part did not.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hilserl_ray import train
from hilserl_ray.errors import command
from hilserl_ray.runtime.checkpoint import latest_checkpoint

SMALL = [
    "--env.cameras.0.width=96",
    "--env.cameras.0.height=96",
    "--pipeline.image.size=[64,64]",
    "--policy.batch_size=32",
    "--policy.hidden_dims=[128,128]",
    "--policy.latent_dim=64",
    "--learner.training_starts=100",
    "--learner.weights_every=10",
    "--checkpoint.every_updates=50",
    "--buffer.online_capacity=5000",
    "--logging.every_seconds=5",
    "--logging.tensorboard=false",
    "--pipeline.intervention.oracle.episode_probability=0.5",
]


def counters(ckpt: Path) -> dict:
    return json.loads((ckpt / "learner.json").read_text())["counters"]


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hilserl_ray.smoke", description=__doc__)
    p.add_argument("--output-dir", default="outputs/smoke")
    p.add_argument("--steps", type=int, default=400)
    args = p.parse_args(argv)
    out = Path(args.output_dir)
    base = ["--config", "configs/sim_pick_cube.yaml", f"--output_dir={out}", "--name=smoke", *SMALL]

    t0 = time.monotonic()
    print(f"== 1/2 train {args.steps} env steps from scratch into {out}", flush=True)
    rc = train.main([*base, "--overwrite", f"--total_env_steps={args.steps}"])
    first = latest_checkpoint(out / "checkpoints")
    if rc != 0 or first is None:
        print(f"smoke test FAILED: first run exited {rc}, checkpoint {first}", file=sys.stderr)
        return 1
    c1 = counters(first)

    print(f"== 2/2 resume from {first.name} and train to {2 * args.steps} env steps", flush=True)
    rc = train.main([*base, "--resume", f"--total_env_steps={2 * args.steps}"])
    second = latest_checkpoint(out / "checkpoints")
    c2 = counters(second) if second else {}
    ok = (
        rc == 0
        and second is not None
        and c2.get("env_steps", 0) >= 2 * args.steps
        and c2["updates"] > c1["updates"]
    )
    print(
        "\nsmoke test {}: run 1 -> {} env steps, {} updates, {} episodes; resumed run -> {} env steps, "
        "{} updates, {} episodes; {:.0f} s; curves: python -m hilserl_ray.plot {}".format(
            "OK" if ok else "FAILED",
            c1["env_steps"],
            c1["updates"],
            c1["episodes"],
            c2.get("env_steps"),
            c2.get("updates"),
            c2.get("episodes"),
            time.monotonic() - t0,
            out,
        ),
        flush=True,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
