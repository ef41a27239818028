"""Which dataset column feeds which pipeline input, and what is missing (checked at start-up).

The pipeline needs the raw robot features: joint positions (>= 6 values, the first 6 are
the joints in degrees / gripper 0..100), each configured camera and the action in the
wrapped env's action space. `dataset.rename` maps dataset keys onto these names.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from hilserl_ray.config import CameraConfig, TrainConfig
from hilserl_ray.data import formats
from hilserl_ray.data.keys import dataset_key
from hilserl_ray.data.layout import DEFAULT_FEATURES
from hilserl_ray.data.lerobot_reader import image_hw
from hilserl_ray.envs.pipeline import ENV_STATE, pipeline_spec, uses_environment_state
from hilserl_ray.errors import Problem
from hilserl_ray.features import ACTION, IMAGE_PREFIX, STATE, FeatureSpec
from hilserl_ray.so101 import NUM_JOINTS

REWARD = "next.reward"
DONE = "next.done"
INTERVENTION = "complementary_info.is_intervention"
PENALTY = "complementary_info.discrete_penalty"
TRUNCATED = "complementary_info.truncated"
# per frame: success is visible in this frame's observation (sim ground truth, or the human's held key)
SUCCESS_LABEL = "complementary_info.success"
CAMERA_DTYPES = ("video", "image")


def required_inputs(cfg: TrainConfig) -> list[str]:
    """Pipeline inputs, by their pipeline names: state, one per camera, [environment state,] action."""
    env_state = [ENV_STATE] if uses_environment_state(cfg) else []
    return [STATE, *(IMAGE_PREFIX + c.name for c in cfg.env.cameras), *env_state, ACTION]


def closest(name: str, keys: list[str]) -> str | None:
    if not keys:
        return None
    hits = difflib.get_close_matches(name, keys, n=1, cutoff=0.0)
    return hits[0] if hits else None


def feature_problems(info: dict, cfg: TrainConfig, root: Path | None = None, reader=None) -> list[Problem]:
    """Every way the dataset (its meta/info.json) falls short of what the pipeline needs.

    With `root` (the dataset directory) the action format and joint units are decided too
    (`formats.decide`), and an undecidable one is a problem naming the setting.
    """
    features: dict[str, dict] = info.get("features") or {}
    problems = _rename_problems(features, cfg)
    decision = None
    if root is not None:
        decision, undecided = formats.decide(
            Path(root), info, cfg, dataset_key(STATE, cfg), dataset_key(ACTION, cfg), reader
        )
        problems += undecided
    fmt = decision.action_format if decision else cfg.dataset.action_format
    units = decision.joint_units if decision else cfg.dataset.joint_units
    spec = pipeline_spec(cfg)
    cams = {IMAGE_PREFIX + c.name: c for c in cfg.env.cameras}
    for name in required_inputs(cfg):
        key = dataset_key(name, cfg)
        f = features.get(key)
        if f is None:
            problems.append(_missing(name, key, features, name in cams))
        elif name == STATE:
            problems += _joint_vector(key, f, f"a float vector of >= {NUM_JOINTS} joint positions")
        elif name == ENV_STATE:
            problems += _env_state(key, f, spec)
        elif name == ACTION and fmt in ("joint_targets", "joint_deltas"):
            problems += _joint_vector(
                key, f, f"dataset.action_format {fmt!r}: a float vector of >= {NUM_JOINTS} joint values"
            )
        elif name == ACTION:
            problems += _pipeline_action(key, f, spec)
        else:
            problems += _camera(key, f, cams[name], cfg)
    return problems + _units(units, cfg) + _fps(info, cfg)


def _rename_problems(features: dict[str, dict], cfg: TrainConfig) -> list[Problem]:
    keys = _keys(features)
    return [
        Problem(
            f"dataset.rename.{src}",
            src,
            f"a key of the dataset (closest: {closest(src, keys)!r}); its keys are {keys}",
        )
        for src in cfg.dataset.rename
        if src not in features
    ]


def _keys(features: dict[str, dict]) -> list[str]:
    return sorted(k for k in features if k not in DEFAULT_FEATURES)


def _missing(name: str, key: str, features: dict[str, dict], camera: bool) -> Problem:
    keys = _keys(features)
    cameras = sorted(k for k, f in features.items() if f.get("dtype") in CAMERA_DTYPES)
    near = closest(key, cameras if camera else [k for k in keys if k not in cameras])
    hint = f"; map it with dataset.rename: {{{near!r}: {name!r}}}" if near else ""
    return Problem(
        "dataset.rename",
        key,
        f"the dataset has no feature {key!r} (closest: {near!r}); its keys are {keys}{hint}",
    )


def _described(f: dict) -> tuple[str, tuple, str]:
    """(dtype, shape, 'dtype [shape]') of a feature."""
    shape, dtype = tuple(f.get("shape") or ()), f.get("dtype")
    return dtype, shape, f"{dtype} {list(shape)}"


def _joint_vector(key: str, f: dict, need: str) -> list[Problem]:
    dtype, shape, seen = _described(f)
    if dtype not in ("float32", "float64") or len(shape) != 1 or shape[0] < NUM_JOINTS:
        return [Problem(f"dataset.features.{key}", seen, need)]
    return []


def _env_state(key: str, f: dict, spec: FeatureSpec) -> list[Problem]:
    _, shape, seen = _described(f)
    want = spec.observation[ENV_STATE].shape
    if shape != want:
        return [Problem(f"dataset.features.{key}", seen, f"a float vector of shape {list(want)}")]
    return []


def _pipeline_action(key: str, f: dict, spec: FeatureSpec) -> list[Problem]:
    _, shape, seen = _described(f)
    if len(shape) == 1 and shape[0] == spec.action.shape[0]:
        return []
    fit = {4: "--pipeline.ee_action.enabled=true", 6: "--pipeline.ee_action.enabled=false"}
    hint = f"; {fit[shape[0]]} gives {shape[0]} values" if len(shape) == 1 and shape[0] in fit else ""
    return [
        Problem(
            f"dataset.features.{key}",
            seen,
            f"the pipeline's action {list(spec.action.shape)} {list(spec.action.names or [])} "
            "(the dataset must be recorded in the same action space: pipeline.ee_action.enabled "
            "chooses 3 end-effector deltas or 5 joint deltas, pipeline.gripper.discrete a gripper "
            f"index 0/1/2 or a continuous value{hint}; or absolute joint targets: --dataset.action_format=joint_targets)",
        )
    ]


def _camera(key: str, f: dict, cam: CameraConfig, cfg: TrainConfig) -> list[Problem]:
    dtype = f.get("dtype")
    if dtype not in CAMERA_DTYPES:
        return [Problem(f"dataset.features.{key}", dtype, "a camera stored as 'video' or 'image'")]
    hw = image_hw(f)
    if hw is None or hw == (cam.height, cam.width):
        return []
    i = cfg.env.cameras.index(cam)
    return [
        Problem(
            f"env.cameras.{i}",
            f"{cam.name} {cam.height}x{cam.width}",
            f"the dataset's {key} is {hw[0]}x{hw[1]}; set --env.cameras.{i}.height={hw[0]} "
            f"--env.cameras.{i}.width={hw[1]} so crop and resize give the live env's images",
        )
    ]


def _units(units: str, cfg: TrainConfig) -> list[Problem]:
    calibration = cfg.robot.calibration
    if units != "lerobot_range" or (calibration is not None and Path(calibration).is_file()):
        return []
    return [
        Problem(
            "robot.calibration",
            str(calibration) if calibration else None,
            "the arm's LeRobot calibration JSON: dataset.joint_units 'lerobot_range' converts -100..100 to degrees with it",
        )
    ]


def _fps(info: dict, cfg: TrainConfig) -> list[Problem]:
    fps = info.get("fps")
    if fps is not None and abs(float(fps) - cfg.env.fps) > 1e-6:
        return [
            Problem(
                "env.fps", cfg.env.fps, f"the dataset's fps ({fps}): a transition must span one control step"
            )
        ]
    return []


def problem_lines(problems: list[Problem], root: Path | str | None = None) -> list[str]:
    """Problems as lines, plus where to look: `inspect` prints the overrides that make it fit."""
    lines = [Problem(*p).line() for p in problems]
    if problems and root is not None:
        lines.append(
            f"see python -m hilserl_ray.data.inspect {root} --config <your config> for the overrides that fit"
        )
    return lines
