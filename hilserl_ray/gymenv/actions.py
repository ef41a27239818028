"""The policy's action <-> a gym env's native Box action (the gym env's stand-in for the EE/IK step).

The policy acts as for the SO-101: continuous dims in [-1, 1], then the pipeline's gripper
(`pipeline.gripper.discrete`: 0 close / 1 stay / 2 open, else a continuous rate, + opens).
Continuous dims are scaled linearly onto the env's bounds; the gripper is mapped onto what the
env's last dim is (`env.gym.gripper`): an absolute target (held between commands), a rate, or
close/stay/open at its low/middle/high value. `to_native` is the online direction; `to_policy`
turns an expert's native action into the policy's (interventions, demos) without moving.
"""

from __future__ import annotations

from dataclasses import replace

import gymnasium as gym
import numpy as np

from hilserl_ray.config import TrainConfig
from hilserl_ray.features import ACTION, Feature, FeatureSpec
from hilserl_ray.gymenv.spaces import gripper_dims

CLOSE, STAY, OPEN = 0, 1, 2


def gym_action_spec(spec: FeatureSpec, cfg: TrainConfig) -> FeatureSpec:
    """The policy's action for a gym env: its continuous dims, then the pipeline's gripper if it has one."""
    g = cfg.env.gym
    n = spec.action.shape[0] - gripper_dims(g)
    names = list(g.action_names or [f"action.{i}" for i in range(n)])
    discrete = g.gripper != "none" and cfg.pipeline.gripper.discrete
    if g.gripper != "none":
        names.append("gripper.command" if discrete else "gripper.delta")
    action = Feature(ACTION, (len(names),), "float32", "gym_action", tuple(names))
    return replace(
        spec,
        action=action,
        continuous_action_dim=n + (0 if discrete else gripper_dims(g)),
        discrete_gripper=discrete,
    )


class ActionMap:
    """Both directions between the policy's action and the env's; holds an absolute gripper's target."""

    def __init__(self, cfg: TrainConfig, native: gym.spaces.Box):
        g = cfg.env.gym
        self.kind, self.step = g.gripper, g.gripper_step
        self.discrete = g.gripper != "none" and cfg.pipeline.gripper.discrete
        self.n = native.shape[0] - gripper_dims(g)
        self.low, self.high = native.low.astype(np.float64), native.high.astype(np.float64)
        if self.kind != "none":
            lo, hi = float(self.low[-1]), float(self.high[-1])
            self.closed, self.open = (lo, hi) if g.gripper_open == "high" else (hi, lo)
        self.reset()

    def reset(self) -> None:
        """A new episode: an absolute gripper's target starts open."""
        self.target = self.open if self.kind != "none" else 0.0

    def to_native(self, action: np.ndarray) -> np.ndarray:
        a = np.asarray(action, np.float64).reshape(-1)
        lo, hi = self.low[: self.n], self.high[: self.n]
        out = lo + (np.clip(a[: self.n], -1.0, 1.0) + 1.0) / 2.0 * (hi - lo)
        if self.kind == "none":
            return out.astype(np.float32)
        return np.append(out, self._gripper_native(float(a[self.n]))).astype(np.float32)

    def to_policy(self, native: np.ndarray) -> np.ndarray:
        x = np.asarray(native, np.float64).reshape(-1)
        lo, hi = self.low[: self.n], self.high[: self.n]
        out = np.clip(2.0 * (x[: self.n] - lo) / np.maximum(hi - lo, 1e-12) - 1.0, -1.0, 1.0)
        if self.kind == "none":
            return out.astype(np.float32)
        return np.append(out, self._gripper_policy(float(x[self.n]))).astype(np.float32)

    # ------------------------------------------------------------------------- the gripper
    def _opening(self, value: float) -> float:
        """A native gripper value as -1 (closed end) .. +1 (open end)."""
        return 2.0 * (value - self.closed) / (self.open - self.closed) - 1.0

    def _from_opening(self, u: float) -> float:
        return self.closed + (np.clip(u, -1.0, 1.0) + 1.0) / 2.0 * (self.open - self.closed)

    def _gripper_native(self, g: float) -> float:
        if self.discrete:
            cmd = int(np.clip(np.rint(g), CLOSE, OPEN))
            u = {CLOSE: -1.0, STAY: 0.0, OPEN: 1.0}[cmd]
            if self.kind == "absolute":
                self.target = self.target if cmd == STAY else self._from_opening(u)
                return self.target
        else:
            u = float(np.clip(g, -1.0, 1.0))
            if self.kind == "absolute":
                self.target = self._from_opening(self._opening(self.target) + 2.0 * self.step * u)
                return self.target
            if self.kind == "discrete":
                u = -1.0 if u < -0.5 else 1.0 if u > 0.5 else 0.0
        return self._from_opening(u)

    def _gripper_policy(self, value: float) -> float:
        if self.kind == "absolute":
            u = (self._opening(value) - self._opening(self.target)) / (2.0 * self.step)
            if abs(value - self.target) < 1e-6 * max(abs(self.open - self.closed), 1e-12):
                u = 0.0
        else:
            u = self._opening(value)
        if not self.discrete:
            return float(np.clip(u, -1.0, 1.0))
        if self.kind == "absolute" and u != 0.0:
            return float(OPEN if self._opening(value) > 0 else CLOSE)
        return float(CLOSE if u < -0.5 else OPEN if u > 0.5 else STAY)


class GymAction(gym.Wrapper):
    """The policy's action -> the gym env's native one (`ActionMap`, owned by the base env)."""

    def __init__(self, env: gym.Env, cfg: TrainConfig):
        super().__init__(env)
        self.feature_spec = gym_action_spec(env.get_wrapper_attr("feature_spec"), cfg)
        n = self.feature_spec.action.shape[0]
        low, high = -np.ones(n, np.float32), np.ones(n, np.float32)
        if self.feature_spec.discrete_gripper:
            low[-1], high[-1] = CLOSE, OPEN
        self.action_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.map: ActionMap = env.unwrapped.action_map

    def step(self, action):
        a = np.asarray(action, np.float32).reshape(-1)
        if a.shape != self.action_space.shape:
            raise ValueError(
                f"action: expected shape {self.action_space.shape} {self.feature_spec.action.names}, got {a.shape}"
            )
        return self.env.step(self.map.to_native(a))
