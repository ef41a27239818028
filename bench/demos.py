"""Datasets and a reward classifier recorded through the product, for the benchmarks that need them.

`record_demos` runs `hilserl_ray.record` with the oracle as the demonstrator; `record_mix` adds
deliberate failures (labelled frames for a reward classifier); `train_classifier` runs
`python -m hilserl_ray.reward train`. Each reuses what an earlier run already wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

from hilserl_ray import record
from hilserl_ray.reward.__main__ import main as reward_main


def record_demos(config: str, args: list[str], episodes: int, out: Path) -> Path:
    """`hilserl_ray.record` with the oracle as the demonstrator; `args`: record's and the config's."""
    if (out / "meta" / "info.json").is_file():
        return out  # recorded by an earlier run of this benchmark: same config, same seed
    rc = record.main(
        [
            "--config",
            config,
            "--episodes",
            str(episodes),
            "--out",
            str(out),
            "--codec",
            "h264",
            "--no-progress",
            *args,
            "--pipeline.intervention.source=oracle",
        ]
    )
    if rc != 0:
        raise SystemExit(f"recording {out} failed (exit {rc})")
    return out


def record_mix(config: str, overrides: list[str], episodes: int, seed: int, out: Path) -> Path:
    """A dataset of mixed expert successes and deliberate failures (reused when it exists)."""
    return record_demos(
        config, [*overrides, "--expert", "mix", "--until-time-limit", f"--seed={seed}"], episodes, out
    )


def train_classifier(config: str, overrides: list[str], datasets: list[Path], out: Path, steps: int) -> float:
    """Train into `out` (reused when it exists); returns the wall-clock seconds of training."""
    meta = out / "classifier.json"
    if not meta.is_file():
        args = ["train", "--config", config, "--out", str(out), "--steps", str(steps), *overrides]
        for d in datasets:
            args += ["--dataset", str(d)]
        if reward_main(args) != 0:
            raise SystemExit("training the classifier failed")
    return json.loads(meta.read_text())["train"]["seconds"]
