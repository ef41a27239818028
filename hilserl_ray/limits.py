"""What an arm may do in one control step, the same for the sim and the real SO-101.

`SafetyLimits.clamp` turns any requested joint target into one the arm may go to this step:
finite, inside the joint ranges, at most `robot.max_relative_target_deg` from where the arm is
(every joint, the gripper's 0..100 too; the arm's joints scaled together, so a move keeps its
direction), and with the end effector (by FK) inside the workspace
box. The real follower (`hardware.follower`) clamps every write with it, and the sim
(`envs.sim`) every step, so the same action does the same thing in both: a policy or an expert
that works in the sim meets the same per-step limits on the arm. `arm_limits(cfg, ...)` builds
it from the config, the one place its keys are read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from hilserl_ray.so101 import GRIPPER, JOINT_NAMES

log = logging.getLogger(__name__)


class SafetyLimits:
    """Joint-space clamps plus an optional Cartesian box checked by forward kinematics.

    `fk(joints_user_units) -> xyz` of the end effector; the box is [ws_low, ws_high] in metres.
    A target whose FK leaves the box is pulled back along the straight joint-space line towards
    the present pose (bisection); if the arm is already outside, only moves that do not take it
    further out are allowed, so it can always be driven back in.
    """

    def __init__(
        self,
        low: np.ndarray,
        high: np.ndarray,
        max_step: float | np.ndarray,
        *,
        fk: Callable[[np.ndarray], np.ndarray] | None = None,
        ws_low: np.ndarray | None = None,
        ws_high: np.ndarray | None = None,
        names: tuple[str, ...] | None = None,
    ):
        self.low = np.asarray(low, dtype=np.float64)
        self.high = np.asarray(high, dtype=np.float64)
        self.max_step = np.broadcast_to(np.asarray(max_step, dtype=np.float64), self.low.shape)
        self.fk = fk
        self.ws_low = None if ws_low is None else np.asarray(ws_low, dtype=np.float64)
        self.ws_high = None if ws_high is None else np.asarray(ws_high, dtype=np.float64)
        self.names = names or tuple(f"joint{i}" for i in range(len(self.low)))
        self.chain = np.array([n != JOINT_NAMES[GRIPPER] for n in self.names])  # the joints that move the EE
        self.last: dict[str, object] = {}  # what the latest clamp changed, for logs and tests

    def outside(self, joints: np.ndarray) -> float:
        """Distance (m) of the end effector outside the workspace box; 0 inside or without FK."""
        if self.fk is None or self.ws_low is None or self.ws_high is None:
            return 0.0
        p = np.asarray(self.fk(joints), dtype=np.float64)
        return float(np.linalg.norm(np.maximum(self.ws_low - p, 0) + np.maximum(p - self.ws_high, 0)))

    def step_towards(self, present: np.ndarray, target: np.ndarray) -> np.ndarray:
        """At most `max_step` of the way from `present` to `target` on every joint. The arm's
        joints share one scale, so the move keeps its direction (an IK step stays on its path:
        clipped one joint at a time, a level move near the table dipped the EE out of the box,
        which then held the arm there for good); the gripper is limited on its own."""
        delta = target - present
        over = np.abs(delta) / self.max_step
        if self.chain.any():
            delta[self.chain] /= max(1.0, float(over[self.chain].max()))
        alone = ~self.chain
        delta[alone] = np.clip(delta[alone], -self.max_step[alone], self.max_step[alone])
        return present + delta

    def clamp(self, target, present, *, workspace: bool = True) -> np.ndarray:
        """The target the arm may go to this step (`workspace=False`: joint clamps only)."""
        target = np.asarray(target, dtype=np.float64)
        present = np.asarray(present, dtype=np.float64)
        if target.shape != self.low.shape:
            raise ValueError(
                f"joint target: expected shape {self.low.shape} ({self.names}), got {target.shape}"
            )
        bad = [n for n, v in zip(self.names, target, strict=True) if not np.isfinite(v)]
        if bad:
            raise ValueError(f"joint target is not finite for {bad}: {target.tolist()}; refusing to move")
        self.last = {}
        out = np.clip(target, self.low, self.high)
        if np.any(out != target):
            self.last["joint_limits"] = [n for n, a, b in zip(self.names, out, target, strict=True) if a != b]
        stepped = self.step_towards(present, out)
        if np.any(stepped != out):
            self.last["max_step"] = [n for n, a, b in zip(self.names, stepped, out, strict=True) if a != b]
        out = stepped
        err = self.outside(out) if workspace else 0.0
        if err > 0:
            now = self.outside(present)
            if now > 0:
                if err > now:  # already outside: never further out
                    out = present.copy()
                    self.last["workspace"] = "held: the move would leave the workspace further"
            else:
                lo, hi = 0.0, 1.0  # fraction of the move that stays inside
                for _ in range(12):
                    mid = (lo + hi) / 2
                    if self.outside(present + mid * (out - present)) > 0:
                        hi = mid
                    else:
                        lo = mid
                out = present + lo * (out - present)
                self.last["workspace"] = f"shortened to {lo:.3f} of the move"
        if self.last:
            log.debug("safety clamp: %s", self.last)
        return out


def workspace_box(cfg) -> tuple[np.ndarray, np.ndarray]:
    """The end effector's safety box (metres): `robot.workspace_*`, default `pipeline.ee_action`'s."""
    low = cfg.robot.workspace_low or cfg.pipeline.ee_action.workspace_low
    high = cfg.robot.workspace_high or cfg.pipeline.ee_action.workspace_high
    return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)


def arm_limits(cfg, low, high, fk: Callable[[np.ndarray], np.ndarray] | None, names=None) -> SafetyLimits:
    """The configured limits for an arm whose joint ranges are [low, high] (state units)."""
    ws_low, ws_high = workspace_box(cfg)
    return SafetyLimits(
        low, high, cfg.robot.max_relative_target_deg, fk=fk, ws_low=ws_low, ws_high=ws_high, names=names
    )
