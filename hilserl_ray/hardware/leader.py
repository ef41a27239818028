"""Leader-arm interventions: a second, unpowered SO-101 that a person moves by hand.

The leader's joints (calibrated like the follower's, so the same pose reads the same degrees)
become the wrapped env's action through `envs.joint_actions.joint_targets_to_action`, the same
function that converts a LeRobot dataset's recorded joint targets: the end-effector step from the
follower's gripperframe towards the leader's (both by FK), scaled by
`pipeline.ee_action.step_size_m` and clipped to [-1, 1], and a gripper command from the
difference of the two grippers.

Taking over: press the toggle key (space; a USB foot pedal that types a key works too), or
just move the leader: once it leaves the pose where it was last handed back (episode start or
hand-back) by more than `pipeline.intervention.leader_divergence_deg` on any joint, the human
has control. The leader never follows the follower (its torque stays off), so the reference is
the leader's own resting pose, not the follower's. Control returns on the toggle key or at the
next episode. `record` opens it with `from_start`: the leader drives from every episode's first
step (a demonstration is the person's from step 0, as LeRobot's record with a teleoperator). Keys (s/f/r for success/failure/re-record) are optional: without pynput or a
desktop the source still works by divergence.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hilserl_ray.config import TrainConfig
from hilserl_ray.envs.intervention import no_events
from hilserl_ray.envs.joint_actions import JointActionParams, joint_targets_to_action
from hilserl_ray.envs.kinematics import Kinematics
from hilserl_ray.hardware.calibration import Normalizer, apply_calibration, check_ids, load_calibration
from hilserl_ray.hardware.feetech import FeetechBus
from hilserl_ray.hardware.keys import SUCCESS_HELD_KEY, KeyboardListener, KeyEvents, make_keys
from hilserl_ray.so101 import ARM, JOINT_NAMES, NUM_JOINTS

log = logging.getLogger(__name__)


class LeaderArm:
    """The leader's bus, torque off, read in calibrated units."""

    def __init__(
        self,
        port: str,
        calibration: str | Path,
        motor_ids: Sequence[int] = (1, 2, 3, 4, 5, 6),
        bus_timeout_ms: float = 50.0,
    ):
        self.bus = FeetechBus(
            port, dict(zip(JOINT_NAMES, motor_ids, strict=True)), timeout_margin_ms=bus_timeout_ms
        )
        self.calibration_path = Path(calibration)
        self.normalizer: Normalizer | None = None

    def connect(self) -> None:
        cal = load_calibration(self.calibration_path, JOINT_NAMES)
        self.bus.connect()
        try:
            check_ids(cal, self.bus, str(self.calibration_path))
            self.bus.disable_torque()
            if apply_calibration(self.bus, cal):
                log.warning(
                    "leader calibration on %s differed from %s: wrote the file's",
                    self.bus.port,
                    self.calibration_path,
                )
            self.normalizer = Normalizer(cal, JOINT_NAMES)
        except BaseException:
            self.bus.close()
            raise

    def read(self) -> np.ndarray:
        return self.normalizer.to_user(self.bus.sync_read("Present_Position")).astype(np.float64)

    def close(self) -> None:
        if self.bus.is_connected:
            self.bus.disable_torque(best_effort=True)
            self.bus.close()


class LeaderSource:
    """`InterventionSource` driven by the leader arm (see the module docstring)."""

    def __init__(
        self,
        leader: LeaderArm,
        kinematics,
        *,
        params: JointActionParams,
        divergence_deg: float,
        keys: KeyboardListener | None = None,
        from_start: bool = False,
    ):
        self.leader, self.kin = leader, kinematics
        self.from_start = from_start
        self.params, self.divergence_deg = params, divergence_deg
        self.control = KeyEvents(keys) if keys is not None else None
        self.engaged = False
        self._key_engaged = False  # the key toggle's state when this source last looked
        self.reference: np.ndarray | None = None  # leader pose when control was last handed back
        self.last_leader: np.ndarray | None = None

    def reset(self) -> None:
        if self.control is not None:
            self.control.reset()
            self.control.engaged = self.from_start  # the toggle key still hands back
        self.engaged = self._key_engaged = self.from_start
        self.reference = self.leader.read()

    def _update_engagement(self, q_leader: np.ndarray) -> None:
        if self.reference is None:
            self.reference = q_leader.copy()
        if self.control is not None:
            # compare with the toggle state this source last acted on, not with the state just
            # before this poll: events() polls too, and a toggle it consumed must not be lost
            self.control.poll()
            if self.control.engaged != self._key_engaged:
                self._key_engaged = self.engaged = self.control.engaged
                if not self.engaged:
                    self.reference = q_leader.copy()
        moved = float(np.max(np.abs(q_leader[ARM] - self.reference[ARM])))
        if not self.engaged and moved > self.divergence_deg:
            self.engaged = True
            if self.control is not None:
                self.control.engaged = self._key_engaged = True
            log.info("leader moved %.1f deg: the human takes over", moved)

    def action(self, obs: dict[str, np.ndarray], env: Any) -> np.ndarray | None:
        q_leader = self.leader.read()
        self.last_leader = q_leader
        self._update_engagement(q_leader)
        if not self.engaged:
            return None
        q_follower = np.asarray(obs["observation.state"], dtype=np.float64)[:NUM_JOINTS]
        return self.action_towards(q_leader, q_follower)

    def action_towards(self, q_leader: np.ndarray, q_follower: np.ndarray) -> np.ndarray:
        """The action that moves the follower towards the leader: the leader's joints are the
        joint targets, converted exactly as a LeRobot dataset's recorded targets are."""
        action, _ = joint_targets_to_action(q_leader, q_follower, self.kin, self.params)
        return action[0]

    def events(self) -> dict[str, bool]:
        return self.control.events() if self.control is not None else no_events()

    def success_held(self) -> bool | None:
        return self.control.keys.is_down(SUCCESS_HELD_KEY) if self.control is not None else None

    def close(self) -> None:
        if self.control is not None:
            self.control.keys.stop()
        self.leader.close()


def make_leader_source(
    cfg: TrainConfig,
    keys: KeyboardListener | None = None,
    use_keyboard: bool = True,
    from_start: bool = False,
) -> LeaderSource:
    """Connect the leader arm named by `pipeline.intervention.leader_*`; keys if pynput works.
    from_start: the leader drives from each episode's first step (`record`'s demonstrations)."""
    it = cfg.pipeline.intervention
    if not it.leader_port:
        raise ValueError("pipeline.intervention.leader_port: the leader arm's serial port is required")
    if it.leader_calibration is None:
        raise ValueError(
            "pipeline.intervention.leader_calibration: a calibration JSON for the leader arm is required "
            "(python -m hilserl_ray.calibrate --port <leader port> --out calibration/leader.json --leader)"
        )
    if keys is None and use_keyboard:
        try:
            keys = make_keys(cfg)
            keys.start()
        except (ImportError, RuntimeError) as e:
            log.warning("leader arm without keys (take over by moving the leader): %s", e)
            keys = None
    leader = LeaderArm(it.leader_port, it.leader_calibration, cfg.robot.motor_ids, cfg.robot.bus_timeout_ms)
    leader.connect()
    return LeaderSource(
        leader,
        Kinematics(cfg.robot.mjcf),
        params=JointActionParams.from_config(cfg),
        divergence_deg=it.leader_divergence_deg,
        keys=keys,
        from_start=from_start,
    )
