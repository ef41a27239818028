"""env.type gym: registered gymnasium envs nobody here wrote, through the same pipeline, demos and runtime.

Real MuJoCo (lerobot_env_so101), seeded, a few steps each; the image variant (the env renders at
~2 steps/s on this CPU) runs a handful of steps through a local Ray in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import ray
import torch
from run_helpers import ROOT

from hilserl_ray import train
from hilserl_ray.config import TrainConfig
from hilserl_ray.configio import load_config
from hilserl_ray.data.convert import load_offline_transitions
from hilserl_ray.envs.pipeline import pipeline_spec
from hilserl_ray.errors import ConfigError
from hilserl_ray.gymenv.actions import CLOSE, OPEN, STAY, ActionMap
from hilserl_ray.gymenv.lerobot_experts import PickPlace
from hilserl_ray.gymenv.oracle import GymExpertSource
from hilserl_ray.gymenv.spaces import make_inner
from hilserl_ray.record import record
from hilserl_ray.rig import make_env
from hilserl_ray.runtime.learner import Learner

CONFIG = ROOT / "configs" / "lerobot_env_so101_pick_place.yaml"
PENDULUM_ID = "hilserl_test/PendulumDict-v0"


class DictObservation(gym.ObservationWrapper):
    """A flat Box observation as {"state": ...}: how any flat env joins (env.gym needs dict observations)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = gym.spaces.Dict({"state": env.observation_space})

    def observation(self, obs):
        return {"state": obs}


def pendulum_dict(**kwargs) -> gym.Env:
    return DictObservation(gym.make("Pendulum-v1", **kwargs))


if PENDULUM_ID not in gym.registry:
    gym.register(PENDULUM_ID, entry_point=pendulum_dict)


def pick_place(*overrides: str) -> TrainConfig:
    return load_config(
        CONFIG, ["--pipeline.intervention.source=none", "--buffer.online_ratio=1.0", *overrides]
    )


def test_the_spec_comes_from_the_envs_spaces():
    spec = pipeline_spec(pick_place("--env.gym.wrappers=[]"))
    assert spec.observation["observation.state"].shape == (14,)
    # the config's wrapper adds the jaws' measured opening to agent_pos
    state = pipeline_spec(pick_place()).observation["observation.state"]
    assert state.shape == (15,) and state.names[-1] == "agent_pos.14"
    assert spec.observation["observation.environment_state"].shape == (6,)
    assert spec.action.names == ("ee.dx", "ee.dy", "ee.dz", "gripper.command")
    assert spec.continuous_action_dim == 3 and spec.discrete_gripper
    # the image variant: pixels.front replaces environment_state; the pipeline resizes it
    spec = pipeline_spec(pick_place("--env.gym.kwargs.image_obs=true", "--pipeline.image.size=[48,48]"))
    assert set(spec.observation) == {"observation.state", "observation.images.front"}
    assert spec.observation["observation.images.front"].shape == (48, 48, 3)


@pytest.mark.parametrize(
    "override, key",
    [
        (
            "--env.gym.observation={agent_pos: observation.state}",
            "env.gym.observation: got 'environment_state'",
        ),
        ("--env.gym.id=lerobot_env_so101/NoSuchEnv-v0", "env.gym.id"),
        ("--env.gym.gripper=none", "env.gym.action_names"),
        ("--env.gym.expert=hilserl_ray.gymenv.lerobot_experts:Nope", "env.gym.expert"),
        ("--env.gym.wrappers=[hilserl_ray.gymenv.lerobot_obs:Nope]", "env.gym.wrappers"),
        ("--pipeline.image.crop={front: [0, 0, 64, 64]}", "pipeline.image.crop.front"),
    ],
)
def test_a_mismatch_is_a_named_error(override: str, key: str):
    with pytest.raises(ConfigError) as e:
        pick_place(override)
    assert key in str(e.value)


@pytest.mark.parametrize(
    "wrapper, why",
    [
        ("no_such_module:Jaw", "ModuleNotFoundError"),
        ("hilserl_ray.gymenv.lerobot_obs:Nope", "AttributeError"),
        ("hilserl_ray.gymenv.lerobot_obs.MeasuredJaw", "no ':' between module and name"),
        ("hilserl_ray.gymenv.lerobot_experts:reach_close", "a function, not a gymnasium.Wrapper subclass"),
        ("hilserl_ray.gymenv.lerobot_experts:PickPlace", "class PickPlace, not a gymnasium.Wrapper subclass"),
        ("gymnasium.wrappers:FilterObservation", "takes this env alone (TypeError"),  # needs filter_keys
    ],
)
def test_a_bad_wrapper_is_a_named_error_before_ray(wrapper: str, why: str, tmp_path, capsys):
    argv = [
        "--config",
        str(CONFIG),
        f"--output_dir={tmp_path}",
        "--dry-run",
        f"--env.gym.wrappers=[{wrapper}]",
    ]
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"env.gym.wrappers: got {wrapper!r}" in err and why in err, err
    assert not ray.is_initialized()


def test_the_action_map_both_ways():
    cfg = pick_place()
    m = ActionMap(cfg, gym.spaces.Box(np.array([-1, -1, -1, 0], np.float32), 1.0, dtype=np.float32))
    assert m.target == 1.0  # an absolute gripper starts open
    assert np.allclose(m.to_native([0.5, 0, -1, STAY]), [0.5, 0, -1, 1.0])
    assert m.to_policy([0.2, 0, 0, 0.0])[-1] == CLOSE  # the expert closes: a close command
    assert np.allclose(m.to_native([0, 0, 0, CLOSE]), [0, 0, 0, 0.0])
    assert m.to_policy([0, 0, 0, 0.0])[-1] == STAY and m.to_policy([0, 0, 0, 1.0])[-1] == OPEN
    wide = ActionMap(
        cfg.model_copy(
            update={
                "env": cfg.env.model_copy(
                    update={"gym": cfg.env.gym.model_copy(update={"gripper": "none", "action_names": None})}
                )
            }
        ),
        gym.spaces.Box(-2.0, 2.0, (1,), np.float32),
    )
    assert np.allclose(wide.to_native([0.5]), [1.0]) and np.allclose(wide.to_policy([-2.0]), [-1.0])


def run_episode(env, max_steps: int = 400) -> tuple[int, dict]:
    env.reset()
    for t in range(1, max_steps + 1):
        _, _, terminated, truncated, info = env.step(np.zeros(env.action_space.shape, np.float32))
        if terminated or truncated:
            return t, info
    return max_steps, info


def test_the_envs_own_expert_places_the_block_through_the_pipeline():
    cfg = pick_place("--pipeline.intervention.oracle.noise=0")
    env = make_env(cfg, seed=3, intervention=GymExpertSource(cfg, seed=3, always=True))
    try:
        steps, info = run_episode(env)
    finally:
        env.close()
    assert info["is_success"] and info["is_intervention"] and info["succeed"] and steps < 120


def test_the_measured_jaw_adds_one_value_to_agent_pos_and_its_space():
    """The wrapped env's agent_pos is the env's own 14 values and the jaw's measured opening; its
    space says 15, and the pipeline's spec is read from that space (test above)."""
    g = pick_place().env.gym
    wrapped, bare = make_inner(g), make_inner(g.model_copy(update={"wrappers": []}))
    assert wrapped.observation_space["agent_pos"].shape == (15,) and bare.observation_space[
        "agent_pos"
    ].shape == (14,)
    expert = PickPlace(bare.unwrapped)
    try:
        obs, _ = bare.reset(seed=1)
        mine, _ = wrapped.reset(seed=1)
        expert.reset()
        for _ in range(30):
            assert wrapped.observation_space.contains(mine)
            np.testing.assert_array_equal(mine["agent_pos"][:14], obs["agent_pos"])
            np.testing.assert_array_equal(mine["environment_state"], obs["environment_state"])
            action = expert(obs)
            obs, *_ = bare.step(action)
            mine, *_ = wrapped.step(action)
    finally:
        wrapped.close()
        bare.close()


def test_the_measured_jaw_shows_when_the_grip_has_closed():
    """agent_pos has the gripper's command only: right after a close and once the jaws sit on the
    block it reads the same, and the policy cannot tell when to lift. The wrapper's reading moves."""
    cfg = pick_place("--pipeline.intervention.oracle.noise=0")
    env = make_env(cfg, seed=3, intervention=GymExpertSource(cfg, seed=3, always=True))
    command, measured = [], []
    try:
        env.reset()
        for _ in range(40):
            obs, *_ = env.step(np.zeros(4, np.float32))
            command.append(obs["observation.state"][10])
            measured.append(obs["observation.state"][14])
    finally:
        env.close()
    closing = [t for t in range(1, 40) if command[t] < 0 < command[t - 1]]
    assert closing, "the expert closed the jaws"
    t = closing[0]
    assert command[t] == command[t + 1] == command[t + 5] == -1.0  # the command: shut throughout
    # the jaws: open at the command, closing over the next steps, then still on the block (not shut)
    assert measured[t - 1] > 0.9 and measured[t] > measured[t + 1] + 0.2 > measured[t + 2] + 0.4
    assert abs(measured[t + 5] - measured[t + 4]) < 0.01 and -0.9 < measured[t + 5] < 0.0


def test_the_oracles_noise_leaves_the_experts_holds_still():
    """The env holds its pose only on an exactly zero move; its controller closes and opens the jaws
    so. Noise there let the grip drift: 15 of 20 placed with noise 0.1, 20 of 20 without it."""
    cfg = pick_place("--pipeline.intervention.oracle.noise=0.1")
    env = make_env(cfg, seed=3, intervention=GymExpertSource(cfg, seed=3, always=True))
    held, placed = 0, 0
    try:
        for _ in range(3):
            env.reset()
            for _ in range(300):
                _, _, terminated, truncated, info = env.step(np.zeros(4, np.float32))
                held += not np.any(info["action"][:3])
                if terminated or truncated:
                    break
            placed += info["succeed"]
    finally:
        env.close()
    assert placed == 3 and held >= 3 * 10  # the close phase holds still for 10 steps


@pytest.mark.parametrize("takeover_at", [30, 35])  # the controller lifting, carrying the block
def test_the_envs_expert_taken_over_mid_task_still_places_the_block(takeover_at: int):
    """A takeover resets the expert wherever the task is: holding the block, it must not drop it and
    aim its next grasp at the height it was carried to (the env's controller alone: 0 of 10)."""
    env = gym.make("lerobot_env_so101/SO101PickPlace-v0", random_block_position=True, action_scale=0.025)
    expert = PickPlace(env.unwrapped)
    placed = 0
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        expert.reset()
        for t in range(300):
            if t == takeover_at:
                assert expert.held()
                expert.reset()
            obs, _, terminated, truncated, info = env.step(expert(obs))
            if terminated or truncated:
                break
        placed += info["succeed"]
    env.close()
    assert placed == 3


@pytest.mark.parametrize("rise", [0.02, 0.05])  # metres above the table: lifting, carrying
def test_a_takeover_with_the_block_in_the_air_finishes_the_place_within_20_steps(rise: float):
    """Taken over while the block is carried, the expert goes on with the lift, traverse, lower and
    release: a 20-step correction places it. It gripped in the air for 10 still steps first (21 to 31)."""
    env = gym.make("lerobot_env_so101/SO101PickPlace-v0", random_block_position=True, action_scale=0.025)
    expert = PickPlace(env.unwrapped)
    try:
        for seed in range(3):
            obs, _ = env.reset(seed=seed)
            expert.reset()
            table_z = env.unwrapped.goal_pos[2]
            while expert.block()[2] < table_z + rise:
                obs, *_ = env.step(expert(obs))
            assert expert.held()
            expert.reset()  # the takeover
            for t in range(1, 21):
                action = expert(obs)
                assert t > 1 or np.any(action[:3]), "it moves on at once, no grip in the air"
                obs, _, terminated, truncated, info = env.step(action)
                if terminated or truncated:
                    break
            assert info["succeed"], f"seed {seed}: not placed within 20 steps"
    finally:
        env.close()


def test_a_flat_box_env_and_pick_cube_run_through_the_same_code():
    cfg = TrainConfig.model_validate(
        {
            "env": {
                "type": "gym",
                "max_episode_steps": 20,
                "gym": {"id": PENDULUM_ID, "observation": {"state": "observation.state"}},
            },
            "buffer": {"online_ratio": 1.0},
        }
    )
    spec = pipeline_spec(cfg)
    assert spec.observation["observation.state"].shape == (3,)
    assert spec.action.names == ("action.0",) and not spec.discrete_gripper
    env = make_env(cfg, seed=0)
    try:
        steps, info = run_episode(env)
        assert steps == 20 and not info["is_success"]  # truncated by the time limit
        assert env.action_space.shape == (1,) and np.all(env.action_space.high == 1.0)
    finally:
        env.close()

    cube = pick_place(
        "--env.gym.id=lerobot_env_so101/SO101PickCube-v0",
        "--env.gym.kwargs={random_block_position: true, action_scale: 0.025}",
        "--env.gym.expert=hilserl_ray.gymenv.lerobot_experts:reach_close",
        "--env.gym.wrappers=[]",  # its expert reads the env's own 17 values
        "--env.max_episode_steps=15",
    )
    assert pipeline_spec(cube).observation["observation.environment_state"].shape == (3,)
    env = make_env(cube, seed=0, intervention=GymExpertSource(cube, seed=0, always=True))
    try:
        start, _ = env.reset()
        for _ in range(15):
            obs, _, terminated, truncated, info = env.step(np.zeros(4, np.float32))
            if terminated or truncated:
                break
        ee = slice(11, 14)
        block = obs["observation.environment_state"]
        # the reach-and-close expert brought the end effector towards the block
        assert np.linalg.norm(obs["observation.state"][ee] - block) < np.linalg.norm(
            start["observation.state"][ee] - block
        )
        assert info["is_intervention"]
    finally:
        env.close()


def test_record_with_the_expert_writes_demos_training_reads(tmp_path):
    cfg = load_config(CONFIG, [f"--output_dir={tmp_path / 'run'}", "--seed=5"])
    out = record(cfg, 2, tmp_path / "demos", codec="h264", progress=False)
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 2 and info["features"]["observation.state"]["shape"] == [15]
    chunk = load_offline_transitions(
        cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"path": out, "cache": False})}),
        progress=False,
    )
    frames = ~chunk["is_last"]
    assert chunk["observation.state"].shape[1] == 15 and chunk["observation.environment_state"].shape[1] == 6
    assert chunk["is_intervention"][frames].all() and chunk["reward"].sum() == 2.0
    assert set(np.unique(chunk["action"][frames, 3])) <= {CLOSE, STAY, OPEN}


def test_the_learner_scales_an_unbounded_state_by_the_demos(tmp_path):
    """agent_pos and environment_state are Boxes without bounds and their names are the env's own:
    left in raw units a block's centimetres are ~0.01 beside joint velocities of several units, and
    the critic cannot tell where the block is. Their range comes from the demos."""
    cfg = load_config(CONFIG, [f"--output_dir={tmp_path / 'run'}", "--seed=5", "--policy.hidden_dims=[8]"])
    demos = record(cfg, 2, tmp_path / "demos", codec="h264", progress=False)
    cfg = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"path": demos, "cache": False})})
    chunk = load_offline_transitions(cfg, progress=False)
    learner = Learner(cfg.model_dump(mode="json"))
    try:
        norm = learner.agent.policy.encoder.normalizer
        for key in ("observation.state", "observation.environment_state"):
            x = norm.vector(key, torch.tensor(chunk[key])).numpy()
            assert np.all(np.abs(x) <= 1.0 + 1e-5), key
            moving = np.ptp(chunk[key], axis=0) > 1e-3
            assert np.allclose(x.min(0)[moving], -1.0, atol=1e-5) and np.allclose(
                x.max(0)[moving], 1.0, atol=1e-5
            )
            assert np.allclose(x[:, ~moving], 0.0, atol=1e-5)  # the goal's height: a constant stays 0
    finally:
        learner.close()


@pytest.mark.ray
@pytest.mark.subprocess
def test_the_image_variant_trains_through_ray(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    cmd = [
        sys.executable,
        "-m",
        "hilserl_ray.train",
        "--config",
        str(CONFIG),
        f"--output_dir={out}",
        "--env.gym.kwargs.image_obs=true",
        "--pipeline.image.size=[32,32]",
        "--total_env_steps=24",
        "--env.max_episode_steps=12",
        "--learner.training_starts=8",
        "--actors.env_steps_per_update=null",
        "--policy.batch_size=8",
        "--policy.hidden_dims=[32,32]",
        "--policy.latent_dim=16",
        "--learner.weights_every=2",
        "--checkpoint.every_updates=5",
        "--logging.every_seconds=1",
        "--logging.tensorboard=false",
        "--pipeline.intervention.oracle.episode_probability=1.0",
        "--ray.num_cpus=2",
    ]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert rows[-1]["env_steps"] >= 24 and rows[-1]["episodes"] >= 2
    assert rows[-1]["intervention_steps"] > 0
    assert (out / "checkpoints").is_dir()
