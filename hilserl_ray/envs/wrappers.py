"""The one wrapper pipeline, shared by the sim and the real arm. Each step is one small wrapper.

Every wrapper derives its spaces from the matching spec function in `envs.specs` and keeps
the result as `self.feature_spec`, so the env's spaces and `pipeline_spec(cfg)` cannot disagree.
Order, inside out (`envs.pipeline.STEPS`): raw robot -> ImageCrop -> ImageResize ->
Proprioception -> EEAction -> Intervention -> [ClassifierReward] -> GripperPenalty -> TimeLimit.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

from hilserl_ray.config import TrainConfig
from hilserl_ray.envs import specs
from hilserl_ray.envs.intervention import InterventionSource, success_held
from hilserl_ray.envs.kinematics import Kinematics
from hilserl_ray.envs.sim import space_from_features
from hilserl_ray.envs.transforms import process_image, proprio_state
from hilserl_ray.features import IMAGE_PREFIX, STATE, FeatureSpec
from hilserl_ray.reward.detector import SuccessDetector
from hilserl_ray.so101 import ARM, CLOSE, GRIPPER, NUM_JOINTS, OPEN, STAY

GRIPPER_OPEN_ABOVE = 5.0  # gripper state (0..100) above which the jaws count as open
IK_TOL_M = 0.005  # EEAction: a fingers-down IK solution farther than this from the target is dropped
MAX_TURN_RAD = 0.2  # EEAction: fingers-down may turn a joint this much per step (see Kinematics.ik)


def _spec_of(env: gym.Env, cfg: TrainConfig) -> FeatureSpec:
    return getattr(env, "feature_spec", None) or specs.robot_spec(cfg)


class _ObsStep(gym.ObservationWrapper):
    def __init__(self, env: gym.Env, spec: FeatureSpec):
        super().__init__(env)
        self.feature_spec = spec
        self.observation_space = space_from_features(spec.observation)


class ImageCrop(_ObsStep):
    """Crop cameras listed in `pipeline.image.crop` to (top, left, height, width)."""

    def __init__(self, env: gym.Env, cfg: TrainConfig):
        super().__init__(env, specs.crop_spec(_spec_of(env, cfg), cfg))
        self.crops = {IMAGE_PREFIX + cam: tuple(box) for cam, box in cfg.pipeline.image.crop.items()}

    def observation(self, obs):
        obs = dict(obs)
        for key, box in self.crops.items():
            obs[key] = process_image(obs[key], box, (box[2], box[3]))
        return obs


class ImageResize(_ObsStep):
    """Resize every camera to `pipeline.image.size` (INTER_AREA), always."""

    def __init__(self, env: gym.Env, cfg: TrainConfig):
        super().__init__(env, specs.resize_spec(_spec_of(env, cfg), cfg))
        self.size = tuple(cfg.pipeline.image.size)

    def observation(self, obs):
        obs = dict(obs)
        for key in self.feature_spec.image_keys:
            obs[key] = process_image(obs[key], None, self.size)
        return obs


class Proprioception(_ObsStep):
    """joint pos (6) [+ joint vel (6) at the control dt] [+ ee xyz + euler (6) by MuJoCo FK]."""

    def __init__(self, env: gym.Env, cfg: TrainConfig, kin: Kinematics):
        super().__init__(env, specs.proprio_spec(_spec_of(env, cfg), cfg))
        self.kin, self.dt, self.pcfg = kin, 1.0 / cfg.env.fps, cfg.pipeline.proprio
        self._prev: np.ndarray | None = None

    def reset(self, **kwargs):
        self._prev = None
        return super().reset(**kwargs)

    def observation(self, obs):
        q = np.asarray(obs[STATE], np.float64)[:NUM_JOINTS]
        vel = np.zeros(6) if self._prev is None else (q - self._prev) / self.dt
        self._prev = q
        obs = dict(obs)
        obs[STATE] = proprio_state(q[None], self.kin, self.dt, self.pcfg, first_velocity=vel)[0]
        return obs


class EEAction(gym.Wrapper):
    """(dx, dy, dz) in [-1, 1] (or arm-joint deltas) + gripper -> 6 joint targets for the robot.

    EE mode: the step is scaled by `step_size_m` and added to the reference: the measured EE
    plus `lag_keep` of its lag behind the last commanded target. A soft position servo (the STS3215 with
    LeRobot's low P gain, and the MuJoCo model of it) sags under gravity by more than a small
    step, so steps from the *measured* pose ask for less than the sag and the arm stalls;
    steps from the commanded one accumulate (a held command on a stalled arm pushes up to
    1 / (1 - lag_keep) steps ahead; below 1, a controller that already closes the loop on the
    measured pose, as the oracle and a leader arm do, does not overshoot and hunt). The lag
    (commanded - measured) is cut to `max_lag_m` (contact or a blocked arm: no wind-up), and on
    an axis where the new step opposes the lag the lag is dropped, so a reversal answers at
    once; at reset it is the measured pose. The target is then kept within `max_step_m` of the
    measured EE, clamped to the workspace box and solved by IK (warm start: the measured
    joints; fingers held pointing down if `point_down`, turning a joint at most `MAX_TURN_RAD`
    per step for it: near full reach, where they cannot point down, an uncapped task swung the
    joints every step and the EE crept). A zero (dx, dy, dz) holds the joints last sent:
    re-solving from the sagged pose crept up to 31 mm in 10 idle steps. (A warm start from the
    joints last sent instead made a blocked arm alternate between two solutions.) Joint mode: deltas scaled by
    `robot.max_relative_target_deg`. Gripper: discrete 0 = close, 1 = stay, 2 = open, or a
    continuous delta of `gripper.step_deg` per unit.
    """

    def __init__(self, env: gym.Env, cfg: TrainConfig, kin: Kinematics):
        super().__init__(env)
        self.feature_spec = specs.action_spec(_spec_of(env, cfg), cfg)
        self.cfg, self.kin = cfg, kin
        self.ee = cfg.pipeline.ee_action
        self.discrete = cfg.pipeline.gripper.discrete
        n = self.feature_spec.action.shape[0]
        low, high = -np.ones(n, np.float32), np.ones(n, np.float32)
        if self.discrete:
            low[-1], high[-1] = CLOSE, OPEN
        self.action_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.ws_low, self.ws_high = np.asarray(self.ee.workspace_low), np.asarray(self.ee.workspace_high)
        self._q = np.zeros(6)  # measured joints
        self._commanded: np.ndarray | None = None  # the last EE target sent (None: from the measured EE)
        self._held: np.ndarray | None = None  # the arm joints last sent (None: from the measured joints)
        self._gripper_target = 0.0

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._q = np.asarray(obs[STATE], np.float64)[:NUM_JOINTS].copy()
        self._commanded = self._held = None
        self._gripper_target = float(self._q[GRIPPER])
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(self.joint_targets(action))
        self._q = np.asarray(obs[STATE], np.float64)[:NUM_JOINTS].copy()
        return obs, reward, terminated, truncated, info

    def ee_target(self, action: np.ndarray) -> np.ndarray:
        """Where the EE is sent for this action: reference + scaled step, at most `max_step_m`
        from the measured EE, clamped to the workspace."""
        delta = np.clip(np.asarray(action, np.float64)[:3], -1.0, 1.0) * self.ee.step_size_m
        current, _ = self.kin.fk(self._q)
        lag = np.zeros(3) if self._commanded is None else self._commanded - current
        lag[lag * delta < 0] = 0.0  # a step against the lag starts from where the arm is
        lag *= self.ee.lag_keep
        norm = np.linalg.norm(lag)
        if norm > self.ee.max_lag_m:
            lag *= self.ee.max_lag_m / norm
        step = lag + delta
        norm = np.linalg.norm(step)
        if norm > self.ee.max_step_m:
            step *= self.ee.max_step_m / norm
        return np.clip(current + step, self.ws_low, self.ws_high)

    def joint_targets(self, action) -> np.ndarray:
        action = np.asarray(action, np.float64).reshape(-1)
        if action.shape != self.action_space.shape:
            raise ValueError(
                f"action: expected shape {self.action_space.shape} {self.feature_spec.action.names}, "
                f"got {action.shape}"
            )
        q = self._q.copy()
        if self.ee.enabled and self._held is not None and not np.any(action[:3]):
            q[ARM] = self._held  # a zero step holds the joints: re-solving IK from the sagged pose creeps
        elif self.ee.enabled:
            down = np.array([0.0, 0.0, -1.0]) if self.ee.point_down else None
            self._commanded = target = self.ee_target(action)
            q = self.kin.ik(
                target, self._q, approach_dir=down, max_iters=20, restarts=False, max_turn_rad=MAX_TURN_RAD
            )
            if down is not None and np.linalg.norm(self.kin.fk(q)[0] - target) > IK_TOL_M:
                # fingers-down drove a joint into its limit short of the target: position first
                q = self.kin.ik(target, self._q, max_iters=20, restarts=False)
        else:
            q[ARM] += np.clip(action[ARM], -1.0, 1.0) * self.cfg.robot.max_relative_target_deg
        g = action[-1]
        if self.discrete:
            cmd = int(np.clip(np.rint(g), CLOSE, OPEN))
            if cmd != STAY:
                self._gripper_target = 0.0 if cmd == CLOSE else 100.0
        else:
            step = np.clip(g, -1.0, 1.0) * self.cfg.pipeline.gripper.step_deg
            self._gripper_target = float(np.clip(self._gripper_target + step, 0.0, 100.0))
        q[GRIPPER] = self._gripper_target
        q = self.kin.clip_state(q)
        self._held = q[ARM].copy()
        return q.astype(np.float32)


class Intervention(gym.Wrapper):
    """While the source returns an action, it replaces the policy's (info["is_intervention"]).

    Every step's info gets "is_intervention", "action" (what was applied, in the wrapped format)
    and "is_success". Source events: success / failure end the episode as terminated (success
    also sets reward 1 and is_success); rerecord truncates it with info["rerecord"] = True.
    The env's own success before any event is kept as "env_success", the events as
    "human_success" / "human_failure", and a source's held labelling key as "success_held".
    """

    def __init__(self, env: gym.Env, source: InterventionSource | None):
        super().__init__(env)
        self.feature_spec = getattr(env, "feature_spec", None)
        self.source = source
        self._obs = None

    def reset(self, **kwargs):
        if self.source is not None:
            self.source.reset()
        self._obs, info = self.env.reset(**kwargs)
        info.setdefault("is_success", False)
        return self._obs, info

    def step(self, action):
        human = self.source.action(self._obs, self) if self.source is not None else None
        applied = np.asarray(human if human is not None else action, np.float32)
        if applied.shape != self.action_space.shape:
            who = "the intervention source's action" if human is not None else "action"
            names = self.feature_spec.action.names if self.feature_spec else ""
            raise ValueError(f"{who}: expected shape {self.action_space.shape} {names}, got {applied.shape}")
        obs, reward, terminated, truncated, info = self.env.step(applied)
        self._obs = obs
        info = dict(info)
        info["is_intervention"] = human is not None
        info["action"] = applied.copy()
        info["is_success"] = info["env_success"] = bool(info.get("is_success", False))
        info["human_success"] = info["human_failure"] = False
        if self.source is not None:
            held = success_held(self.source)
            if held is not None:
                info["success_held"] = held
            events = self.source.events()
            info["human_success"], info["human_failure"] = (
                bool(events.get("success")),
                bool(events.get("failure")),
            )
            if events.get("success"):
                terminated, reward = True, max(float(reward), 1.0)
                info["is_success"] = True
            if events.get("failure"):
                terminated = True
            if events.get("rerecord"):
                truncated = True
                info["rerecord"] = True
        return obs, reward, terminated, truncated, info

    def close(self):
        if self.source is not None:
            self.source.close()
        super().close()


class ClassifierReward(gym.Wrapper):
    """Success from a reward classifier on the pipeline's images replaces the env's reward.

    Reward is 1 on success (the episode terminates), else 0: sparse, no shaping, no privileged
    state. The env's own termination (the sim's ground-truth success) is ignored; it stays in
    info["env_success"] so a sim run can show false successes. Success = the probability is
    >= threshold for `consecutive_frames` frames in a row, AND-ed with the optional state checks.
    The human's keys win: success -> reward 1, failure -> reward 0, both terminate; a key that
    contradicts the classifier on that step counts as a disagreement (and is saved as a label
    when `disagreements_dir` is set). info: "classifier_prob", "classifier_success",
    "classifier_disagreement", "is_success" (the decision).

    scorer: obs -> probability; `hilserl_ray.reward.model.Scorer` loads one (CPU).
    """

    def __init__(self, env: gym.Env, cfg: TrainConfig, scorer, threshold: float):
        super().__init__(env)
        self.feature_spec = getattr(env, "feature_spec", None)
        self.rcfg = cfg.pipeline.reward
        self.scorer = scorer
        self.detector = SuccessDetector(threshold, self.rcfg.consecutive_frames)
        names = list(_spec_of(env, cfg).observation[STATE].names)  # the state this step sees
        self._gripper = names.index("gripper.pos")
        self._ee_z = names.index("ee.z") if "ee.z" in names else None
        self.disagreements = 0
        self._saved = 0

    def reset(self, **kwargs):
        self.detector.reset()
        return self.env.reset(**kwargs)

    def state_ok(self, obs) -> bool:
        state = np.asarray(obs[STATE])
        if self.rcfg.max_gripper is not None and state[self._gripper] > self.rcfg.max_gripper:
            return False
        return not (self.rcfg.min_ee_height_m is not None and state[self._ee_z] < self.rcfg.min_ee_height_m)

    def step(self, action):
        obs, _, _, truncated, info = self.env.step(action)
        prob = float(self.scorer(obs))
        fired = self.detector.update(prob) and self.state_ok(obs)
        human_success, human_failure = bool(info.get("human_success")), bool(info.get("human_failure"))
        success = human_success or (fired and not human_failure)
        disagree = (human_success and not fired) or (human_failure and fired)
        if disagree:
            self.disagreements += 1
            if self.rcfg.disagreements_dir is not None:
                self._save_label(obs, human_success, prob)
        info = dict(info)
        info.update(
            classifier_prob=prob,
            classifier_success=fired,
            classifier_disagreement=disagree,
            is_success=success,
        )
        terminated = success or human_failure
        return obs, float(success), terminated, truncated, info

    def _save_label(self, obs, success: bool, prob: float) -> None:
        """One npz per disagreement: the classifier's input images, the human's label, its probability."""
        d = Path(self.rcfg.disagreements_dir)
        d.mkdir(parents=True, exist_ok=True)
        self._saved += 1
        keys = getattr(self.scorer, "keys", [k for k in obs if k.startswith(IMAGE_PREFIX)])
        meta = getattr(self.scorer, "meta", {})
        np.savez_compressed(
            d / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{self._saved:05d}.npz",
            label=np.bool_(success),
            prob=np.float32(prob),
            input_fingerprint=np.str_(meta.get("input_fingerprint", "")),
            **{k.replace(".", "__"): np.asarray(obs[k]) for k in keys},
        )


class GripperPenalty(gym.Wrapper):
    """info["discrete_penalty"]: `gripper.penalty` when the applied command flips the jaws
    (close while open, open while closed), else 0. Not added to the reward (HIL-SERL's grasp
    critic learns from it separately)."""

    def __init__(self, env: gym.Env, cfg: TrainConfig):
        super().__init__(env)
        self.feature_spec = getattr(env, "feature_spec", None)
        spec = _spec_of(env, cfg)
        self.discrete = spec.discrete_gripper
        self.penalty = float(cfg.pipeline.gripper.penalty)
        names = list(spec.observation[STATE].names or [])
        # the jaws' state at reset: the SO-101's gripper.pos; an env without it starts open
        self._gripper = names.index("gripper.pos") if "gripper.pos" in names else None
        self._open = True

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        g = self._gripper
        self._open = g is None or float(obs[STATE][g]) > GRIPPER_OPEN_ABOVE
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        penalty = 0.0
        if self.discrete:
            cmd = int(np.clip(np.rint(info.get("action", action)[-1]), CLOSE, OPEN))
            if (cmd == CLOSE and self._open) or (cmd == OPEN and not self._open):
                penalty = self.penalty
                self._open = cmd == OPEN
        info["discrete_penalty"] = penalty
        return obs, reward, terminated, truncated, info
