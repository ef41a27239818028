"""What a dataset's `action` is and which units its joints are in: decided, with the reason.

`dataset.action_format` and `dataset.joint_units` may be given; on `auto` (the default) they
are decided from meta/info.json names and meta/stats.json ranges (from the parquet columns
when stats.json lacks them), and the calibration. Rules, in order:

action format
  - action names equal the pipeline's                                  -> pipeline
  - 6+ action names ending in `.pos` (LeRobot teleop: follower targets)  -> joint_targets
  - the pipeline's action size and every value inside its bounds        -> pipeline
  - 6+ values whose means sit nearer the state's than zero               -> joint_targets,
    else                                                                 -> joint_deltas
joint units
  - an arm joint beyond +-100 (LeRobot clips range units at +-100)      -> degrees
  - pipeline-format actions (recorders that act in the EE space run in degrees) -> degrees
  - with robot.calibration: read as degrees, a joint leaves its calibrated range -> lerobot_range
  - an arm joint at exactly +-100 (LeRobot's clip)                        -> lerobot_range
  - otherwise: undecidable, an error naming both settings.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hilserl_ray.config import TrainConfig
from hilserl_ray.data.keys import dataset_key
from hilserl_ray.data.lerobot_reader import LeRobotReader
from hilserl_ray.envs.pipeline import pipeline_spec
from hilserl_ray.errors import Problem
from hilserl_ray.features import ACTION, STATE
from hilserl_ray.hardware.calibration import CalibrationError, Normalizer, load_calibration
from hilserl_ray.so101 import ARM, ARM_JOINTS, JOINT_NAMES, NUM_JOINTS

RANGE_LIMIT = 100.0  # LeRobot's range units lie in [-100, 100]
OUTSIDE_CALIBRATION_DEG = 5.0  # read as degrees, this far past the calibrated range is impossible


@dataclass(frozen=True)
class Decision:
    action_format: str
    action_reason: str
    joint_units: str
    units_reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def feature_names(feature: dict | None) -> list[str]:
    """A feature's flat name list (LeRobot writes a list, or {"motors": [...]}), or []."""
    names = (feature or {}).get("names")
    if isinstance(names, dict):
        names = [n for v in names.values() for n in (v if isinstance(v, list) else [v])]
    return [str(n) for n in names] if isinstance(names, list) else []


def value_ranges(root: Path, info: dict, keys: list[str], reader=None) -> dict[str, dict[str, np.ndarray]]:
    """{key: {min, max, mean}} per dimension, from meta/stats.json or else the parquet columns."""
    out: dict[str, dict[str, np.ndarray]] = {}
    path = Path(root) / "meta" / "stats.json"
    stats = {}
    if path.is_file():
        try:
            stats = json.loads(path.read_text())
        except json.JSONDecodeError:
            stats = {}
    missing = []
    for k in keys:
        s = stats.get(k) or {}
        if all(n in s for n in ("min", "max", "mean")):
            out[k] = {n: np.asarray(s[n], np.float64).reshape(-1) for n in ("min", "max", "mean")}
        else:
            missing.append(k)
    if missing:
        if reader is None:
            reader = LeRobotReader(root)
        cols = reader.read([k for k in missing if k in reader.features])
        for k, v in cols.items():
            v = v.reshape(len(v), -1).astype(np.float64)
            if len(v):
                out[k] = {"min": v.min(0), "max": v.max(0), "mean": v.mean(0)}
    return out


def decide(
    root: Path, info: dict, cfg: TrainConfig, state_key: str, action_key: str, reader=None
) -> tuple[Decision | None, list[Problem]]:
    """(the decision, []), or with problems naming the setting that resolves them: (None, ...) when
    the format is undecided, a decision with empty `joint_units` when only the units are."""
    features = info.get("features") or {}
    if state_key not in features or action_key not in features:
        return None, []  # the feature check reports missing keys
    spec = pipeline_spec(cfg)
    ranges = value_ranges(root, info, [state_key, action_key], reader)
    fmt, why, problems = _action_format(
        cfg, spec, features[action_key], ranges.get(action_key), ranges.get(state_key)
    )
    if problems:
        return None, problems
    units, uwhy, problems = _joint_units(cfg, fmt, ranges.get(state_key), ranges.get(action_key))
    return Decision(fmt, why, units, uwhy), problems  # units "" when undecided (see problems)


def _action_format(cfg, spec, feature, arange, srange) -> tuple[str, str, list[Problem]]:
    set_to = cfg.dataset.action_format
    if set_to != "auto":
        return set_to, "set by dataset.action_format", []
    names = feature_names(feature)
    shape = list(feature.get("shape") or [])
    n = int(shape[0]) if len(shape) == 1 else 0
    want = list(spec.action.names or [])
    if names and names == want:
        return "pipeline", f"the action names are the pipeline's {want}", []
    for (ee, discrete), other in action_modes(cfg).items():
        if names == other:  # the pipeline's own action, recorded in another action space
            fix = f"--pipeline.ee_action.enabled={str(ee).lower()} --pipeline.gripper.discrete={str(discrete).lower()}"
            return (
                "",
                "",
                [
                    Problem(
                        "dataset.action_format",
                        "auto",
                        f"the action {names} was recorded with {fix}; set them",
                    )
                ],
            )
    if n >= NUM_JOINTS and len(names) >= NUM_JOINTS and all(x.endswith(".pos") for x in names[:NUM_JOINTS]):
        return (
            "joint_targets",
            f"named {names[0]}, ..., {names[NUM_JOINTS - 1]}: absolute joint targets, as LeRobot teleop records",
            [],
        )
    if arange is not None and n == spec.action.shape[0]:
        c = spec.continuous_action_dim
        lo, hi = arange["min"], arange["max"]
        inside = bool((lo[:c] >= -1 - 1e-4).all() and (hi[:c] <= 1 + 1e-4).all())
        if spec.discrete_gripper:
            inside = inside and lo[c] >= 0 and hi[c] <= 2
        if inside:
            return "pipeline", f"{n} values inside the pipeline's action bounds", []
    if arange is not None and srange is not None and n >= NUM_JOINTS and len(srange["mean"]) >= NUM_JOINTS:
        a, s = arange["mean"][ARM], srange["mean"][ARM]
        if np.abs(a - s).sum() < np.abs(a).sum():
            return "joint_targets", "the action's means follow the state's (absolute joint targets)", []
        return "joint_deltas", "the action's means sit near zero, away from the state's (joint deltas)", []
    return (
        "",
        "",
        [
            Problem(
                "dataset.action_format",
                "auto",
                f"cannot tell the action's format (shape {shape}, names {names or None}); set "
                "--dataset.action_format=pipeline, joint_targets or joint_deltas",
            )
        ],
    )


def action_modes(cfg: TrainConfig) -> dict[tuple[bool, bool], list[str]]:
    """(ee_action.enabled, gripper.discrete) -> the pipeline's action names in that mode."""
    out = {}
    for ee in (True, False):
        for discrete in (True, False):
            p = cfg.pipeline.model_copy(
                update={
                    "ee_action": cfg.pipeline.ee_action.model_copy(update={"enabled": ee}),
                    "gripper": cfg.pipeline.gripper.model_copy(update={"discrete": discrete}),
                }
            )
            out[(ee, discrete)] = list(
                pipeline_spec(cfg.model_copy(update={"pipeline": p})).action.names or []
            )
    return out


def calibration_limits(cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray] | None:
    """The calibrated joint ranges in degrees; None without a usable calibration (the file check,
    `checks.files.check_calibrations`, names what is wrong with it)."""
    path = cfg.robot.calibration
    if path is None or not Path(path).is_file():
        return None
    try:
        return Normalizer(load_calibration(path, JOINT_NAMES), JOINT_NAMES).limits()
    except CalibrationError:
        return None


def _joint_units(cfg, fmt, srange, arange) -> tuple[str, str, list[Problem]]:
    set_to = cfg.dataset.joint_units
    if set_to != "auto":
        return set_to, "set by dataset.joint_units", []
    parts = [srange] + ([arange] if fmt == "joint_targets" and arange is not None else [])
    parts = [p for p in parts if p is not None and len(p["min"]) >= NUM_JOINTS]
    if not parts:
        return "degrees", "no joint values to judge; degrees", []
    lo = np.min([p["min"][ARM] for p in parts], axis=0)
    hi = np.max([p["max"][ARM] for p in parts], axis=0)
    peak = np.maximum(np.abs(lo), np.abs(hi))
    if (peak > RANGE_LIMIT + 1e-3).any():
        j = int(np.argmax(peak))
        return "degrees", f"{JOINT_NAMES[j]} reaches {peak[j]:.1f}, beyond LeRobot's +-100 range units", []
    if fmt == "pipeline":
        return "degrees", "pipeline-format actions are recorded in degrees (EE control needs them)", []
    limits = calibration_limits(cfg)
    if limits is not None:
        clo, chi = limits[0][ARM], limits[1][ARM]
        out = np.maximum(clo - lo, hi - chi)
        if (out > OUTSIDE_CALIBRATION_DEG).any():
            j = int(np.argmax(out))
            return (
                "lerobot_range",
                f"read as degrees, {JOINT_NAMES[j]} spans {lo[j]:.1f}..{hi[j]:.1f}, outside its calibrated "
                f"range {clo[j]:.1f}..{chi[j]:.1f} ({cfg.robot.calibration})",
                [],
            )
    at_clip = (np.abs(np.abs(lo) - RANGE_LIMIT) < 1e-3) | (np.abs(np.abs(hi) - RANGE_LIMIT) < 1e-3)
    if at_clip.any():
        j = int(np.argmax(at_clip))
        return (
            "lerobot_range",
            f"{JOINT_NAMES[j]} stops at exactly +-100 (LeRobot clips range units there)",
            [],
        )
    spans = ", ".join(f"{j} {a:.1f}..{b:.1f}" for j, a, b in zip(ARM_JOINTS, lo, hi, strict=True))
    why = (
        "with robot.calibration the ranges fit both"
        if limits is not None
        else "no robot.calibration to compare with"
    )
    return (
        "",
        "",
        [
            Problem(
                "dataset.joint_units",
                "auto",
                f"cannot tell degrees from LeRobot's -100..100 range units ({spans}; {why}); set "
                "--dataset.joint_units=degrees (recorded with use_degrees=True) or "
                "--dataset.joint_units=lerobot_range (LeRobot's default) with --robot.calibration=<the follower's JSON>",
            )
        ],
    )


def state_and_action_keys(cfg: TrainConfig) -> tuple[str, str]:
    return dataset_key(STATE, cfg), dataset_key(ACTION, cfg)
