"""The twin's follower: the sim's MuJoCo SO-101 and scene, driven in real time by STS3215 servos.

Each physics tick (the scene's 4 ms timestep, paced to the twin's clock) reads every servo's
torque flag and goal (clamped to its position limits by the firmware) into the position
actuators, steps MuJoCo, and writes the joint angles back as encoder positions through the
calibration the twin wrote, so Present_Position, Present_Velocity and Present_Load are what the
servos would report. Torque off zeroes the actuator's gains: the joint is passive (its damping
and friction remain; the scene's gravity compensation stands in for the gearbox holding it).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping

import mujoco
import numpy as np

from hilserl_ray.config import TrainConfig
from hilserl_ray.envs.sim import SO101SimEnv
from hilserl_ray.hardware.calibration import FULL_TURN, HALF_TURN, MAX_RES, MotorCalibration, Normalizer
from hilserl_ray.so101 import JOINT_NAMES
from hilserl_ray.twin.clock import WALL, TwinClock
from hilserl_ray.twin.sts3215 import GOAL, HOMING, MAX_LIMIT, MIN_LIMIT, ServoBus, sm_encode

STEPS_PER_RAD = 4096 / (2 * math.pi)
REST_POSE = (0.0, -95.0, 90.0, 60.0, 0.0, 5.0)  # folded on the table, as an arm is left unpowered
RANGE_MARGIN_DEG = 3.0
TICK_S = 0.008  # physics advances in 8 ms slices (2 MuJoCo steps): servo readings are <= 8 ms old  # a person calibrating never quite reaches the mechanical stops


def make_calibration(kin, motor_ids: list[int], rng: np.random.Generator) -> dict[str, MotorCalibration]:
    """A LeRobot calibration as `calibrate` would record on this arm: homing offsets that make the
    mid-range pose read 2047 (here: random, as each servo's horn is mounted), ranges a little
    inside the model's joint limits, wrist_roll a full turn, the gripper over its travel."""
    out = {}
    for k, (name, motor_id) in enumerate(zip(JOINT_NAMES, motor_ids, strict=True)):
        lo, hi = np.rad2deg(kin.ranges[k])
        offset = int(rng.integers(-1800, 1801))
        if name in FULL_TURN:
            rmin, rmax = 0, MAX_RES
        elif name == "gripper":  # 0..100 spans the jaw's whole travel (closed .. open)
            span = (hi - lo) * MAX_RES / 360.0
            rmin = HALF_TURN - round(span / 2)
            rmax = rmin + round(span)
        else:
            half = (min(-lo, hi) - RANGE_MARGIN_DEG) * MAX_RES / 360.0
            rmin, rmax = HALF_TURN - round(half), HALF_TURN + round(half)
        out[name] = MotorCalibration(
            id=int(motor_id), drive_mode=0, homing_offset=offset, range_min=rmin, range_max=rmax
        )
    return out


class ServoMap:
    """Physical joint (state units) <-> a servo's encoder (`actual`), through a calibration."""

    def __init__(self, calibration: Mapping[str, MotorCalibration]):
        self.cal = dict(calibration)
        self.norm = Normalizer(self.cal, JOINT_NAMES)
        self.ids = [self.cal[j].id for j in JOINT_NAMES]

    def program(self, bus: ServoBus) -> None:
        """Write offsets and limits into the servos' EEPROM, as a finished calibration leaves them."""
        for j, i in zip(JOINT_NAMES, self.ids, strict=True):
            c, s = self.cal[j], bus[i]
            s.poke(HOMING, sm_encode(c.homing_offset, 11))
            s.poke(MIN_LIMIT, c.range_min)
            s.poke(MAX_LIMIT, c.range_max)

    def actual(self, q_state: np.ndarray) -> dict[int, int]:
        """Encoder angle of each servo id for a physical pose (the homing offset is the horn's)."""
        present = self.norm.to_raw(np.asarray(q_state, dtype=np.float64))
        return {
            i: (present[j] + self.cal[j].homing_offset) % 4096
            for j, i in zip(JOINT_NAMES, self.ids, strict=True)
        }

    def state(self, present: Mapping[str, int]) -> np.ndarray:
        return self.norm.to_user(present).astype(np.float64)


class TwinArm:
    """The follower: MuJoCo physics behind a `ServoBus`. `start()` runs the physics thread.

    `on_tick(arm)` (optional) runs after each tick under the bus lock: the twin's reporter and
    human read a consistent state there. Everything touching `sim.data` holds `bus.lock`.
    """

    def __init__(
        self, cfg: TrainConfig, bus: ServoBus, servo_map: ServoMap, seed: int = 0, clock: TwinClock = WALL
    ):
        self.clock = clock
        sim_cfg = cfg.model_copy(deep=True)
        sim_cfg.robot.type = "sim"
        sim_cfg.env.environment_state = False
        sim_cfg.actors.num_robot_actors = 1
        for cam in sim_cfg.env.cameras:
            cam.device = None
        # (the cameras size the offscreen buffer; the twin's render thread draws them)
        self.sim = SO101SimEnv(TrainConfig.model_validate(sim_cfg.model_dump()))
        self.model, self.data = self.sim.model, self.sim.data
        mujoco.mj_resetData(self.model, self.data)
        self.sim.place_objects(np.random.default_rng(seed))
        self.bus, self.map = bus, servo_map
        self.names = list(JOINT_NAMES)
        self._qadr, self._vadr, self._act = self.sim._qadr, self.sim._vadr, self.sim._act
        self._kp = self.model.actuator_gainprm[self._act, 0].copy()
        self._bias = self.model.actuator_biasprm[self._act, :3].copy()
        self._force_limit = np.maximum(np.abs(self.model.actuator_forcerange[self._act]).max(axis=1), 1e-6)
        self.timestep = self.model.opt.timestep
        self.torque = np.ones(6, dtype=bool)  # the first tick applies the servos' torque-off
        self.ticks = 0
        self.held = False  # a hand holds the arm still (calibration): the physics waits
        self.on_tick = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.set_pose(np.asarray(REST_POSE))
        for s in bus.servos.values():
            s.external = True
        self._write_servos()
        for s in bus.servos.values():  # at power-on a servo's goal is where it stands
            s.poke(GOAL, sm_encode(s.present, 15))

    # ------------------------------------------------------------------ state
    def set_pose(self, q_state: np.ndarray) -> None:
        with self.bus.lock:
            q = self.sim.kin.to_radians(np.asarray(q_state, dtype=np.float64))
            self.data.qpos[self._qadr] = q
            self.data.qvel[self._vadr] = 0.0
            self.data.ctrl[self._act] = q
            mujoco.mj_forward(self.model, self.data)

    def hold_pose(self, q_state: np.ndarray) -> None:
        """A hand holding the (torque-off) arm in a pose: the encoders read it at once."""
        with self.bus.lock:
            self.set_pose(q_state)
            self._write_servos()

    def joints(self) -> np.ndarray:
        """Physical joint positions in state units (degrees, gripper 0..100)."""
        return self.sim.joint_state()

    def goals(self) -> np.ndarray:
        """What the servos are driving to (after their own limit clamp), in state units."""
        raw = {j: self.bus[i].limited_goal for j, i in zip(self.names, self.map.ids, strict=True)}
        return self.map.state(raw)

    # ------------------------------------------------------------------ physics
    def _apply_servos(self) -> None:
        goals = self.sim.kin.to_radians(self.goals())
        for k, i in enumerate(self.map.ids):
            on = self.bus[i].torque
            if on != self.torque[k]:
                a = self._act[k]
                self.model.actuator_gainprm[a, 0] = self._kp[k] if on else 0.0
                self.model.actuator_biasprm[a, :3] = self._bias[k] if on else 0.0
                self.torque[k] = on
            self.data.ctrl[self._act[k]] = goals[k]

    def _write_servos(self) -> None:
        actual = self.map.actual(self.joints())
        vel = self.data.qvel[self._vadr] * STEPS_PER_RAD
        load = self.data.actuator_force[self._act] / self._force_limit * 1000.0
        for k, i in enumerate(self.map.ids):
            s = self.bus[i]
            s.actual = actual[i]
            s.velocity = int(np.clip(round(vel[k]), -32767, 32767))
            s.load = int(np.clip(round(load[k]), -1023, 1023))

    def tick(self, steps: int = 1) -> None:
        with self.bus.lock:
            self._apply_servos()
            if not self.held:
                mujoco.mj_step(self.model, self.data, nstep=steps)
            self._write_servos()
            self.ticks += 1
            if self.on_tick is not None:
                self.on_tick(self)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="twin-physics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """Keep simulated time with the twin's clock, TICK_S at a time (fewer wake-ups leave the
        CPU and the GIL to the bus threads); at most 0.1 s of catch-up after a stall."""
        clock = self.clock
        sim_t = clock.now()
        per_tick = max(1, round(TICK_S / self.timestep))
        while not self._stop.is_set():
            now = clock.now()
            steps = min(int((now - sim_t) / self.timestep), 25)
            if steps >= per_tick:
                self.tick(steps)
                sim_t = max(sim_t + steps * self.timestep, now - 25 * self.timestep)
            clock.wait(self._stop, max(0.001, sim_t + per_tick * self.timestep - clock.now()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def snapshot(self) -> np.ndarray:
        """qpos, for the render thread (copied under the lock)."""
        with self.bus.lock:
            return self.data.qpos.copy()
