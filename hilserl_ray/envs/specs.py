"""The pipeline's steps as pure functions `FeatureSpec -> FeatureSpec`, and the robot's own spec.

Each wrapper in `envs.wrappers` builds its spaces from its function here, and `envs.pipeline`
chains them in pipeline order (`pipeline_spec`). Pure and light: the sim, the real arm and the
dataset checks all read it.
"""

from __future__ import annotations

from dataclasses import replace

from hilserl_ray.config import TrainConfig
from hilserl_ray.features import ACTION, ENV_STATE, IMAGE_PREFIX, STATE, Feature, FeatureSpec
from hilserl_ray.gymenv.spaces import gym_robot_spec, is_gym
from hilserl_ray.so101 import ARM_JOINTS, JOINT_NAMES


def uses_environment_state(cfg: TrainConfig) -> bool:
    """Sim only: the privileged object position (reach target / cube), by default when state-only;
    a gym env: when its observation maps a key to it."""
    if is_gym(cfg):
        return ENV_STATE in gym_robot_spec(cfg).observation
    flag = cfg.env.environment_state
    return cfg.robot.type == "sim" and (flag if flag is not None else not cfg.env.cameras)


def robot_spec(cfg: TrainConfig) -> FeatureSpec:
    """What the robot (sim or real) itself reports: joint degrees and raw camera frames; a gym
    env: its mapped observation and native action, from its spaces."""
    if is_gym(cfg):
        return gym_robot_spec(cfg)
    obs = {
        STATE: Feature(STATE, (len(JOINT_NAMES),), "float32", "robot", tuple(f"{j}.pos" for j in JOINT_NAMES))
    }
    for cam in cfg.env.cameras:
        key = IMAGE_PREFIX + cam.name
        obs[key] = Feature(key, (cam.height, cam.width, 3), "uint8", "robot")
    if uses_environment_state(cfg):
        obs[ENV_STATE] = Feature(ENV_STATE, (3,), "float32", "robot", ("object.x", "object.y", "object.z"))
    action = Feature(ACTION, (len(JOINT_NAMES),), "float32", "robot", tuple(f"{j}.pos" for j in JOINT_NAMES))
    return FeatureSpec(obs, action, continuous_action_dim=len(JOINT_NAMES), discrete_gripper=False)


def crop_spec(spec: FeatureSpec, cfg: TrainConfig) -> FeatureSpec:
    obs = dict(spec.observation)
    for cam, (_top, _left, h, w) in cfg.pipeline.image.crop.items():
        key = IMAGE_PREFIX + cam
        obs[key] = replace(obs[key], shape=(h, w, 3), step="image_crop")
    return replace(spec, observation=obs)


def resize_spec(spec: FeatureSpec, cfg: TrainConfig) -> FeatureSpec:
    h, w = cfg.pipeline.image.size
    obs = {
        k: replace(f, shape=(h, w, 3), step="image_resize") if f.is_image else f
        for k, f in spec.observation.items()
    }
    return replace(spec, observation=obs)


def proprio_spec(spec: FeatureSpec, cfg: TrainConfig) -> FeatureSpec:
    p = cfg.pipeline.proprio
    names = list(spec.observation[STATE].names)
    if p.joint_velocity:
        names += [f"{j}.vel" for j in JOINT_NAMES]
    if p.ee_pose:
        names += ["ee.x", "ee.y", "ee.z", "ee.roll", "ee.pitch", "ee.yaw"]
    if len(names) == spec.state_dim:
        return spec
    obs = dict(spec.observation)
    obs[STATE] = Feature(STATE, (len(names),), "float32", "proprioception", tuple(names))
    return replace(spec, observation=obs)


def action_spec(spec: FeatureSpec, cfg: TrainConfig) -> FeatureSpec:
    """EE deltas (x, y, z) or arm-joint deltas, then the gripper: continuous, or a discrete index last."""
    if cfg.pipeline.ee_action.enabled:
        names, step = ["ee.dx", "ee.dy", "ee.dz"], "ee_action"
    else:
        names, step = [f"{j}.delta" for j in ARM_JOINTS], "joint_delta_action"
    continuous = len(names) + (0 if cfg.pipeline.gripper.discrete else 1)
    names.append("gripper.command" if cfg.pipeline.gripper.discrete else "gripper.delta")
    action = Feature(ACTION, (len(names),), "float32", step, tuple(names))
    return replace(
        spec, action=action, continuous_action_dim=continuous, discrete_gripper=cfg.pipeline.gripper.discrete
    )
