"""The SO-101 arm's constants: its joints, their units and the discrete gripper commands.

Joint vectors (the robot's `observation.state` and joint actions) list the joints in
`JOINT_NAMES` order: the five arm joints in degrees, then the gripper in 0 (closed) .. 100 (open),
LeRobot's range units. A state vector may carry more after those (proprioception: velocities, the
end-effector position); `[:NUM_JOINTS]` is the arm's own part of it.
"""

from __future__ import annotations

JOINT_NAMES = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
NUM_JOINTS = len(JOINT_NAMES)  # 6
ARM_JOINTS = JOINT_NAMES[:5]  # the joints that place the end effector (degrees)
NUM_ARM_JOINTS = len(ARM_JOINTS)  # 5
ARM = slice(0, NUM_ARM_JOINTS)  # `q[ARM]`, `q[..., ARM]`: the arm joints of joint vectors
GRIPPER = NUM_JOINTS - 1  # the gripper's index in a joint vector: `q[GRIPPER]`

# The discrete gripper command, the last entry of an end-effector action when
# `pipeline.gripper.discrete` (what `EEAction` reads, and what the gripper critic chooses among).
CLOSE, STAY, OPEN = 0, 1, 2
