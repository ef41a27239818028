"""`python -m hilserl_ray.reward train|evaluate ...`: train a success classifier, or grade one.

    python -m hilserl_ray.reward train --dataset D [--dataset D2 ...] --config X --out DIR [--a.b=value ...]
    python -m hilserl_ray.reward evaluate --model DIR --dataset D [--threshold T] [--consecutive-frames N]

Use it in training with `--pipeline.reward.classifier=DIR` (see docs/reward_classifier.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

# Spinning OpenMP threads starve each other on a busy CPU (see policy/perf.py): ~10x slower
# training steps here. libgomp reads this once, when torch loads, so it is set before that.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from hilserl_ray.configio import load_config
from hilserl_ray.errors import ConfigError, command
from hilserl_ray.reward.spec import META_FILE


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hilserl_ray.reward", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train on labelled datasets; writes weights, JSON and pictures to --out")
    t.add_argument(
        "--dataset", type=Path, action="append", required=True, help="LeRobot dataset (repeatable)"
    )
    t.add_argument("--config", required=True, help="the training config whose pipeline the classifier serves")
    t.add_argument("--out", type=Path, required=True, help="new directory for the classifier")
    t.add_argument("--camera", action="append", default=None, help="camera to read (repeatable; default all)")
    t.add_argument("--steps", type=int, default=1500)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=3e-4)
    t.add_argument("--val-fraction", type=float, default=0.2, help="share of episodes held out")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--overwrite", action="store_true", help="replace a classifier already in --out")
    t.add_argument("--no-progress", action="store_true")
    e = sub.add_parser("evaluate", help="frame and episode metrics of a classifier on datasets")
    e.add_argument("--model", type=Path, required=True, help="directory written by train")
    e.add_argument("--dataset", type=Path, action="append", required=True)
    e.add_argument("--config", default=None, help="default: the config the classifier was trained with")
    e.add_argument("--threshold", type=float, default=None, help="default: the model's chosen threshold")
    e.add_argument("--consecutive-frames", type=int, default=1)
    e.add_argument("--out", type=Path, default=None, help="write evaluation.json and pictures here")
    e.add_argument("--no-progress", action="store_true")
    return p


def _train(args, rest) -> int:
    from hilserl_ray.reward.train import train_classifier  # torch: loaded once the command line is good

    cfg = load_config(args.config, rest)
    problems = []
    if (args.out / META_FILE).exists() and not args.overwrite:
        problems.append(
            f"--out: got '{args.out}'; a new directory (it holds a classifier; --overwrite replaces it)"
        )
    if args.steps <= 0 or args.batch_size < 2:
        problems.append(f"--steps / --batch-size: got {args.steps} / {args.batch_size}; > 0 and >= 2")
    if not 0 <= args.val_fraction < 1:
        problems.append(f"--val-fraction: got {args.val_fraction}; in [0, 1)")
    if problems:
        raise ConfigError("command line", problems)
    meta = train_classifier(
        cfg,
        args.dataset,
        args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        val_fraction=args.val_fraction,
        cameras=args.camera,
        seed=args.seed,
        progress=not args.no_progress,
    )
    v, tr = meta["validation"], meta["train"]
    f, ep = v["frames"], v["episode_summary"]
    print(
        f"trained in {tr['seconds']:.0f} s on {tr['frames']} frames ({tr['positive_frames']} success) of "
        f"{tr['episodes']} episodes; held out {v['held_out']}: {f['frames']} frames, accuracy "
        f"{f['accuracy']:.1%}, balanced accuracy {f['balanced_accuracy']:.1%}, false successes on "
        f"{ep['fp_rate_negative_episodes']:.0%} of {ep['negative_episodes']} negative episodes; threshold "
        f"{meta['threshold']:.2f}\nwrote {args.out}/ (model.safetensors, classifier.json, quality.png, worst.png); "
        f"use it with --pipeline.reward.classifier={args.out}"
    )
    return 0


def _evaluate(args, rest) -> int:
    from hilserl_ray.reward.train import evaluate_classifier  # torch: loaded once the command line is good

    cfg = load_config(args.config, rest) if args.config else None
    if args.threshold is not None and not 0 < args.threshold < 1:
        raise ConfigError("command line", [f"--threshold: got {args.threshold}; in (0, 1)"])
    if args.consecutive_frames < 1:
        raise ConfigError("command line", [f"--consecutive-frames: got {args.consecutive_frames}; >= 1"])
    try:
        r = evaluate_classifier(
            args.model,
            args.dataset,
            cfg,
            args.threshold,
            args.consecutive_frames,
            args.out,
            progress=not args.no_progress,
        )
    except ValueError as e:  # unreadable classifier directory
        raise ConfigError("command line", [f"--model: {e}"]) from e
    f, ep = r["frames"], r["episodes"]
    print(f"{'episode':<28} {'frames':>6} {'label first':>11} {'fired first':>11} {'max p':>6}")
    for row in r["per_episode"]:
        lab = "-" if row["label_first"] is None else row["label_first"]
        fired = "-" if row["fired_first"] is None else row["fired_first"]
        print(f"{row['episode']:<28} {row['frames']:>6} {lab:>11} {fired:>11} {row['max_prob']:>6.2f}")
    print(
        f"threshold {r['threshold']:.2f}, {r['consecutive_frames']} consecutive frame(s): frame accuracy "
        f"{f['accuracy']:.1%}, balanced accuracy {f['balanced_accuracy']:.1%} ({f['frames']} frames); "
        f"false-positive rate on negative episodes {ep['fp_rate_negative_episodes']:.1%} "
        f"({ep['negative_episodes']} episodes); missed {ep['miss_rate_positive_episodes']:.1%} of "
        f"{ep['positive_episodes']} positive episodes"
    )
    return 0


@command
def main(argv: list[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return _train(args, rest) if args.command == "train" else _evaluate(args, rest)


if __name__ == "__main__":
    sys.exit(main())
