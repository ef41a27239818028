"""The wrapper pipeline: EE action + workspace clamp, proprioception, images, intervention, gripper."""

from __future__ import annotations

import numpy as np
import pytest
from run_helpers import find_wrapper

from hilserl_ray.config import TrainConfig
from hilserl_ray.envs.intervention import InterventionSource, no_events
from hilserl_ray.envs.kinematics import Kinematics
from hilserl_ray.envs.pipeline import pipeline_spec
from hilserl_ray.envs.transforms import process_image, proprio_state
from hilserl_ray.rig import make_env
from hilserl_ray.so101 import CLOSE, OPEN, STAY

STATE = "observation.state"
KIN = Kinematics()


def cfg_for(task="pick_cube", cameras=(), **sections) -> TrainConfig:
    env = {"task": task, "cameras": [{"name": c, "height": 96, "width": 128} for c in cameras]}
    env.update(sections.pop("env", {}))
    return TrainConfig.model_validate({"env": env, "buffer": {"online_ratio": 1.0}, **sections})


def ee(obs) -> np.ndarray:
    return obs[STATE][12:15].astype(np.float64)


# ------------------------------------------------------------------------------ EE action
def test_ee_action_moves_the_gripper_by_the_step_size():
    cfg = cfg_for(env={"reset_noise": 0.0})
    env = make_env(cfg, seed=0)
    obs, _ = env.reset(seed=0)
    x0 = ee(obs)
    for _ in range(3):
        obs, *_ = env.step(np.array([0.5, 0.0, 0.0, STAY], np.float32))
    moved = ee(obs) - x0
    assert moved[0] == pytest.approx(3 * 0.5 * cfg.pipeline.ee_action.step_size_m, abs=0.006)
    assert abs(moved[1]) < 0.004 and abs(moved[2]) < 0.004
    env.close()


def test_workspace_clamp_and_max_step():
    cfg = cfg_for(
        env={"max_episode_steps": 40},
        pipeline={
            "ee_action": {
                "workspace_low": [0.15, -0.1, 0.04],
                "workspace_high": [0.30, 0.1, 0.12],
                "step_size_m": 0.05,
                "max_step_m": 0.015,
            }
        },
    )
    env = make_env(cfg, seed=0)
    obs, _ = env.reset(seed=0)
    inner = env.unwrapped
    ee_wrapper = find_wrapper(env, "EEAction")
    target = ee_wrapper.ee_target(np.array([1.0, 1.0, 1.0, 1.0]))
    assert np.linalg.norm(target - inner.ee_pos()) <= 0.015 + 1e-9  # max jump per step
    for direction in ([1, 1, 1], [-1, -1, -1]):
        for _ in range(25):
            obs, *_ = env.step(np.array([*direction, STAY], np.float32))
        pos = inner.ee_pos()
        lo, hi = np.array([0.15, -0.1, 0.04]), np.array([0.30, 0.1, 0.12])
        assert np.all(pos >= lo - 0.004) and np.all(pos <= hi + 0.004)  # clamped (+ tracking error)
        corner = hi if direction[0] > 0 else lo
        assert np.linalg.norm(pos - corner) < 0.01  # and it got there
    env.close()


def test_joint_delta_mode_and_continuous_gripper():
    cfg = cfg_for(pipeline={"ee_action": {"enabled": False}, "gripper": {"discrete": False, "step_deg": 8}})
    spec = pipeline_spec(cfg)
    assert spec.action.shape == (6,) and not spec.discrete_gripper
    env = make_env(cfg, seed=0)
    obs, _ = env.reset(seed=0)
    q0 = obs[STATE][:6].copy()
    a = np.array([0.5, 0, 0, 0, 0, 1.0], np.float32)  # pan +5 degrees, gripper +8 (< the step limit)
    for _ in range(2):
        obs, *_ = env.step(a)
    # relative to the measured joints each step (a small overshoot of the servo model adds up)
    assert obs[STATE][0] - q0[0] == pytest.approx(2 * 0.5 * cfg.robot.max_relative_target_deg, abs=2.0)
    assert obs[STATE][5] - q0[5] == pytest.approx(16.0, abs=4.0)
    with pytest.raises(ValueError, match="expected shape"):
        env.step(np.zeros(4, np.float32))
    env.close()


# ------------------------------------------------------------------------- proprioception
def test_proprioception_matches_direct_fk_and_finite_differences():
    cfg = cfg_for()
    env = make_env(cfg, seed=1)
    obs, _ = env.reset(seed=1)
    dt = 1.0 / cfg.env.fps
    np.testing.assert_array_equal(obs[STATE][6:12], 0.0)  # velocity 0 on the first step
    rows = [obs[STATE]]
    for a in ([1, 0, 0, OPEN], [0, 1, -1, STAY], [-1, 0, 1, CLOSE]):
        obs, *_ = env.step(np.array(a, np.float32))
        rows.append(obs[STATE])
    rows = np.array(rows)
    q = rows[:, :6].astype(np.float64)
    np.testing.assert_allclose(q[-1], env.unwrapped.joint_state(), atol=1e-4)
    np.testing.assert_allclose(rows[1:, 6:12], np.diff(q, axis=0) / dt, rtol=1e-4, atol=1e-3)
    pos, euler = KIN.fk(q)
    np.testing.assert_allclose(rows[:, 12:15], pos, atol=1e-5)
    np.testing.assert_allclose(rows[:, 15:18], euler, atol=1e-5)
    np.testing.assert_allclose(rows[-1, 12:15], env.unwrapped.ee_pos(), atol=1e-5)  # FK = the sim's site
    # the offline conversion function gives the same rows from the joint positions alone
    np.testing.assert_allclose(proprio_state(q, KIN, dt, cfg.pipeline.proprio), rows, atol=1e-3)
    env.close()


def test_proprio_state_options_and_first_velocity():
    q = np.random.default_rng(0).uniform(-30, 30, (5, 6))
    cfg = cfg_for().pipeline.proprio
    out = proprio_state(q, KIN, 0.1, cfg, first_velocity=np.full(6, 7.0))
    assert out.shape == (5, 18) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 6:12], 7.0)
    only_pos = proprio_state(q, KIN, 0.1, cfg.model_copy(update={"joint_velocity": False, "ee_pose": False}))
    np.testing.assert_allclose(only_pos, q, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(T, 6\)"):
        proprio_state(q[:, :5], KIN, 0.1, cfg)


# --------------------------------------------------------------------------------- images
def test_process_image_crop_then_resize():
    img = np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3)
    assert process_image(img, None, (32, 32)).shape == (32, 32, 3)
    out = process_image(img, (4, 8, 40, 40), (40, 40))
    np.testing.assert_array_equal(out, img[4:44, 8:48])  # crop only when the size already matches
    batch = process_image(np.stack([img, img]), (0, 0, 24, 32), (12, 16))
    assert batch.shape == (2, 12, 16, 3) and batch.dtype == np.uint8
    with pytest.raises(ValueError, match="pipeline.image.crop"):
        process_image(img, (40, 0, 20, 20), (8, 8))
    with pytest.raises(ValueError, match="uint8"):
        process_image(img.astype(np.float32), None, (8, 8))


def test_env_crop_and_resize_are_independent():
    crop = {"front": [10, 20, 60, 60]}
    for image_cfg, shape in [
        ({"size": [48, 48]}, (48, 48, 3)),
        ({"size": [32, 40], "crop": crop}, (32, 40, 3)),
        ({"size": [60, 60], "crop": crop}, (60, 60, 3)),
    ]:
        cfg = cfg_for(cameras=("front", "gripper_cam"), pipeline={"image": image_cfg})
        env = make_env(cfg, seed=0)
        obs, _ = env.reset(seed=0)
        assert obs["observation.images.front"].shape == shape
        assert obs["observation.images.gripper_cam"].shape == (*image_cfg["size"], 3)
        pipeline_spec(cfg).check_observation(obs)
        env.close()


def test_crop_takes_the_configured_region_of_the_raw_frame():
    cfg = cfg_for(
        cameras=("front",), pipeline={"image": {"size": [60, 60], "crop": {"front": [10, 20, 60, 60]}}}
    )
    env = make_env(cfg, seed=0)
    obs, _ = env.reset(seed=0)
    raw = env.unwrapped._obs()["observation.images.front"]
    np.testing.assert_array_equal(obs["observation.images.front"], raw[10:70, 20:80])
    env.close()


# ---------------------------------------------------------------------------- intervention
class ScriptedHuman:
    """A fake human: takes over on chosen steps and raises chosen events."""

    def __init__(self, engage_steps=(), action=(0.0, 0.0, 1.0, OPEN), events_at=None):
        self.engage_steps, self.human_action = set(engage_steps), np.array(action, np.float32)
        self.events_at = events_at or {}
        self.t, self.resets, self.closed = 0, 0, False
        self._pending = no_events()

    def reset(self):
        self.t, self.resets = 0, self.resets + 1

    def action(self, obs, env):
        self.t += 1
        self._pending = no_events()
        if self.t in self.events_at:
            self._pending[self.events_at[self.t]] = True
        return self.human_action.copy() if self.t in self.engage_steps else None

    def events(self):
        out, self._pending = self._pending, no_events()
        return out

    def close(self):
        self.closed = True


def test_intervention_replaces_the_action_and_sets_the_flags():
    human = ScriptedHuman(engage_steps={2, 3})
    assert isinstance(human, InterventionSource)
    env = make_env(cfg_for(env={"max_episode_steps": 10}), seed=0, intervention=human)
    obs, _ = env.reset(seed=0)
    assert human.resets == 1
    policy = np.array([0.0, 0.0, -1.0, CLOSE], np.float32)
    z = [ee(obs)[2]]
    flags, applied = [], []
    for _ in range(4):
        obs, reward, terminated, truncated, info = env.step(policy)
        flags.append(info["is_intervention"])
        applied.append(info["action"])
        z.append(ee(obs)[2])
        assert info["action"].dtype == np.float32 and info["action"].shape == (4,)
    assert flags == [False, True, True, False]
    np.testing.assert_array_equal(applied[0], policy)
    np.testing.assert_array_equal(applied[1], human.human_action)
    assert z[1] < z[0] and z[3] > z[2] > z[1]  # the human's "up" really drove the arm
    env.close()
    assert human.closed


@pytest.mark.parametrize(
    ("event", "terminated", "truncated", "success"),
    [("success", True, False, True), ("failure", True, False, False), ("rerecord", False, True, False)],
)
def test_intervention_events_end_the_episode(event, terminated, truncated, success):
    human = ScriptedHuman(events_at={2: event})
    env = make_env(cfg_for(), seed=0, intervention=human)
    env.reset(seed=0)
    _, _, term, trunc, info = env.step(np.zeros(4, np.float32) + [0, 0, 0, STAY])
    assert not term and not trunc and "rerecord" not in info
    _, reward, term, trunc, info = env.step(np.zeros(4, np.float32) + [0, 0, 0, STAY])
    assert (term, trunc, info["is_success"]) == (terminated, truncated, success)
    assert info.get("rerecord", False) == (event == "rerecord")
    if success:
        assert reward >= 1.0
    env.close()


# ------------------------------------------------------------------ gripper, time limit, info
def test_gripper_penalty_only_on_flips_and_time_limit():
    cfg = cfg_for(env={"max_episode_steps": 6}, pipeline={"gripper": {"penalty": -0.05}})
    env = make_env(cfg, seed=0)
    env.reset(seed=0)  # reset pose: gripper at 30, open
    penalties, truncs = [], []
    for cmd in (OPEN, CLOSE, CLOSE, STAY, OPEN, OPEN):
        _, reward, terminated, truncated, info = env.step(np.array([0, 0, 0, cmd], np.float32))
        penalties.append(info["discrete_penalty"])
        truncs.append(truncated)
        assert reward == 0.0 and not terminated  # the penalty is not in the reward
        assert set(info) >= {"is_success", "is_intervention", "action", "discrete_penalty"}
    assert penalties == [0.0, -0.05, 0.0, 0.0, -0.05, 0.0]
    assert truncs == [False] * 5 + [True]
    env.close()


def test_discrete_gripper_closes_and_opens_the_jaws():
    env = make_env(cfg_for(), seed=0)
    obs, _ = env.reset(seed=0)
    for cmd, check in ((OPEN, lambda g: g > 90), (STAY, lambda g: g > 90), (CLOSE, lambda g: g < 10)):
        for _ in range(12):  # end to end in ~10 steps: robot.max_relative_target_deg (10) per step
            obs, *_ = env.step(np.array([0, 0, 0, cmd], np.float32))
        assert check(obs[STATE][5]), (cmd, obs[STATE][5])
    env.close()
