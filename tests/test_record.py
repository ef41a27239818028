"""`python -m hilserl_ray.record` in the real MuJoCo sim with the scripted oracle, then conversion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hilserl_ray.configio import load_config
from hilserl_ray.data.convert import convert
from hilserl_ray.data.lerobot_reader import LeRobotReader
from hilserl_ray.envs.pipeline import pipeline_spec
from hilserl_ray.record import main, record

STEPS = 40  # the scripted expert picks the cube in about 15-20 steps


def sim_cfg(tmp_path, **overrides):
    data = {
        "env.task": "pick_cube",
        "env.max_episode_steps": STEPS,
        "env.cameras": [{"name": "gripper_cam", "width": 64, "height": 48}],
        "pipeline.image.size": [32, 32],
        "pipeline.intervention.source": "oracle",
        "pipeline.intervention.oracle.episode_probability": 1.0,
        "output_dir": str(tmp_path / "run"),
    }
    data.update(overrides)
    return load_config(None, data)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rec")
    cfg = sim_cfg(tmp)
    out = record(cfg, 2, tmp / "demos", codec="h264", progress=False)
    return cfg, out


def test_record_writes_a_lerobot_v3_dataset_of_raw_robot_data(recorded):
    cfg, out = recorded
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 2 and info["fps"] == 10
    f = info["features"]
    assert f["observation.state"]["shape"] == [6]  # raw joints, not the 18-dim pipeline state
    assert f["observation.state"]["names"][0] == "shoulder_pan.pos"
    assert f["observation.images.gripper_cam"]["shape"] == [48, 64, 3]  # the raw camera, not 32x32
    assert f["action"]["shape"] == [4]
    for k in (
        "next.reward",
        "next.done",
        "complementary_info.is_intervention",
        "complementary_info.discrete_penalty",
    ):
        assert k in f
    r = LeRobotReader(out)
    assert all(e.length <= STEPS for e in r.episodes)
    cols = r.read(["observation.state", "action", "next.done", "complementary_info.is_intervention"])
    ends = np.cumsum([e.length for e in r.episodes]) - 1
    assert np.flatnonzero(cols["next.done"]).tolist() == ends.tolist()
    assert cols["complementary_info.is_intervention"].all()  # the expert acted on every step
    assert all(e.length < STEPS for e in r.episodes)  # ... and succeeded before the time limit
    assert np.isin(cols["action"][:, 3], [0, 1, 2]).all() and (np.abs(cols["action"][:, :3]) <= 1).all()
    assert np.abs(cols["observation.state"][:, :5]).max() < 180  # degrees, not radians
    assert sum(1 for _ in r.frames("observation.images.gripper_cam")) == sum(e.length for e in r.episodes)


def test_recorded_dataset_converts_for_any_pipeline_settings(recorded, tmp_path):
    cfg, out = recorded
    for overrides in (
        {},
        {"pipeline.proprio": {"joint_velocity": False, "ee_pose": False}, "pipeline.image.size": [16, 16]},
    ):
        c = sim_cfg(tmp_path, **{"dataset.path": str(out), **overrides})
        spec = pipeline_spec(c)
        chunk, summary = convert(c, spec, progress=False)
        assert summary["missing"] == []
        assert chunk["observation.state"].shape[1] == spec.observation["observation.state"].shape[0]
        assert (
            chunk["observation.images.gripper_cam"].shape[1:]
            == spec.observation["observation.images.gripper_cam"].shape
        )


def test_success_ends_terminated_and_the_time_limit_truncated(recorded, tmp_path):
    cfg, out = recorded
    chunk, _ = convert(sim_cfg(tmp_path, **{"dataset.path": str(out)}), progress=False)
    ends = np.flatnonzero(chunk["is_last"]) - 1
    assert (
        chunk["terminated"][ends].all()
        and (chunk["reward"][ends] == 1).all()
        and not chunk["truncated"].any()
    )

    short = sim_cfg(tmp_path, **{"env.max_episode_steps": 6})
    out = record(short, 1, tmp_path / "short", codec="h264", progress=False)
    cols = LeRobotReader(out).read(["next.done", "complementary_info.truncated", "next.reward"])
    assert (
        cols["next.done"][-1] and cols["complementary_info.truncated"][-1] and cols["next.reward"].sum() == 0
    )
    chunk, _ = convert(
        sim_cfg(tmp_path, **{"dataset.path": str(out), "env.max_episode_steps": 6}), progress=False
    )
    assert chunk["truncated"][5] and not chunk["terminated"].any()  # bootstraps from its last observation


def test_cli_refuses_a_config_without_an_acting_source(tmp_path, capsys):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("env:\n  cameras: []\nbuffer:\n  online_ratio: 1.0\n")
    assert main(["--config", str(cfg_file), "--episodes", "1", "--out", str(tmp_path / "d")]) == 2
    assert "pipeline.intervention.source" in capsys.readouterr().err


def test_cli_without_a_source_names_what_record_needs_not_a_training_rule(tmp_path, capsys):
    """buffer.online_ratio < 1 without a source is training's rule: record fills no buffer."""
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("env:\n  cameras: []\nbuffer:\n  online_ratio: 0.5\n")
    assert main(["--config", str(cfg_file), "--episodes", "1", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "buffer.online_ratio" not in err and "Traceback" not in err, err
    assert "pipeline.intervention.source: got 'none'; record needs a source that acts" in err
    assert "--pipeline.intervention.source=oracle" in err


class Replay:
    """An intervention source that replays recorded actions."""

    def __init__(self, actions):
        self.actions = iter(actions)

    def reset(self):
        pass

    def action(self, obs, env):
        return next(self.actions)

    def events(self):
        return {"success": False, "failure": False, "rerecord": False}

    def close(self):
        pass


def test_converted_observations_equal_the_live_envs(recorded, tmp_path):
    """Replaying the recorded actions in the same seeded sim gives the observations conversion made."""
    from hilserl_ray.rig import make_env

    cfg, out = recorded
    c = sim_cfg(tmp_path, **{"dataset.path": str(out)})
    chunk, _ = convert(c, pipeline_spec(c), progress=False)
    r = LeRobotReader(out)
    actions = r.read(["action"])["action"]
    env = make_env(c, seed=c.seed, intervention=Replay(actions))
    live = []
    try:
        for i, e in enumerate(r.episodes):
            obs, _ = env.reset(seed=c.seed) if i == 0 else env.reset()
            for _ in range(e.length):
                live.append(obs)
                obs, *_ = env.step(actions[0])
            live.append(obs)  # the final observation (the is_last row repeats the last frame's)
    finally:
        env.close()
    rows = np.flatnonzero(~chunk["is_last"])
    last = set(np.flatnonzero(chunk["is_last"]).tolist())
    live_rows = [o for k, o in enumerate(live) if k not in last]
    state = np.stack([o["observation.state"] for o in live_rows])
    np.testing.assert_allclose(chunk["observation.state"][rows], state, atol=1e-4)
    img = np.stack([o["observation.images.gripper_cam"] for o in live_rows]).astype(int)
    diff = np.abs(chunk["observation.images.gripper_cam"][rows].astype(int) - img)
    assert diff.mean() < 3.0, diff.mean()  # the video is lossy; the pipeline is the same
    shifted = np.abs(chunk["observation.images.gripper_cam"][rows[1:]].astype(int) - img[:-1]).mean()
    assert diff.mean() < 0.6 * shifted  # and each row's image is its own step's, not a neighbour's


def test_cli_records_with_the_shipped_sim_config(tmp_path, capsys):
    out = tmp_path / "demos"
    argv = [
        "--config",
        str(Path(__file__).parents[1] / "configs/sim_pick_cube.yaml"),
        "--episodes",
        "1",
        "--out",
        str(out),
        "--codec",
        "h264",
    ]
    assert main([*argv, "--no-progress", "--env.max_episode_steps=5"]) == 0
    assert f"--dataset.path={out}" in capsys.readouterr().out
    r = LeRobotReader(out)
    assert [e.length for e in r.episodes] == [5] and r.video_keys == ["observation.images.gripper_cam"]
    assert main(argv) == 2  # never overwrites a dataset


def test_state_only_reach_demos_keep_the_environment_state(tmp_path):
    """A state-only sim task observes the target (observation.environment_state): demos must too."""
    reach = {"env.task": "reach", "env.cameras": [], "env.max_episode_steps": 20}
    cfg = sim_cfg(tmp_path, **reach)
    spec = pipeline_spec(cfg)
    assert "observation.environment_state" in spec.observation
    out = record(cfg, 1, tmp_path / "reach", codec="h264", progress=False)
    chunk, _ = convert(sim_cfg(tmp_path, **reach, **{"dataset.path": str(out)}), spec)
    env_state = chunk["observation.environment_state"]
    assert env_state.shape[1:] == (3,) and np.all(np.isfinite(env_state))
    assert (
        np.ptp(env_state[~chunk["is_last"]], axis=0).max() < 1e-6
    )  # the target stays put within the episode
