"""A gymnasium env whose `step` hangs while a file exists: a robot whose env stops stepping (a
driver blocked in a read) without an error, for the run's `actors.no_step_timeout_s`.

`env.gym.id=stalling_env/Stall-v0` imports this module (the id's namespace) in the driver and the
robot actor, which registers the id; the tests' directory must be on their PYTHONPATH."""

from __future__ import annotations

import os
import time

import gymnasium as gym
import numpy as np

ID = "stalling_env/Stall-v0"


class StallingEnv(gym.Env):
    """Move a point towards the origin; `step` waits while `stall_file` exists."""

    def __init__(self, stall_file: str):
        self.stall_file = stall_file
        self.observation_space = gym.spaces.Dict({"state": gym.spaces.Box(-2.0, 2.0, (3,), np.float32)})
        self.action_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self._x = np.zeros(3, np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._x = self.np_random.uniform(-1.0, 1.0, 3).astype(np.float32)
        return {"state": self._x.copy()}, {}

    def step(self, action):
        while os.path.exists(self.stall_file):
            time.sleep(0.05)
        self._x = np.clip(self._x + 0.1 * np.asarray(action, np.float32), -2.0, 2.0)
        return {"state": self._x.copy()}, -float(np.linalg.norm(self._x)), False, False, {}


if ID not in gym.registry:
    gym.register(ID, entry_point=StallingEnv)
