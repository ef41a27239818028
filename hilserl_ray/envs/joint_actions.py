"""Joint targets -> the pipeline's action: one function for the leader arm live and for datasets.

A leader arm (live, or as LeRobot records teleop in `action`) commands absolute joint targets.
The pipeline acts in (dx, dy, dz) end-effector steps or per-step joint deltas, plus a gripper
command. Converting both through `joint_targets_to_action` means an intervention recorded on
the real arm and the same motion in a dataset give the same action, to the bit.

  EE mode:    (FK(target) - FK(present)) / pipeline.ee_action.step_size_m, clipped to [-1, 1]
  joint mode: (target - present)[:5] / robot.max_relative_target_deg, clipped to [-1, 1]
  gripper:    discrete: |target - present| <= pipeline.gripper.command_threshold -> stay (1),
              else open (2) if the target is more open, close (0) if less;
              continuous: (target - present) / pipeline.gripper.step_deg, clipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hilserl_ray.so101 import ARM, CLOSE, GRIPPER, NUM_JOINTS, OPEN, STAY


@dataclass(frozen=True)
class JointActionParams:
    ee: bool
    step_size_m: float
    max_relative_target_deg: float
    discrete_gripper: bool
    gripper_step: float
    gripper_threshold: float

    @classmethod
    def from_config(cls, cfg) -> JointActionParams:
        p = cfg.pipeline
        return cls(
            ee=p.ee_action.enabled,
            step_size_m=p.ee_action.step_size_m,
            max_relative_target_deg=cfg.robot.max_relative_target_deg,
            discrete_gripper=p.gripper.discrete,
            gripper_step=p.gripper.step_deg,
            gripper_threshold=p.gripper.command_threshold,
        )


def joint_targets_to_action(
    target: np.ndarray, present: np.ndarray, kin, params: JointActionParams
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 6) targets and present joints (state units: degrees, gripper 0..100) -> (N, A) float32
    actions in the pipeline's format, and (N,) bool: whether any continuous value was clipped."""
    target = np.asarray(target, np.float64).reshape(-1, NUM_JOINTS)
    present = np.asarray(present, np.float64).reshape(-1, NUM_JOINTS)
    if params.ee:
        arm = (kin.fk(target)[0] - kin.fk(present)[0]) / params.step_size_m
    else:
        arm = (target[:, ARM] - present[:, ARM]) / params.max_relative_target_deg
    dg = target[:, GRIPPER] - present[:, GRIPPER]
    if params.discrete_gripper:
        cont = arm
        grip = np.where(np.abs(dg) <= params.gripper_threshold, STAY, np.where(dg > 0, OPEN, CLOSE))
    else:
        cont = np.concatenate([arm, (dg / params.gripper_step)[:, None]], axis=1)
        grip = None
    clipped = (np.abs(cont) > 1.0).any(axis=1)
    cont = np.clip(cont, -1.0, 1.0)
    action = cont if grip is None else np.concatenate([cont, grip[:, None]], axis=1)
    return action.astype(np.float32), clipped
