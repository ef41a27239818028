"""The real SO-101 as a gymnasium env with the sim base env's interface.

Observation {"observation.state": (6,) float32 joint degrees / gripper 0..100,
"observation.images.<cam>": (H, W, 3) uint8 at the camera's configured size}; action (6,) joint
targets in the same units. Every step: safety-clamp and send the target, wait for the control
period (1 / env.fps), read the joints and the newest camera frames. `reset()` ramps smoothly to
`robot.reset_pose_deg` and waits `robot.reset_wait_seconds`. Reward is 0 and `is_success` False:
success, failure and re-record come from the human through the intervention wrapper.
`close()` holds, turns the torque off and releases the cameras; it is idempotent. An exception
(or Ctrl+C) inside `step`/`reset` stops the arm the same way before propagating.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager

import gymnasium as gym
import numpy as np

from hilserl_ray.config import TrainConfig
from hilserl_ray.envs.kinematics import Kinematics
from hilserl_ray.envs.pipeline import robot_spec
from hilserl_ray.features import IMAGE_PREFIX, STATE
from hilserl_ray.hardware.camera import OpenCVCamera
from hilserl_ray.hardware.follower import SO101Follower
from hilserl_ray.limits import workspace_box

log = logging.getLogger(__name__)

RAMP_HZ = 30.0  # command rate of the reset ramp (smoother than the policy's rate)


class RealSO101Env(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, cfg: TrainConfig, follower: SO101Follower, cameras: dict[str, OpenCVCamera]):
        self.cfg = cfg
        self.follower = follower
        self.cameras = cameras
        self.spec_features = robot_spec(cfg)
        self.dt = 1.0 / cfg.env.fps
        self.reset_pose = np.asarray(cfg.robot.reset_pose_deg, dtype=np.float64)
        low, high = follower.safety.low.astype(np.float32), follower.safety.high.astype(np.float32)
        self.joint_low, self.joint_high = low, high
        spaces = {STATE: gym.spaces.Box(-np.inf, np.inf, (len(low),), np.float32)}
        for cam in cfg.env.cameras:
            spaces[IMAGE_PREFIX + cam.name] = gym.spaces.Box(0, 255, (cam.height, cam.width, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(low, high, dtype=np.float32)
        self._present: np.ndarray | None = None
        self._next_tick = 0.0
        self._closed = False
        self._holding = False
        self.steps = 0
        self.timing = {"step_s": 0.0, "io_s": 0.0}  # the last step's wall time and bus+camera time

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        with self._stop_on_error():
            self._ramp_to(self.reset_pose, self.cfg.robot.reset_seconds)
            end = time.monotonic() + self.cfg.robot.reset_wait_seconds
            while time.monotonic() < end:
                self.follower.kick()
                time.sleep(min(0.05, max(0.0, end - time.monotonic())))
            self.steps = 0
            obs = self._observe()
            self._next_tick = time.monotonic() + self.dt
            return obs, {"is_success": False}

    def step(self, action):
        t0 = time.monotonic()
        self._holding = False
        with self._stop_on_error():
            action = np.asarray(action, dtype=np.float64).reshape(-1)
            if action.shape != self.action_space.shape:
                raise ValueError(
                    f"action: expected {self.action_space.shape} joint targets "
                    f"({', '.join(self.spec_features.action.names)}), got shape {action.shape}"
                )
            # the max-step clamp works from a fresh read, as LeRobot's does: the observation is a
            # control period old and the arm kept moving (the twin measured goals up to 2x the
            # max step from where the arm really was when clamped against it)
            sent = self.follower.send(action)
            clamped = bool(self.follower.safety.last)
            delay = self._next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._next_tick = max(self._next_tick + self.dt, time.monotonic())
            t1 = time.monotonic()
            obs = self._observe()
            self.timing = {"step_s": time.monotonic() - t0, "io_s": time.monotonic() - t1}
            self.steps += 1
            info = {"is_success": False, "safety_clamped": clamped, "joint_target": sent}
            return obs, 0.0, False, False, info

    def hold_still(self):
        """The operator paused: stop where the arm is (first call after a step), torque on, and
        keep the watchdog fed. Called repeatedly while the pause lasts."""
        if not self._holding:
            self.follower.hold()
            self._holding = True
        self.follower.kick()
        self._next_tick = time.monotonic() + self.dt

    def close(self):
        """Hold, torque off, close the port and the cameras. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.follower.close()
        finally:
            for cam in self.cameras.values():
                cam.stop()

    # ------------------------------------------------------------------ internals
    @contextmanager
    def _stop_on_error(self):
        if self._closed:
            raise RuntimeError("the real robot env is closed (torque off); make a new one")
        try:
            yield
        except BaseException:
            log.error("stopping the arm (hold, torque off) after an error in the robot env")
            self.close()
            raise

    def _observe(self) -> dict[str, np.ndarray]:
        self._present = self.follower.read()
        obs = {STATE: self._present.astype(np.float32)}
        max_age = max(0.5, 5.0 / min((c.fps for c in self.cameras.values()), default=1.0))
        for name, cam in self.cameras.items():
            frame, _stamp = cam.latest(max_age_s=max_age)
            obs[IMAGE_PREFIX + name] = frame
        return obs

    def _ramp_to(self, target: np.ndarray, seconds: float) -> None:
        """Cosine-eased joint-space ramp from the present pose, at RAMP_HZ, then settle. The path
        is fixed and ends at a configured pose, so only the joint clamps apply (not the FK box,
        which a folded start pose may lie outside of)."""
        start = self.follower.read().astype(np.float64)
        target = np.clip(target, self.joint_low, self.joint_high)
        n = max(1, int(round(seconds * RAMP_HZ)))
        t_next = time.monotonic()
        for i in range(1, n + 1):
            s = 0.5 - 0.5 * np.cos(np.pi * i / n)
            self.follower.send(start + s * (target - start), present=self.follower.read(), workspace=False)
            t_next += 1.0 / RAMP_HZ
            delay = t_next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        for _ in range(int(RAMP_HZ)):  # settle: a step clamp or a slow servo can leave it short
            present = self.follower.read()
            if np.max(np.abs(present - target)) <= 1.0:
                break
            self.follower.send(target, present=present, workspace=False)
            time.sleep(1.0 / RAMP_HZ)


def make_real_env(cfg: TrainConfig) -> RealSO101Env:
    """The raw real-robot env for `cfg.robot.type == "so101"` (make_env wraps it in the pipeline)."""
    if cfg.robot.type != "so101":
        raise ValueError(f"robot.type: make_real_env needs 'so101', got {cfg.robot.type!r}")
    kin = Kinematics(cfg.robot.mjcf)
    follower = SO101Follower(
        cfg.robot.port,
        cfg.robot.calibration,
        cfg.robot.motor_ids,
        max_relative_target=cfg.robot.max_relative_target_deg,
        fk=lambda q: kin.fk(q)[0],
        workspace=workspace_box(cfg),
        watchdog_s=cfg.robot.watchdog_seconds,
        watchdog_release_s=cfg.robot.watchdog_release_seconds,
        bus_timeout_ms=cfg.robot.bus_timeout_ms,
    )
    cameras = {
        c.name: OpenCVCamera(c.name, c.device, c.width, c.height, c.fps, key=f"env.cameras.{i}")
        for i, c in enumerate(cfg.env.cameras)
    }
    try:
        follower.connect()
        for cam in cameras.values():
            cam.start()
    except BaseException:
        follower.close()
        for cam in cameras.values():
            cam.stop()
        raise
    return RealSO101Env(cfg, follower, cameras)
