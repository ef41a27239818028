"""The callable `env.gym.expert` names, acting in the policy's action space.

It is `module:function` (the env's native observation -> its native action) or `module:Class`
(built once with the env's unwrapped instance, called per step with the native observation,
`reset()` per episode and `score()` for the oracle's stuck rule if it has them); see
`gymenv.lerobot_experts` for lerobot_env_so101's controllers.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import numpy as np


def load_named(name: str):
    """The object `module:attr` names (an expert, a wrapper); ValueError saying why when it does not resolve."""
    module, _, attr = name.partition(":")
    if not module or not attr:
        raise ValueError("no ':' between module and name")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{type(e).__name__}: {e}") from e


class GymExpert:
    """The named expert acting in the policy's action space, on the env's native observation."""

    def __init__(self, name: str, env: Any):
        self.base = env.unwrapped  # the GymRobotEnv: native_obs, action_map, inner
        obj = load_named(name)
        self.fn = obj(self.base.inner.unwrapped) if inspect.isclass(obj) else obj

    def reset(self) -> None:
        reset = getattr(self.fn, "reset", None)
        if callable(reset):
            reset()

    def act(self, obs: dict | None = None) -> np.ndarray:
        return self.base.action_map.to_policy(self.fn(self.base.native_obs))

    def score(self) -> float | None:
        score = getattr(self.fn, "score", None)
        return float(score()) if callable(score) else None
