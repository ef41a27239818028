"""lerobot_env_so101's own scripted controllers, for `env.gym.expert` (the forms: `gymenv.expert`).

`PickPlace` (a class: built with the env, reads its grasp point, block and goal) for
SO101PickPlace-v0; `reach_close` (a function of the observation) for SO101PickCube-v0.
"""

from __future__ import annotations

import numpy as np
from lerobot_env_so101.policy import DEFAULT_ACTION_SCALE, flatten_observation
from lerobot_env_so101.scripted import PickPlaceController, scripted_reach_close


class PickPlace:
    """SO101PickPlace-v0's `PickPlaceController`: hover, descend, close, lift, traverse, lower,
    open, retreat. It reads the grasp point, the block and the goal from the env (so it also
    drives the image variant, whose observation has no environment_state)."""

    def __init__(self, env):
        self.env = env
        self.ctrl = PickPlaceController(action_scale=env._action_scale)

    def reset(self) -> None:
        self.ctrl.reset()

    def block(self) -> np.ndarray:
        return self.env.data.sensor("block_pos").data.copy()

    def __call__(self, obs) -> np.ndarray:
        return self.ctrl.act(self.env.ik_point_pos, self.block(), self.env.goal_pos)

    def score(self) -> float:
        """The grasp point's distance to the block plus the block's to the goal (xy)."""
        block = self.block()
        return float(
            np.linalg.norm(self.env.ik_point_pos - block) + np.linalg.norm(block[:2] - self.env.goal_pos[:2])
        )


def reach_close(obs) -> np.ndarray:
    """SO101PickCube-v0's stateless reach-and-close controller (the env at action_scale 0.025)."""
    return scripted_reach_close(flatten_observation(obs), DEFAULT_ACTION_SCALE)
