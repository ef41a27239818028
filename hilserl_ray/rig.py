"""`make_env(cfg)`: the robot (sim or real) with its intervention source and reward classifier,
wrapped in the pipeline's steps (`envs.pipeline.STEPS`) in order.

It sits above the parts it assembles (`envs`, `hardware`, `reward`), so none of them reaches up.
`make_registered` is the entry point of the gymnasium ids that `import hilserl_ray` registers.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import gymnasium as gym

from hilserl_ray.checks.config import require_valid
from hilserl_ray.config import TrainConfig
from hilserl_ray.configio import ConfigError
from hilserl_ray.envs import pipeline
from hilserl_ray.envs import wrappers as W
from hilserl_ray.envs.intervention import InterventionSource
from hilserl_ray.envs.kinematics import Kinematics
from hilserl_ray.envs.oracle import OracleSource
from hilserl_ray.envs.sim import SO101SimEnv
from hilserl_ray.features import FeatureSpec
from hilserl_ray.gymenv.adapter import GymRobotEnv
from hilserl_ray.gymenv.oracle import GymExpertSource
from hilserl_ray.gymenv.spaces import is_gym
from hilserl_ray.reward.spec import check_classifier


def make_base_env(cfg: TrainConfig) -> gym.Env:
    """The raw robot: the MuJoCo sim, the real SO-101, or a registered gymnasium env (env.type gym)."""
    if is_gym(cfg):
        return GymRobotEnv(cfg)
    if cfg.robot.type == "sim":
        return SO101SimEnv(cfg)
    if cfg.robot.type == "so101":
        # serial and camera code: loaded for the real arm only
        from hilserl_ray.hardware.robot_env import make_real_env

        return make_real_env(cfg)
    raise ValueError(f"robot.type: expected 'sim' or 'so101', got {cfg.robot.type!r}")


def make_intervention(
    cfg: TrainConfig, seed: int | None, demonstrating: bool = False
) -> InterventionSource | None:
    """The source named by `pipeline.intervention.source` (None for 'none' and 'web': the console
    adds its own `web` source over this one, see `console.session`). demonstrating: a leader arm
    drives from each episode's first step (`record`'s demonstrations)."""
    source = cfg.pipeline.intervention.source
    if source in ("none", "web"):
        return None
    if source == "oracle":
        oracle = GymExpertSource if is_gym(cfg) else OracleSource
        return oracle(cfg, seed=None if seed is None else seed + 7919)
    # keyboard, gamepad and leader-arm code (optional pynput/pygame, serial): loaded on demand
    from hilserl_ray.hardware.teleop import make_teleop_source

    return make_teleop_source(cfg, demonstrating)


def make_classifier_reward(env: gym.Env, cfg: TrainConfig) -> gym.Env:
    """The reward-classifier step, after refusing a classifier trained for another pipeline."""
    problems = check_classifier(cfg)
    if problems:
        raise ConfigError.of("pipeline.reward", problems)
    from hilserl_ray.reward.model import Scorer  # torch: loaded only when a classifier is set

    scorer = Scorer(cfg.pipeline.reward.classifier)
    threshold = cfg.pipeline.reward.threshold or scorer.threshold
    return W.ClassifierReward(env, cfg, scorer, threshold)


def built_spec(env: gym.Env, cfg: TrainConfig) -> FeatureSpec:
    """The wrapped env's spec, with the params of `pipeline_spec` (checked equal in make_env)."""
    return replace(env.get_wrapper_attr("feature_spec"), params=pipeline.pipeline_params(cfg))


def make_env(
    cfg: TrainConfig, seed: int | None = None, intervention: InterventionSource | None = None
) -> gym.Env:
    """The base env wrapped in every step of `envs.pipeline.STEPS` that applies to it. The result's spaces equal
    `pipeline_spec(cfg)` (checked here).

    seed seeds the first reset (later resets continue the env's random stream) and the oracle.
    intervention: a source to use; None builds the one `pipeline.intervention.source` names.
    """
    env = make_base_env(cfg)
    try:
        kin = (
            None
            if is_gym(cfg)
            else env.unwrapped.kin
            if cfg.robot.type == "sim"
            else Kinematics(cfg.robot.mjcf)
        )
        if intervention is None:
            intervention = make_intervention(cfg, seed)
        parts = pipeline.Parts(kin, intervention, partial(make_classifier_reward, cfg=cfg))
        for step in pipeline.steps(cfg):
            env = step.online(env, cfg, parts)
    except BaseException:
        env.close()
        raise
    spec = pipeline.pipeline_spec(cfg)
    built = built_spec(env, cfg)
    if built.to_dict() != spec.to_dict():
        env.close()
        raise RuntimeError(
            f"wrapper pipeline and pipeline_spec disagree:\n{built.table()}\nvs\n{spec.table()}"
        )
    env.feature_spec = spec
    if seed is not None:
        env.unwrapped._np_random, _ = gym.utils.seeding.np_random(seed)
        env.action_space.seed(seed)
    return env


def make_registered(
    task: str,
    cameras: list[str] | tuple[str, ...] = (),
    camera_size: tuple[int, int] = (128, 128),
    seed: int | None = None,
    overrides: dict | None = None,
    render_mode: str | None = None,
):
    """Entry point of the registered ids: a default TrainConfig for `task`, plus `overrides`
    (state-only; pass `cameras=["front"]` etc. for image variants, or use the *Image ids)."""
    data = {
        "env": {
            "task": task,
            "cameras": [{"name": c, "height": camera_size[0], "width": camera_size[1]} for c in cameras],
        },
        "buffer": {"online_ratio": 1.0},
    }
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values) if isinstance(values, dict) else data.update(
            {section: values}
        )
    return make_env(require_valid(TrainConfig.model_validate(data), "overrides"), seed=seed)
