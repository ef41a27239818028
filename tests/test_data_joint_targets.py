"""LeRobot teleop datasets as recorded (absolute joint targets, degrees or range units) train as is.

The datasets are written in LeRobot's layout by the project's writer, as an so101_follower
records them (`<joint>.pos` names, no reward/done). Conversion decides the action format and
units itself, converts the targets with the FK-delta formula, reports once, caches per dataset
across runs, and turns a live leader-arm intervention into the same action as the dataset.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from fake_sts3215 import FakeBus, real_config, write_calibration, write_video

from hilserl_ray.buffer.replay import ReplayBuffer
from hilserl_ray.configio import load_config
from hilserl_ray.data import convert as convert_mod
from hilserl_ray.data.convert import convert, load_offline_datasets
from hilserl_ray.data.lerobot_reader import DatasetError
from hilserl_ray.data.lerobot_writer import LeRobotWriter
from hilserl_ray.data.synthetic import teleop_motion, write_teleop_dataset
from hilserl_ray.envs.kinematics import Kinematics
from hilserl_ray.envs.pipeline import pipeline_spec
from hilserl_ray.so101 import JOINT_NAMES

LENGTHS = [40, 25]
RENAME = {"observation.images.wrist": "observation.images.front"}


def narrow_calibration(path):
    """A follower calibration whose wrist_flex spans +-61.5 degrees (2048 +- 700 ticks)."""
    return write_calibration(path, ranges={"wrist_flex": (1348, 2748)})


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    return narrow_calibration(tmp_path_factory.mktemp("cal") / "follower.json")


@pytest.fixture(scope="module")
def degrees_ds(tmp_path_factory):
    return write_teleop_dataset(tmp_path_factory.mktemp("deg") / "ds", LENGTHS)


@pytest.fixture(scope="module")
def range_ds(tmp_path_factory, calib):
    # wrist_roll within +-60 degrees: nothing beyond +-100 gives the units away, the calibration does
    return write_teleop_dataset(
        tmp_path_factory.mktemp("rng") / "ds",
        LENGTHS,
        units="lerobot_range",
        calibration=calib,
        roll_peak=60.0,
    )


def make_cfg(root, **overrides):
    data = {
        "env.fps": 30,
        "env.cameras": [{"name": "front", "height": 48, "width": 64}],
        "pipeline.image.size": [32, 32],
        "dataset.path": str(root),
        "dataset.rename": RENAME,
    }
    data.update(overrides)
    return load_config(None, data)


def expected_actions(present, target, cfg):
    """The issue's formula, written out independently of the conversion code."""
    kin = Kinematics()
    p = cfg.pipeline
    if p.ee_action.enabled:
        arm = np.stack(
            [
                (kin.fk(t)[0] - kin.fk(q)[0]) / p.ee_action.step_size_m
                for q, t in zip(present, target, strict=True)
            ]
        )
    else:
        arm = (target[:, :5] - present[:, :5]) / cfg.robot.max_relative_target_deg
    dg = target[:, 5].astype(np.float64) - present[:, 5]
    if p.gripper.discrete:
        g = np.where(np.abs(dg) <= p.gripper.command_threshold, 1.0, np.where(dg > 0, 2.0, 0.0))
        return np.c_[np.clip(arm, -1, 1), g], (np.abs(arm) > 1).any(1)
    cont = np.c_[arm, dg / p.gripper.step_deg]
    return np.clip(cont, -1, 1), (np.abs(cont) > 1).any(1)


def transition_rows(lengths):
    last = np.cumsum(np.asarray(lengths) + 1) - 1
    return np.setdiff1d(np.arange(last[-1] + 1), last)


@pytest.mark.parametrize(
    "mode",
    [{}, {"pipeline.gripper.discrete": False}, {"pipeline.ee_action.enabled": False}],
    ids=["ee_discrete", "ee_continuous", "joint_delta"],
)
def test_converted_actions_equal_the_fk_delta_formula(degrees_ds, mode):
    cfg = make_cfg(degrees_ds, **mode)
    chunk, report = convert(cfg, progress=False)
    assert report["action_format"] == "joint_targets" and report["joint_units"] == "degrees"
    present = np.concatenate([teleop_motion(n, 110.0, seed=e)[0] for e, n in enumerate(LENGTHS)])
    target = np.concatenate([teleop_motion(n, 110.0, seed=e)[1] for e, n in enumerate(LENGTHS)])
    want, clipped = expected_actions(present.astype(np.float64), target.astype(np.float64), cfg)
    got = chunk["action"][transition_rows(LENGTHS)]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert report["clipped_frames"] == int(clipped.sum()) > 0  # the quick jerks outrun a step
    assert chunk["action"].shape[1] == pipeline_spec(cfg).action.shape[0]


def test_range_units_are_detected_from_the_calibration_and_give_the_same_data(degrees_ds, range_ds, calib):
    _, rep = convert(make_cfg(range_ds, **{"robot.calibration": str(calib)}), progress=False)
    assert rep["joint_units"] == "lerobot_range" and "calibrated range" in rep["units_reason"]
    # the same motion recorded in degrees: identical up to the float32 rounding of the range units
    deg_ds_small_roll = write_teleop_dataset(range_ds.parent / "deg60", LENGTHS, roll_peak=60.0)
    a, _ = convert(make_cfg(deg_ds_small_roll, **{"dataset.joint_units": "degrees"}), progress=False)
    b, _ = convert(make_cfg(range_ds, **{"robot.calibration": str(calib)}), progress=False)
    np.testing.assert_allclose(b["observation.state"], a["observation.state"], atol=2e-3)
    np.testing.assert_allclose(b["action"], a["action"], atol=1e-4)


def test_undecidable_units_stop_with_both_settings_named(range_ds):
    with pytest.raises(DatasetError) as e:  # no calibration: nothing tells range units from degrees
        convert(make_cfg(range_ds), progress=False)
    msg = str(e.value)
    assert "dataset.joint_units" in msg and "lerobot_range" in msg and "--robot.calibration" in msg
    assert "hilserl_ray.data.inspect" in msg


def test_joint_deltas_convert_like_the_targets_they_encode(degrees_ds, tmp_path):
    present, target = teleop_motion(30, 110.0, seed=0)
    names = [f"{j}.pos" for j in JOINT_NAMES]
    feats = {
        "observation.state": {"dtype": "float32", "shape": [6], "names": names},
        "action": {"dtype": "float32", "shape": [6], "names": None},
        "observation.images.wrist": {"dtype": "video", "shape": [48, 64, 3], "names": None},
    }
    with LeRobotWriter(tmp_path / "deltas", 30, feats, codec="h264") as w:
        for q, t in zip(present, target, strict=True):
            w.add_frame(
                {
                    "observation.state": q,
                    "action": t - q,
                    "observation.images.wrist": np.zeros((48, 64, 3), np.uint8),
                }
            )
        w.save_episode()
    chunk, rep = convert(make_cfg(tmp_path / "deltas"), progress=False)
    assert rep["action_format"] == "joint_deltas"  # decided from the values: means near 0, not the state's
    want, _ = expected_actions(
        present.astype(np.float64),
        (present + (target - present)).astype(np.float64),
        make_cfg(tmp_path / "deltas"),
    )
    np.testing.assert_allclose(chunk["action"][:30], want, atol=1e-5)


def test_report_once_cache_shared_across_runs_and_several_datasets(degrees_ds, tmp_path, monkeypatch, capsys):
    calls = []
    real = convert_mod.convert
    monkeypatch.setattr(convert_mod, "convert", lambda *a, **k: calls.append(1) or real(*a, **k))
    other = write_teleop_dataset(tmp_path / "other", [12], codec="h264")
    two = {"dataset.paths": [str(other)], "dataset.cache_dir": str(tmp_path / "shared")}
    first = load_offline_datasets(
        make_cfg(degrees_ds, output_dir=str(tmp_path / "run1"), **two), progress=False
    )
    printed = capsys.readouterr().out
    assert printed.count("joint_targets") == 2 and printed.count("clipped to [-1, 1]") == 2  # one report each
    # a new run (another output dir) on the same datasets and pipeline converts nothing again
    again = load_offline_datasets(
        make_cfg(degrees_ds, output_dir=str(tmp_path / "run2"), **two), progress=False
    )
    assert len(calls) == 2 and "clipped to" not in capsys.readouterr().out
    reports = sorted((tmp_path / "shared").glob("offline-*/report.txt"))
    assert len(reports) == 2 and "joint units: degrees" in reports[0].read_text()
    assert json.loads(reports[0].with_suffix(".json").read_text())["action_format"] == "joint_targets"
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["action"], b["action"])
    cfg = make_cfg(degrees_ds, **two)
    buf = ReplayBuffer(pipeline_spec(cfg), 1000)
    for chunk in again:
        buf.add_chunk(chunk)
    assert len(buf) == sum(LENGTHS) + 12  # every frame of both datasets is a sampleable transition


def test_clip_warning_above_a_few_percent(degrees_ds):
    _, rep = convert(make_cfg(degrees_ds, **{"pipeline.ee_action.step_size_m": 0.002}), progress=False)
    assert rep["clipped_fraction"] > 0.05
    assert "WARNING" in convert_mod.format_report(rep) and "step_size_m" in convert_mod.format_report(rep)
    _, calm = convert(make_cfg(degrees_ds, **{"pipeline.ee_action.step_size_m": 0.2}), progress=False)
    assert calm["clipped_fraction"] == 0 and "WARNING" not in convert_mod.format_report(calm)


@pytest.mark.parametrize("ee", [True, False], ids=["ee", "joint_delta"])
def test_leader_intervention_recorded_live_converts_like_the_same_motion_in_a_dataset(tmp_path, ee):
    """The leader arm on the real-robot pipeline (fake servo buses) vs a LeRobot dataset of it."""
    from hilserl_ray import rig
    from hilserl_ray.hardware.leader import LeaderSource

    reset = np.array([0.0, -20.0, 30.0, 70.0, 0.0, 30.0])
    with FakeBus() as fake, FakeBus() as leader_bus:
        cfg = real_config(
            fake.port,
            write_calibration(tmp_path / "c.json"),
            write_video(tmp_path / "cam.avi", width=64, height=48),
            env={"max_episode_steps": 20},
            pipeline={
                "image": {"size": [32, 32]},
                "ee_action": {"enabled": ee},
                "intervention": {
                    "source": "leader",
                    "leader_port": leader_bus.port,
                    "leader_calibration": str(write_calibration(tmp_path / "leader.json")),
                },
            },
        )
        env = rig.make_env(cfg, seed=0)
        try:
            src = env.get_wrapper_attr("env")
            while not isinstance(getattr(src, "source", None), LeaderSource):
                src = src.env
            src = src.source
            src.control = None  # engagement by moving the leader (no keyboard on CI)

            def move_leader(q):
                for name, value in src.leader.normalizer.to_raw(q).items():
                    leader_bus[list(src.leader.bus.motors).index(name) + 1].set_present(value)

            move_leader(reset)
            obs, _ = env.reset(seed=0)
            states, leaders, applied = [], [], []
            for k in range(8):  # the human sweeps the leader forward, closing the gripper
                move_leader(reset + [3.0 * k, 18.0 + 2 * k, 10.0, -2.0 * k, 0.0, -3.0 * k])
                state = obs["observation.state"][:6].copy()
                neutral = np.zeros(env.action_space.shape, np.float32)
                neutral[-1] = 1.0  # gripper: stay
                obs, *_, info = env.step(neutral)
                assert info["is_intervention"]
                states.append(state)
                leaders.append(src.last_leader.copy())
                applied.append(info["action"])
        finally:
            env.close()
    names = [f"{j}.pos" for j in JOINT_NAMES]
    feats = {
        "observation.state": {"dtype": "float32", "shape": [6], "names": names},
        "action": {"dtype": "float32", "shape": [6], "names": names},
        "observation.images.wrist": {"dtype": "video", "shape": [48, 64, 3], "names": None},
    }
    with LeRobotWriter(tmp_path / "ds", cfg.env.fps, feats, robot_type="so101_follower", codec="h264") as w:
        for s, q in zip(states, leaders, strict=True):
            w.add_frame(
                {
                    "observation.state": s,
                    "action": q,
                    "observation.images.wrist": np.zeros((48, 64, 3), np.uint8),
                }
            )
        w.save_episode()
    offline_cfg = cfg.model_copy(
        update={"dataset": cfg.dataset.model_copy(update={"path": tmp_path / "ds", "joint_units": "degrees"})}
    )
    chunk, rep = convert(offline_cfg, progress=False)
    assert rep["action_format"] == "joint_targets"
    np.testing.assert_array_equal(chunk["action"][:8], np.stack(applied))  # the same function, bit for bit
