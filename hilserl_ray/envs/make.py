"""`make_env(cfg)`: the robot (sim or real) wrapped in the one pipeline, in pipeline order."""

from __future__ import annotations

import gymnasium as gym

from hilserl_ray.config import TrainConfig
from hilserl_ray.envs import wrappers as W
from hilserl_ray.envs.intervention import InterventionSource
from hilserl_ray.envs.kinematics import Kinematics
from hilserl_ray.envs.pipeline import pipeline_spec


def make_base_env(cfg: TrainConfig) -> gym.Env:
    """The raw robot: the MuJoCo sim, or the real SO-101 (hardware package, imported lazily)."""
    if cfg.robot.type == "sim":
        from hilserl_ray.envs.sim import SO101SimEnv

        return SO101SimEnv(cfg)
    if cfg.robot.type == "so101":
        from hilserl_ray.hardware.robot_env import make_real_env

        return make_real_env(cfg)
    raise ValueError(f"robot.type: expected 'sim' or 'so101', got {cfg.robot.type!r}")


def make_intervention(cfg: TrainConfig, seed: int | None) -> InterventionSource | None:
    """The source named by `pipeline.intervention.source` (None for 'none' and 'web': the console
    adds its own `web` source over this one, see `console.session`)."""
    source = cfg.pipeline.intervention.source
    if source in ("none", "web"):
        return None
    if source == "oracle":
        from hilserl_ray.envs.oracle import OracleSource

        return OracleSource(cfg, seed=None if seed is None else seed + 7919)
    from hilserl_ray.hardware.teleop import make_teleop_source

    return make_teleop_source(cfg)


def make_classifier_reward(env: gym.Env, cfg: TrainConfig) -> gym.Env:
    """The reward-classifier step, after refusing a classifier trained for another pipeline."""
    from hilserl_ray.configio import ConfigError
    from hilserl_ray.reward.model import Scorer
    from hilserl_ray.reward.spec import check_classifier

    problems = check_classifier(cfg)
    if problems:
        raise ConfigError("pipeline.reward", [f"{p}: got {v!r}; {m}" for p, v, m in problems])
    scorer = Scorer(cfg.pipeline.reward.classifier)
    threshold = cfg.pipeline.reward.threshold or scorer.threshold
    return W.ClassifierReward(env, cfg, scorer, threshold)


def make_env(
    cfg: TrainConfig, seed: int | None = None, intervention: InterventionSource | None = None
) -> gym.Env:
    """Base env -> crop -> resize -> proprioception -> EE action -> intervention -> [reward
    classifier] -> gripper penalty -> time limit. The result's spaces equal `pipeline_spec(cfg)`
    (checked here).

    seed seeds the first reset (later resets continue the env's random stream) and the oracle.
    intervention: a source to use; None builds the one `pipeline.intervention.source` names.
    """
    env = make_base_env(cfg)
    try:
        kin = env.unwrapped.kin if cfg.robot.type == "sim" else Kinematics(cfg.robot.mjcf)
        if intervention is None:
            intervention = make_intervention(cfg, seed)
        env = W.ImageCrop(env, cfg)
        env = W.ImageResize(env, cfg)
        env = W.Proprioception(env, cfg, kin)
        env = W.EEAction(env, cfg, kin)
        env = W.Intervention(env, intervention)
        if cfg.pipeline.reward.classifier is not None:
            env = make_classifier_reward(env, cfg)
        env = W.GripperPenalty(env, cfg)
        env = gym.wrappers.TimeLimit(env, cfg.env.max_episode_steps)
    except BaseException:
        env.close()
        raise
    spec = pipeline_spec(cfg)
    built = W.final_spec(env, cfg)
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
