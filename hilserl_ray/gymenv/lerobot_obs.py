"""What lerobot_env_so101 leaves out of its observation, as `env.gym.wrappers` add it.

Its `agent_pos` reports the gripper's commanded target, not the jaws: after a close command the
jaws take ~3 control steps to settle on the block, and a lift in that time drops it (its own
controller waits 10 steps; lifting after 1 places 0 of 10). Seen only through the command, the
moment to lift is not in the observation, and a policy that sees the same thing before and
after the jaws closed cannot learn when to lift. A real SO-101 reports its measured gripper.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from lerobot_env_so101.gripper import ctrl_to_normalized


class MeasuredJaw(gym.ObservationWrapper):
    """`agent_pos` + the jaw's measured opening, in agent_pos's gripper units (-1 closed .. +1 open)."""

    KEY = "agent_pos"

    def __init__(self, env: gym.Env):
        super().__init__(env)
        box = env.observation_space[self.KEY]
        spaces = dict(env.observation_space.spaces)
        low, high = (
            np.append(box.low, -np.inf).astype(np.float32),
            np.append(box.high, np.inf).astype(np.float32),
        )
        spaces[self.KEY] = gym.spaces.Box(low, high, dtype=np.float32)
        self.observation_space = gym.spaces.Dict(spaces)
        base = env.unwrapped
        self._joint = base.model.joint("gripper").qposadr[0]
        self._range = base.model.actuator("gripper").ctrlrange

    def opening(self) -> float:
        """As the env's own success check reads it (the joint, not the command), rescaled to agent_pos's units."""
        return 2.0 * float(ctrl_to_normalized(self.env.unwrapped.data.qpos[self._joint], self._range)) - 1.0

    def observation(self, obs: dict) -> dict:
        out = dict(obs)
        out[self.KEY] = np.append(obs[self.KEY], np.float32(self.opening())).astype(np.float32)
        return out
