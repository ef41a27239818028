"""`python -m hilserl_ray.data.inspect DIR [--config X] [--a.b=value ...]`: what a LeRobot dataset holds.

Prints features (dtype, shape, names, value ranges), episodes and their lengths, fps, each
camera's codec and size, and what the conversion would decide (action format, joint units).
With a config: whether the dataset fits it, and the exact dotted overrides (paste-able on the
`train` command line) that make it fit. Exit 0 when it fits (or without a config), 1 when
something only a person can decide is left, 2 on a bad config or an unreadable dataset.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import yaml

from hilserl_ray.config import EE_ONLY_SOURCES, TrainConfig
from hilserl_ray.configio import ConfigError, load_config, parse_overrides
from hilserl_ray.data import formats, mapping
from hilserl_ray.data.layout import DEFAULT_FEATURES
from hilserl_ray.data.lerobot_reader import LeRobotReader, image_hw
from hilserl_ray.data.video import video_info
from hilserl_ray.envs.pipeline import pipeline_spec
from hilserl_ray.errors import command
from hilserl_ray.features import ACTION, IMAGE_PREFIX, STATE

EXIT_NOT_FIT = 1


# ------------------------------------------------------------------------------ describing
def describe(reader: LeRobotReader) -> str:
    info = reader.info
    lengths = np.array([e.length for e in reader.episodes]) if reader.episodes else np.zeros(1, int)
    lines = [
        f"dataset {reader.root}",
        f"  LeRobot {reader.version}, robot_type {info.get('robot_type')!r}, fps {reader.fps:g}",
        f"  {len(reader.episodes)} episodes, {reader.num_frames} frames; episode length "
        f"min {lengths.min()} / mean {lengths.mean():.1f} / max {lengths.max()} frames "
        f"({lengths.mean() / reader.fps:.1f} s mean)",
        "  features:",
    ]
    numeric = [
        k
        for k, f in reader.features.items()
        if k not in DEFAULT_FEATURES and f.get("dtype") not in mapping.CAMERA_DTYPES
    ]
    ranges = formats.value_ranges(reader.root, info, numeric, reader)
    for key, f in reader.features.items():
        if key in DEFAULT_FEATURES:
            continue
        dtype, shape = f.get("dtype"), list(f.get("shape") or [])
        if dtype in mapping.CAMERA_DTYPES:
            hw = image_hw(f)
            vi = f.get("info") or {}
            codec = vi.get("video.codec") or _probe_codec(reader, key)
            size = f"{hw[0]}x{hw[1]}" if hw else str(shape)
            lines.append(
                f"    {key:<40} {dtype} {size}, codec {codec}, pix_fmt {vi.get('video.pix_fmt', '?')}"
            )
            continue
        names = formats.feature_names(f)
        lines.append(f"    {key:<40} {dtype} {shape}" + (f" {names}" if names else ""))
        r = ranges.get(key)
        if r is not None:
            span = ", ".join(f"{a:.4g}..{b:.4g}" for a, b in zip(r["min"], r["max"], strict=True))
            lines.append(f"    {'':<40} range {span}")
    return "\n".join(lines)


def _probe_codec(reader: LeRobotReader, key: str) -> str:

    for e in reader.episodes:
        path = e.videos.get(key, (None,))[0]
        if path is not None and Path(path).is_file():
            return str(video_info(path).get("video.codec"))
    return "?"


# ------------------------------------------------------------------------------- fitting
def _fit_step(reader: LeRobotReader, cfg: TrainConfig) -> dict:
    """Overrides that remove the mismatches this config has with the dataset (one pass)."""
    feats = reader.features
    out: dict = {}
    if abs(reader.fps - cfg.env.fps) > 1e-6:
        out["env.fps"] = int(reader.fps) if float(reader.fps).is_integer() else reader.fps
    # renames from the config that this dataset has no key for are stale here: dropped
    rename = {src: dst for src, dst in cfg.dataset.rename.items() if src in feats}

    def key_of(name: str) -> str:
        return next((src for src, dst in rename.items() if dst == name), name)

    numeric = [k for k in reader.keys if feats[k].get("dtype") not in mapping.CAMERA_DTYPES]
    for name, pool in (
        (STATE, [k for k in numeric if "state" in k]),
        (ACTION, [k for k in numeric if "action" in k]),
    ):
        if key_of(name) not in feats:
            src = mapping.closest(name, pool or numeric)
            if src:
                rename[src] = name
    cams = [k for k, f in feats.items() if f.get("dtype") in mapping.CAMERA_DTYPES]
    wanted = [IMAGE_PREFIX + c.name for c in cfg.env.cameras]
    unmatched_ds = [k for k in cams if k not in {key_of(w) for w in wanted}]
    for w in wanted:
        if key_of(w) not in feats and unmatched_ds:
            rename[unmatched_ds.pop(0)] = w
    rename = {src: dst for src, dst in rename.items() if src != dst}
    if rename != cfg.dataset.rename:
        out["dataset.rename"] = rename
    for i, cam in enumerate(cfg.env.cameras):
        src = next((s for s, d in rename.items() if d == IMAGE_PREFIX + cam.name), IMAGE_PREFIX + cam.name)
        hw = image_hw(feats[src]) if src in feats else None
        if hw is not None and hw != (cam.height, cam.width):
            out[f"env.cameras.{i}.height"], out[f"env.cameras.{i}.width"] = hw
    out.update(_action_space_overrides(reader, cfg, rename))
    return out


def _action_space_overrides(reader: LeRobotReader, cfg: TrainConfig, rename: dict) -> dict:
    """A pipeline-format action recorded with another EE/joint or gripper setting: switch to it."""
    key = next((s for s, d in rename.items() if d == ACTION), ACTION)
    f = reader.features.get(key)
    if f is None:
        return {}
    names = formats.feature_names(f)
    if not names or names == list(pipeline_spec(cfg).action.names or []):
        return {}
    for (ee, discrete), alt in formats.action_modes(cfg).items():
        if alt == names:
            out = {}
            if ee != cfg.pipeline.ee_action.enabled:
                out["pipeline.ee_action.enabled"] = ee
                if not ee and cfg.pipeline.intervention.source in EE_ONLY_SOURCES:
                    out["pipeline.intervention.source"] = "none"  # it cannot act in joint deltas
            if discrete != cfg.pipeline.gripper.discrete:
                out["pipeline.gripper.discrete"] = discrete
            return out
    return {}


def fit(reader: LeRobotReader, config: str | None, cli: dict) -> tuple[dict, list, TrainConfig]:
    """(the overrides that make the dataset fit, problems left, the fitted config)."""
    base = {**cli, "dataset.path": str(reader.root), "dataset.paths": []}
    found: dict = {}
    for _ in range(4):
        cfg = load_config(config, {**base, **found})
        step = {k: v for k, v in _fit_step(reader, cfg).items() if found.get(k) != v}
        if not step:
            break
        found.update(step)
    cfg = load_config(config, {**base, **found})
    return found, mapping.feature_problems(reader.info, cfg, reader.root, reader), cfg


def as_argument(key: str, value) -> str:
    text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
    text = text.removesuffix("\n...").strip()
    return shlex.quote(f"--{key}={text}")


# ---------------------------------------------------------------------------------- main
@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m hilserl_ray.data.inspect", description=__doc__.splitlines()[0]
    )
    p.add_argument("dir", help="a LeRobot dataset directory (v3.0 or v2.1)")
    p.add_argument("--config", help="a train config (YAML or a run's output dir): does the dataset fit it?")
    args, rest = p.parse_known_args(argv)
    if args.config is None and rest:
        raise ConfigError("command line", [f"{rest[0]}: overrides need a --config to apply to"])
    reader = LeRobotReader(args.dir)
    print(describe(reader))
    if args.config is None:
        cfg = load_config(None, {"dataset.path": str(reader.root)})
        decision, undecided = formats.decide(reader.root, reader.info, cfg, STATE, ACTION, reader)
        _print_decision(decision, undecided)
        print(
            "\nrun with --config <your train config> to see whether it fits and the overrides that make it fit"
        )
        return 0
    found, problems, cfg = fit(reader, args.config, parse_overrides(rest))
    decision, undecided = formats.decide(
        reader.root, reader.info, cfg, *formats.state_and_action_keys(cfg), reader
    )
    _print_decision(decision, undecided, detail=False)
    overrides = [as_argument(k, v) for k, v in found.items()]
    print()
    if not found and not problems:
        print(f"fits {args.config} as it is")
    elif found:
        print(
            f"fits {args.config} with these overrides:" if not problems else "these overrides fix part of it:"
        )
        print("  " + " ".join(overrides))
    if problems:
        print("still does not fit (needs your decision):")
        for line in mapping.problem_lines(problems):
            print(f"  - {line}")
    cmd = ["python", "-m", "hilserl_ray.train", "--config", shlex.quote(args.config)]
    cmd += [shlex.quote(a) for a in rest] + [shlex.quote(f"--dataset.path={reader.root}")] + overrides
    print("\ntrain with:\n  " + " ".join(cmd))
    return EXIT_NOT_FIT if problems else 0


def _print_decision(decision: formats.Decision | None, undecided: list, detail: bool = True) -> None:
    print("conversion would use:")
    if decision is not None:
        print(f"  action format: {decision.action_format} ({decision.action_reason})")
        if decision.joint_units:
            print(f"  joint units: {decision.joint_units} ({decision.units_reason})")
    for p, _, m in undecided:
        print(f"  - {p}: {m}" if detail else f"  {p}: undecided (below)")


if __name__ == "__main__":
    sys.exit(main())
