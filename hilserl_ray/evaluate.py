"""`python -m hilserl_ray.evaluate <output_dir> [--episodes N] [--video eval.mp4]`.

Runs the run's last checkpoint with the deterministic policy (no interventions) in the run's
own env and pipeline, prints success rate and return, writes `eval.json` and an mp4 of the
episodes (the sim's first camera, or its `front` camera when the task is state-only).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hilserl_ray.config import TrainConfig
from hilserl_ray.configio import NO_BUFFER_MIX, ConfigError, load_config
from hilserl_ray.data.video import VideoEncoder
from hilserl_ray.errors import UserError, command
from hilserl_ray.fleet import one_arm
from hilserl_ray.fsutil import unwritable
from hilserl_ray.policy import SACAgent
from hilserl_ray.runtime.collector import collecting
from hilserl_ray.runtime.resume import CheckpointLoadError, loadable_checkpoints


def evaluate(
    output_dir: Path,
    episodes: int = 20,
    video: Path | None = None,
    checkpoint: Path | None = None,
    seed_offset: int = 10_000,
    arm: str | None = None,
) -> dict:
    """`arm`: in a fleet run, the arm to evaluate on (its own port, cameras and calibration)."""
    output_dir = Path(output_dir)
    ckpt = Path(checkpoint) if checkpoint else newest_loadable(output_dir)
    # the policy alone: no interventions (and so no buffer mixing rule to satisfy)
    cfg = load_config(output_dir, ["--pipeline.intervention.source=none", *NO_BUFFER_MIX])
    cfg = one_arm(cfg, arm, str(output_dir / "config.yaml"))
    agent = load_agent(ckpt)
    seed = cfg.seed + seed_offset
    results = []
    # The console lets a person watch and judge (a real arm has no success signal of its own).
    with (
        collecting(cfg, f"evaluate {output_dir.name}", seed) as collector,
        Video(video, cfg.env.fps) as video_out,
        tqdm(total=episodes, unit="episode", desc="evaluating", disable=not cfg.logging.progress_bar) as bar,
    ):
        for ep in range(episodes):
            collector.reset(seed=seed + ep)
            step = None
            while step is None or not step.done:
                video_out.add(collector.env)
                step = collector.step(agent.select_action(collector.obs, deterministic=True))
            e = step.episode
            results.append(
                {
                    "success": e.success,
                    "env_success": e.env_success,
                    "return": e.ret,
                    "length": e.length,
                    "intervention_steps": e.intervention_steps,  # the console's operator took over
                }
            )
            bar.update(1)
    summary = summarize(cfg, ckpt, results, video)
    (output_dir / "eval.json").write_text(json.dumps({**summary, "per_episode": results}, indent=1))
    return summary


def check_writable(output_dir: Path, video: Path | None) -> None:
    """eval.json (and the video) can be written, checked before any episode runs."""
    problems = []
    if output_dir.is_dir() and (blocked := unwritable(output_dir / "eval.json")) is not None:
        problems.append(
            f"output_dir: got '{output_dir}'; evaluate writes eval.json there, and '{blocked}' is not "
            "writable by this user: run it as the run's owner, or evaluate a copy of the run"
        )
    if video is not None and (blocked := unwritable(video)) is not None:
        problems.append(
            f"--video: got '{video}'; '{blocked}' is not writable by this user: "
            "--video=<a path you can write> or --no-video"
        )
    if problems:
        raise ConfigError("command line", problems)


def newest_loadable(output_dir: Path) -> Path:
    """The newest checkpoint that loads: a damaged one is named and skipped."""
    good = loadable_checkpoints(output_dir / "checkpoints", warn=lambda m: print(m, file=sys.stderr))
    if not good:
        raise UserError(
            "no complete checkpoint here", where=str(output_dir / "checkpoints"), fix="train first"
        )
    return good[0]


def load_agent(ckpt: Path) -> SACAgent:
    try:
        return SACAgent.load(ckpt / "agent", device="cpu")
    except Exception as e:
        raise CheckpointLoadError(
            f"checkpoint {ckpt} cannot be loaded ({type(e).__name__}: {' '.join(str(e).split())[:200]})",
            fix="pass another --checkpoint, or train again",
        ) from e


class Video:
    """An mp4 of what the env renders before each step (nothing when `path` is None)."""

    def __init__(self, path: Path | None, fps: float):
        self.path, self.fps = path, fps
        self.encoder: VideoEncoder | None = None

    def add(self, env) -> None:
        if self.path is None:
            return
        frame = env.render()
        if self.encoder is None:
            self.encoder = VideoEncoder(self.path, frame.shape[1], frame.shape[0], self.fps, codec="h264")
        self.encoder.add(frame)

    def __enter__(self) -> Video:
        return self

    def __exit__(self, *exc) -> None:
        if self.encoder is not None:
            self.encoder.close()


def summarize(cfg: TrainConfig, ckpt: Path, results: list[dict], video: Path | None) -> dict:
    """Success rate, return and length over the episodes (what eval.json holds besides them)."""
    summary = {
        "checkpoint": str(ckpt),
        "episodes": len(results),
        "success_rate": float(np.mean([r["success"] for r in results])),
        "mean_return": float(np.mean([r["return"] for r in results])),
        "mean_length": float(np.mean([r["length"] for r in results])),
        "video": str(video) if video else None,
    }
    alone = [r for r in results if r["intervention_steps"] == 0]
    if len(alone) < len(results):  # a person steered some: their successes are not the policy's
        summary["episodes_with_takeover"] = len(results) - len(alone)
        summary["policy_alone_success_rate"] = (
            float(np.mean([r["success"] for r in alone])) if alone else None
        )
    if cfg.pipeline.reward.classifier is not None:  # success is the classifier's: show the env's own too
        summary["env_success_rate"] = float(np.mean([r["env_success"] for r in results]))
    return summary


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hilserl_ray.evaluate", description=__doc__)
    p.add_argument("output_dir", type=Path)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--video", type=Path, default=None, help="mp4 path (default <output_dir>/eval.mp4)")
    p.add_argument("--no-video", action="store_true")
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--arm", default=None, help="a fleet run (`robots`): the arm to evaluate on")
    args = p.parse_args(argv)
    if args.episodes <= 0:
        raise ConfigError("command line", [f"--episodes: got {args.episodes}; a positive number of episodes"])
    video = None if args.no_video else (args.video or args.output_dir / "eval.mp4")
    check_writable(args.output_dir, video)
    s = evaluate(args.output_dir, args.episodes, video, args.checkpoint, arm=args.arm)
    print(
        f"success {s['success_rate']:.0%} over {s['episodes']} episodes, mean return {s['mean_return']:+.2f}, "
        f"mean length {s['mean_length']:.1f}"
        + (f"; the env's own success {s['env_success_rate']:.0%}" if "env_success_rate" in s else "")
        + (
            f"; a person took over in {s['episodes_with_takeover']} (policy alone: "
            + ("none" if s["policy_alone_success_rate"] is None else f"{s['policy_alone_success_rate']:.0%}")
            + ")"
            if "episodes_with_takeover" in s
            else ""
        )
        + (f"; video {s['video']}" if s["video"] else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
