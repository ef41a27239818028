"""The simulated SO-101 (MuJoCo) with the raw interface of the real arm, plus reach / pick-cube tasks.

Raw interface, as `hardware.robot_env` for the real arm: observation {"observation.state": (6,)
joint degrees / gripper 0..100, "observation.images.<cam>": (H, W, 3) uint8 at the camera's
configured size}, action (6,) joint position targets in the same units, `info["is_success"]`.
Every target passes the real follower's per-step limits (`hilserl_ray.limits`: joint ranges,
`robot.max_relative_target_deg` from the measured joints, the workspace box by FK), so an action
moves the sim as it moves the arm; `info["safety_clamped"]` / `info["joint_target"]` as there.
The pipeline wrappers (`envs.wrappers`) turn it into the policy's env. State-only configs also get
`observation.environment_state` (the target or cube xyz) so the task is observable.

Deterministic for a seed: all randomness comes from the gymnasium `np_random` of `reset(seed=...)`.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless; must precede the first GL context
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import atexit  # noqa: E402
import weakref  # noqa: E402

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from hilserl_ray.config import TrainConfig  # noqa: E402
from hilserl_ray.envs.kinematics import EE_SITE, Kinematics  # noqa: E402
from hilserl_ray.envs.scene import CUBE_HALF, build_scene  # noqa: E402
from hilserl_ray.envs.specs import ENV_STATE, robot_spec  # noqa: E402
from hilserl_ray.features import IMAGE_PREFIX, STATE  # noqa: E402
from hilserl_ray.limits import arm_limits  # noqa: E402
from hilserl_ray.so101 import ARM, JOINT_NAMES, NUM_ARM_JOINTS  # noqa: E402

REACH_SUCCESS_M = 0.02  # gripperframe within 2 cm of the target
LIFT_M = 0.04  # cube bottom lifted 4 cm off the table
REACH_BOX = ((0.15, -0.15, 0.04), (0.32, 0.15, 0.22))  # target sampling box, metres
CUBE_BOX = ((0.17, -0.10), (0.30, 0.10))  # cube xy sampling box, metres
CUBE_YAW_NOISE = 0.25  # rad, around the direction from the arm's base to the cube


_OPEN_ENVS: weakref.WeakSet = weakref.WeakSet()


def _close_renderers() -> None:
    """Free GL contexts of envs nobody closed while EGL still exists (else noisy errors at exit).
    Registered after the first Renderer exists, so it runs before mujoco's own EGL teardown."""
    for env in list(_OPEN_ENVS):
        env.close()


def make_renderer(model: mujoco.MjModel, h: int, w: int) -> mujoco.Renderer:
    """An offscreen renderer without shadows or reflections (llvmpipe draws them on the CPU)."""
    r = mujoco.Renderer(model, h, w)
    r.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
    r.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
    return r


def space_from_features(features) -> gym.spaces.Dict:
    """Observation space of a FeatureSpec's observation features."""
    spaces = {}
    for key, f in features.items():
        if f.is_image:
            spaces[key] = gym.spaces.Box(0, 255, f.shape, np.uint8)
        else:
            spaces[key] = gym.spaces.Box(-np.inf, np.inf, f.shape, np.dtype(f.dtype))
    return gym.spaces.Dict(spaces)


class SO101SimEnv(gym.Env):
    """Raw sim env: joint targets in, joint degrees (+ camera frames) out."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, cfg: TrainConfig, render_mode: str | None = None):
        if cfg.robot.type != "sim":
            raise ValueError(f"robot.type: the sim env needs 'sim', got {cfg.robot.type!r}")
        self.cfg = cfg
        self.task = cfg.env.task
        self.render_mode = render_mode
        self.features = robot_spec(cfg).observation
        self.cameras = [(c.name, c.height, c.width) for c in cfg.env.cameras]
        biggest = (max([h for _, h, _ in self.cameras] + [128]), max([w for _, _, w in self.cameras] + [128]))
        self.model = build_scene(cfg.robot.mjcf, offscreen=biggest)
        self.data = mujoco.MjData(self.model)
        self.kin = Kinematics(cfg.robot.mjcf)
        self.dt = 1.0 / cfg.env.fps
        self.substeps = cfg.env.physics_substeps or max(1, round(self.dt / self.model.opt.timestep))
        self.metadata = {**self.metadata, "render_fps": cfg.env.fps}

        joints = [self.model.joint(j) for j in JOINT_NAMES]
        self._qadr = np.array([int(j.qposadr[0]) for j in joints])
        self._vadr = np.array([int(j.dofadr[0]) for j in joints])
        act_ids = {int(self.model.actuator(i).trnid[0]): i for i in range(self.model.nu)}
        self._act = np.array([act_ids[int(j.id)] for j in joints])
        self._cube_q = int(self.model.joint("cube").qposadr[0])
        self._cube_v = int(self.model.joint("cube").dofadr[0])
        self._cube_body = self.model.body("cube").id
        self._target_site = self.model.site("target").id
        self._ee_site = self.model.site(EE_SITE).id
        if self.task != "reach":  # the reach marker only shows in the reach task
            self.model.site_rgba[self._target_site, 3] = 0.0

        self.reset_pose = np.asarray(cfg.robot.reset_pose_deg, dtype=np.float64)
        low, high = self.kin.clip_state(np.full(6, -1e9)), self.kin.clip_state(np.full(6, 1e9))
        # the real follower's per-step limits, so an action moves the sim as it moves the arm
        self.limits = arm_limits(cfg, low, high, fk=lambda q: self.kin.fk(q)[0], names=JOINT_NAMES)
        self.action_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        self.observation_space = space_from_features(self.features)
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._target = np.zeros(3)
        self._ctrl_state = self.reset_pose.copy()

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        q = self.kin.to_radians(self.reset_pose)
        q[ARM] += rng.normal(0.0, self.cfg.env.reset_noise, NUM_ARM_JOINTS)
        q[ARM] = np.clip(q[ARM], self.kin.ranges[ARM, 0], self.kin.ranges[ARM, 1])
        d.qpos[self._qadr] = q
        d.ctrl[self._act] = q
        self._ctrl_state = self.kin.to_state(q)
        self.place_objects(rng)
        mujoco.mj_forward(m, d)
        return self._obs(), {"is_success": False}

    def place_objects(self, rng: np.random.Generator, target: np.ndarray | None = None) -> None:
        """Put the cube (at rest) and the reach target at random places (the target at `target` if
        given). reset() does it for every episode; the twin's scripted human between episodes."""
        d = self.data
        lo, hi = CUBE_BOX
        xy = rng.uniform(lo, hi)
        yaw = np.arctan2(xy[1], xy[0]) + rng.uniform(-CUBE_YAW_NOISE, CUBE_YAW_NOISE)
        d.qpos[self._cube_q : self._cube_q + 3] = [xy[0], xy[1], CUBE_HALF]
        d.qpos[self._cube_q + 3 : self._cube_q + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        d.qvel[self._cube_v : self._cube_v + 6] = 0.0
        lo, hi = REACH_BOX
        self._target = rng.uniform(lo, hi) if target is None else np.asarray(target, dtype=np.float64)
        self.model.site_pos[self._target_site] = self._target

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (6,):
            raise ValueError(
                f"sim action: expected 6 joint targets (degrees, gripper 0..100), got shape {action.shape}"
            )
        self._ctrl_state = self.limits.clamp(action, self.joint_state())
        clamped = bool(self.limits.last)
        self.data.ctrl[self._act] = self.kin.to_radians(self._ctrl_state)
        mujoco.mj_step(self.model, self.data, nstep=self.substeps)
        mujoco.mj_forward(
            self.model, self.data
        )  # poses (site, camera) of the final qpos, not the last substep's
        success = self.is_success()
        reward = float(success)
        if self.cfg.env.dense_reward:
            reward += self.shaped_reward()
        info = {
            "is_success": success,
            "safety_clamped": clamped,
            "joint_target": self._ctrl_state.astype(np.float32),
        }
        return self._obs(), reward, success, False, info

    def render(self):
        name = self.cameras[0][0] if self.cameras else "front"
        h, w = (self.cameras[0][1], self.cameras[0][2]) if self.cameras else (128, 128)
        return self._render(name, h, w)

    def close(self):
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()

    # ---------------------------------------------------------- privileged sim state
    def joint_state(self) -> np.ndarray:
        """Measured joints in state units (6,)."""
        return self.kin.to_state(self.data.qpos[self._qadr])

    def ee_pos(self) -> np.ndarray:
        return self.data.site_xpos[self._ee_site].copy()

    def ee_mat(self) -> np.ndarray:
        return self.data.site_xmat[self._ee_site].reshape(3, 3).copy()

    def cube_pos(self) -> np.ndarray:
        return self.data.xpos[self._cube_body].copy()

    def cube_mat(self) -> np.ndarray:
        return self.data.xmat[self._cube_body].reshape(3, 3).copy()

    def target_pos(self) -> np.ndarray:
        return self._target.copy()

    def object_pos(self) -> np.ndarray:
        """What `observation.environment_state` holds: the reach target or the cube centre."""
        return self.target_pos() if self.task == "reach" else self.cube_pos()

    def is_success(self) -> bool:
        if self.task == "reach":
            return bool(np.linalg.norm(self.ee_pos() - self._target) < REACH_SUCCESS_M)
        return bool(self.cube_pos()[2] - CUBE_HALF > LIFT_M)

    def shaped_reward(self) -> float:
        """Optional dense shaping in (-0.2, 0]: a cost for the gripper's distance to the object
        (and, for pick-cube, for the cube not yet lifted). A cost, never a bonus, so ending the
        episode by succeeding always beats hovering near the goal to collect shaping reward."""
        dist = np.linalg.norm(self.ee_pos() - self.object_pos())
        r = -0.1 * np.tanh(10.0 * dist)
        if self.task == "pick_cube":
            r -= 0.1 * (1.0 - float(np.clip((self.cube_pos()[2] - CUBE_HALF) / LIFT_M, 0.0, 1.0)))
        return float(r)

    # ------------------------------------------------------------------ internals
    def _obs(self) -> dict[str, np.ndarray]:
        obs = {STATE: self.joint_state().astype(np.float32)}
        for name, h, w in self.cameras:
            obs[IMAGE_PREFIX + name] = self._render(name, h, w)
        if ENV_STATE in self.features:
            obs[ENV_STATE] = self.object_pos().astype(np.float32)
        return obs

    def _render(self, camera: str, h: int, w: int) -> np.ndarray:
        r = self._renderers.get((h, w))
        if r is None:
            r = make_renderer(self.model, h, w)
            self._renderers[(h, w)] = r
            if not _OPEN_ENVS:
                atexit.unregister(_close_renderers)
                atexit.register(_close_renderers)
            _OPEN_ENVS.add(self)
        r.update_scene(self.data, camera=camera)
        return r.render()
