"""Each pipeline step's offline transform: what the step does to a whole recorded dataset.

The conversion (`data.convert`) reads a dataset into a `Recorded` (what the raw robot reported,
frame by frame), passes it through the steps' offline transforms in pipeline order, and writes
the result. The transforms call the same functions as the online wrappers (`envs.transforms`,
`envs.joint_actions`), so converted demos look like what the env gives the policy. Images stay
a decoding plan (crop box, size) that the reader applies while decoding each video once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hilserl_ray.config import TrainConfig
from hilserl_ray.envs.joint_actions import JointActionParams, joint_targets_to_action
from hilserl_ray.envs.kinematics import Kinematics
from hilserl_ray.envs.transforms import proprio_state
from hilserl_ray.features import IMAGE_PREFIX, STATE


@dataclass
class ImagePlan:
    """How a camera's frames are decoded: crop (top, left, height, width), then resize to size."""

    crop: tuple[int, int, int, int] | None = None
    size: tuple[int, int] | None = None


@dataclass
class Recorded:
    """A recorded dataset on its way through the pipeline, one row per frame.

    obs: the non-image observations (STATE starts as `joints`); images: one plan per camera key;
    action: joint targets in degrees (6) until the action step converts them, unless
    `action_in_pipeline` (recorded in the wrapped env's action space); clipped: frames whose
    converted action was clipped to [-1, 1].
    """

    joints: np.ndarray  # (frames, 6) measured joint positions, state units (degrees, gripper 0..100)
    episodes: list[slice]  # each episode's frames
    obs: dict[str, np.ndarray]
    images: dict[str, ImagePlan]
    action: np.ndarray
    action_in_pipeline: bool
    kin: Kinematics
    clipped: np.ndarray


def crop(rec: Recorded, cfg: TrainConfig) -> Recorded:
    for cam, box in cfg.pipeline.image.crop.items():
        rec.images[IMAGE_PREFIX + cam].crop = tuple(box)
    return rec


def resize(rec: Recorded, cfg: TrainConfig) -> Recorded:
    for plan in rec.images.values():
        plan.size = tuple(cfg.pipeline.image.size)
    return rec


def proprioception(rec: Recorded, cfg: TrainConfig) -> Recorded:
    """Velocities at the env's control dt and the FK ee pose, episode by episode."""
    q = rec.obs[STATE][:, :6]
    state = None
    for s in rec.episodes:
        values = proprio_state(q[s], rec.kin, 1.0 / cfg.env.fps, cfg.pipeline.proprio)
        if state is None:
            state = np.zeros((len(q), values.shape[1]), np.float32)
        state[s] = values
    rec.obs[STATE] = state
    return rec


def action(rec: Recorded, cfg: TrainConfig) -> Recorded:
    """Joint targets -> the pipeline's action, as the live leader arm's are converted."""
    if not rec.action_in_pipeline:
        params = JointActionParams.from_config(cfg)
        rec.action, rec.clipped = joint_targets_to_action(rec.action, rec.joints, rec.kin, params)
        rec.action_in_pipeline = True
    return rec
