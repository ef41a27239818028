"""The one list of pipeline steps, in pipeline order, and the spec it computes from the config.

Each `Step` holds what the step does to the features (a pure `FeatureSpec -> FeatureSpec`
function from `envs.specs`), to the live env (its wrapper, `envs.wrappers`) and to a recorded
dataset (its offline transform, `envs.offline`, or None). `pipeline_spec`, the env assembly
(`rig.make_env`) and the dataset conversion (`data.convert`) all walk `STEPS`, so what the env
emits, what the policy consumes, what the conversion produces and what the buffer cache is keyed
by cannot drift apart; a new step is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import gymnasium as gym

from hilserl_ray.config import TrainConfig
from hilserl_ray.envs import offline
from hilserl_ray.envs import wrappers as W
from hilserl_ray.envs.intervention import InterventionSource
from hilserl_ray.envs.kinematics import Kinematics
from hilserl_ray.envs.offline import Recorded
from hilserl_ray.envs.specs import (
    ARM_JOINTS,
    ENV_STATE,
    action_spec,
    crop_spec,
    proprio_spec,
    resize_spec,
    robot_spec,
    uses_environment_state,
)
from hilserl_ray.features import FeatureSpec
from hilserl_ray.gymenv.actions import GymAction, gym_action_spec
from hilserl_ray.gymenv.spaces import is_gym

__all__ = [
    "ARM_JOINTS",
    "ENV_STATE",
    "STEPS",
    "Parts",
    "Step",
    "pipeline_params",
    "pipeline_spec",
    "robot_spec",
    "steps",
    "uses_environment_state",
]


@dataclass(frozen=True)
class Parts:
    """What the online steps take from the assembly above envs/ (`rig.make_env`): the arm's
    kinematics (None for a gym env), the intervention source (None: the policy alone), and the
    reward-classifier step (built only when `pipeline.reward.classifier` is set: it loads torch
    and checks the model)."""

    kin: Kinematics | None
    intervention: InterventionSource | None
    classifier_reward: Callable[[gym.Env], gym.Env]


def _unchanged(spec: FeatureSpec, cfg: TrainConfig) -> FeatureSpec:
    return spec


def _no_params(cfg: TrainConfig) -> dict:
    return {}


def _always(cfg: TrainConfig) -> bool:
    return True


def _so101(cfg: TrainConfig) -> bool:
    """The SO-101's own steps (FK proprioception); a gym env's state is what it reports."""
    return not is_gym(cfg)


@dataclass(frozen=True)
class Step:
    """One pipeline step. spec: its features from the previous step's; online: the env wrapped
    in it; offline: a recorded dataset passed through it (None: nothing to do offline); params:
    the config values that change its output's *values* (they key the offline cache); applies:
    whether the step is in this config's pipeline at all (spec, online, offline and params)."""

    name: str
    online: Callable[[gym.Env, TrainConfig, Parts], gym.Env]
    spec: Callable[[FeatureSpec, TrainConfig], FeatureSpec] = _unchanged
    offline: Callable[[Recorded, TrainConfig], Recorded] | None = None
    params: Callable[[TrainConfig], dict] = _no_params
    applies: Callable[[TrainConfig], bool] = _always


def _image_params(cfg: TrainConfig) -> dict:
    return {"image": cfg.pipeline.image.model_dump(mode="json")}


def _mjcf(cfg: TrainConfig) -> str:
    return str(cfg.robot.mjcf) if cfg.robot.mjcf else "builtin"


def _action_online(env: gym.Env, cfg: TrainConfig, parts: Parts) -> gym.Env:
    return GymAction(env, cfg) if is_gym(cfg) else W.EEAction(env, cfg, parts.kin)


def _action_spec(spec: FeatureSpec, cfg: TrainConfig) -> FeatureSpec:
    return gym_action_spec(spec, cfg) if is_gym(cfg) else action_spec(spec, cfg)


def _action_params(cfg: TrainConfig) -> dict:
    if is_gym(cfg):
        return {"gym": cfg.env.gym.model_dump(mode="json")}
    return {"ee_action": cfg.pipeline.ee_action.model_dump(mode="json"), "mjcf": _mjcf(cfg)}


STEPS: list[Step] = [
    Step(
        "image_crop",
        online=lambda env, cfg, parts: W.ImageCrop(env, cfg),
        spec=crop_spec,
        offline=offline.crop,
        params=_image_params,
    ),
    Step(
        "image_resize",
        online=lambda env, cfg, parts: W.ImageResize(env, cfg),
        spec=resize_spec,
        offline=offline.resize,
        params=_image_params,
    ),
    Step(
        "proprioception",
        online=lambda env, cfg, parts: W.Proprioception(env, cfg, parts.kin),
        spec=proprio_spec,
        offline=offline.proprioception,
        params=lambda cfg: {
            "fps": cfg.env.fps,
            "proprio": cfg.pipeline.proprio.model_dump(mode="json"),
            "mjcf": _mjcf(cfg),
        },
        applies=_so101,
    ),
    Step(
        "action",  # EE deltas (or arm-joint deltas) + gripper -> joint targets; a gym env's: gymenv.actions
        online=_action_online,
        spec=_action_spec,
        offline=offline.action,
        params=_action_params,
    ),
    Step("intervention", online=lambda env, cfg, parts: W.Intervention(env, parts.intervention)),
    Step(
        "reward_classifier",
        online=lambda env, cfg, parts: (
            env if cfg.pipeline.reward.classifier is None else parts.classifier_reward(env)
        ),
    ),
    Step("gripper_penalty", online=lambda env, cfg, parts: W.GripperPenalty(env, cfg)),
    Step("time_limit", online=lambda env, cfg, parts: gym.wrappers.TimeLimit(env, cfg.env.max_episode_steps)),
]


def steps(cfg: TrainConfig) -> list[Step]:
    """The steps of this config's pipeline, in order."""
    return [step for step in STEPS if step.applies(cfg)]


def pipeline_params(cfg: TrainConfig) -> dict:
    """Every step's value-shaping config (`FeatureSpec.params`)."""
    params: dict = {}
    for step in steps(cfg):
        params.update(step.params(cfg))
    return params


def pipeline_spec(cfg: TrainConfig) -> FeatureSpec:
    """The features the wrapped env emits and consumes, in pipeline order."""
    spec = robot_spec(cfg)
    for step in steps(cfg):
        spec = step.spec(spec, cfg)
    return replace(spec, params=pipeline_params(cfg))
