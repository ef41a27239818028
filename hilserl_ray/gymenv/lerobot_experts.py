"""lerobot_env_so101's own scripted controllers, for `env.gym.expert` (the forms: `gymenv.expert`).

`PickPlace` (a class: built with the env, reads its grasp point, block and goal) for
SO101PickPlace-v0; `reach_close` (a function of the observation) for SO101PickCube-v0.
"""

from __future__ import annotations

import numpy as np
from lerobot_env_so101.gripper import ctrl_to_normalized
from lerobot_env_so101.policy import DEFAULT_ACTION_SCALE, flatten_observation
from lerobot_env_so101.scripted import PickPlaceController, scripted_reach_close
from lerobot_env_so101.scripted.pick_place import Phase

HELD_M = 0.02  # the block this close to the grasp point, jaws commanded shut: it is in the jaws
LIFTED_M = 0.01  # ...and this high above its rest height: carried


class _Resumable(PickPlaceController):
    """The controller started from where a takeover finds the task, not only from its beginning.

    The env's controller reads the table's height from the block's first position and always
    starts by opening the jaws above the block: taken over while the block is held, it dropped
    it and aimed its next grasp at the height the block had been carried to (0 of 10 placed
    after a takeover in its lift phase). Its phase and table height are private attributes
    (lerobot-env-so101 0.4.0's names)."""

    def resume(self, table_z: float, held: bool, lifted: bool) -> None:
        self._table_z = table_z
        if held:  # on the table: grip (10 still steps), then lift; carried: the jaws are shut already,
            # so on with the lift, traverse and lower (a grip in the air spent half a 20-step correction)
            self._phase = Phase.LIFT if lifted else Phase.CLOSE


class PickPlace:
    """SO101PickPlace-v0's `PickPlaceController`: hover, descend, close, lift, traverse, lower,
    open, retreat. It reads the grasp point, the block and the goal from the env (so it also
    drives the image variant, whose observation has no environment_state). Reset at a takeover,
    it carries on from the state it finds (`_Resumable`)."""

    def __init__(self, env):
        self.env = env
        self.ctrl = _Resumable(action_scale=env._action_scale)
        self.resuming = True

    def reset(self) -> None:
        self.ctrl.reset()
        self.resuming = True  # the state is read at the next step (a source resets before the env)

    def block(self) -> np.ndarray:
        return self.env.data.sensor("block_pos").data.copy()

    def held(self) -> bool:
        """The jaws commanded shut with the block between them."""
        model, data = self.env.model, self.env.data
        act = model.actuator("gripper")
        shut = ctrl_to_normalized(data.ctrl[act.id], act.ctrlrange) < 0.5
        return bool(shut and np.linalg.norm(self.env.ik_point_pos - self.block()) < HELD_M)

    def __call__(self, obs) -> np.ndarray:
        if self.resuming:
            self.resuming = False
            table_z = float(self.env.goal_pos[2])  # the goal is where the block rests on the table
            self.ctrl.resume(table_z, self.held(), self.block()[2] > table_z + LIFTED_M)
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
