"""`inspect` tells a LeRobot user the overrides that fit; `export` writes a run back as LeRobot data;
`import hilserl_ray` registers the gymnasium ids."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_sts3215 import write_calibration
from run_helpers import ENV, ROOT, train_command

from hilserl_ray import train
from hilserl_ray.buffer.replay import ReplayBuffer
from hilserl_ray.configio import load_config, parse_overrides, write_config
from hilserl_ray.data import export, inspect
from hilserl_ray.data.convert import load_offline_datasets
from hilserl_ray.data.lerobot_reader import LeRobotReader
from hilserl_ray.data.synthetic import write_teleop_dataset
from hilserl_ray.envs.pipeline import pipeline_spec

PICK = str(ROOT / "configs" / "sim_pick_cube.yaml")
LENGTHS = [30, 20]


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    return write_calibration(tmp_path_factory.mktemp("cal") / "f.json", ranges={"wrist_flex": (1348, 2748)})


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, calib):
    root = tmp_path_factory.mktemp("teleop")
    return {
        "degrees": write_teleop_dataset(root / "deg", LENGTHS),
        "lerobot_range": write_teleop_dataset(
            root / "rng", LENGTHS, units="lerobot_range", calibration=calib, roll_peak=60.0
        ),
    }


def train_args_printed(out: str) -> list[str]:
    """The arguments of the `python -m hilserl_ray.train ...` line that inspect prints."""
    line = out.split("train with:\n", 1)[1].strip().splitlines()[0]
    words = shlex.split(line)
    return words[words.index("hilserl_ray.train") + 1 :]


def test_inspect_describes_the_dataset(datasets, capsys):
    assert inspect.main([str(datasets["degrees"])]) == 0
    out = capsys.readouterr().out
    for text in (
        "2 episodes, 50 frames",
        "min 20 / mean 25.0 / max 30",
        "fps 30",
        "observation.images.wrist",
        "video 48x64, codec av1",
        "shoulder_pan.pos",
        "range ",
        "action format: joint_targets",
        "joint units: degrees",
    ):
        assert text in out, text


@pytest.mark.parametrize("units", ["degrees", "lerobot_range"])
def test_train_starts_with_only_the_overrides_inspect_prints(datasets, calib, units, capsys, tmp_path):
    ds = datasets[units]
    extra = [f"--robot.calibration={calib}"] if units == "lerobot_range" else []
    # the recorded dataset as is does not fit the pick-cube config; the error points to inspect
    assert train.main(["--config", PICK, f"--dataset.path={ds}", *extra, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"python -m hilserl_ray.data.inspect {ds} --config {PICK}" in err
    assert inspect.main([str(ds), "--config", PICK, *extra]) == 0
    out = capsys.readouterr().out
    assert f"joint units: {units}" in out
    args = train_args_printed(out)
    assert (
        "--env.fps=30" in args and "--env.cameras.0.height=48" in args and "--env.cameras.0.width=64" in args
    )
    assert train.main([*args, "--dry-run"]) == 0
    assert "config OK" in capsys.readouterr().out
    # what the learner then does with that config: convert and fill the offline buffer
    cfg = load_config(PICK, {**parse_overrides(args[2:]), "dataset.cache_dir": str(tmp_path / "cache")})
    chunks = load_offline_datasets(cfg, progress=False)
    buf = ReplayBuffer(pipeline_spec(cfg), 1000)
    for c in chunks:
        buf.add_chunk(c)
    assert len(buf) == sum(LENGTHS)


def test_inspect_names_what_only_a_person_can_decide(datasets, capsys):
    assert inspect.main([str(datasets["lerobot_range"]), "--config", PICK]) == 1
    out = capsys.readouterr().out
    assert "needs your decision" in out and "--dataset.joint_units=lerobot_range" in out


def test_inspect_switches_the_action_space_a_pipeline_dataset_was_recorded_in(tmp_path, capsys):
    """Recorded with a continuous gripper in joint mode: inspect says which two settings match."""
    from hilserl_ray.data.lerobot_writer import LeRobotWriter

    names = [
        f"{j}.delta" for j in ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")
    ]
    feats = {
        "observation.state": {"dtype": "float32", "shape": [6], "names": None},
        "action": {"dtype": "float32", "shape": [6], "names": [*names, "gripper.delta"]},
        "observation.images.front": {"dtype": "video", "shape": [48, 64, 3], "names": None},
    }
    with LeRobotWriter(tmp_path / "ds", 10, feats, codec="h264") as w:
        for i in range(5):
            w.add_frame(
                {
                    "observation.state": np.full(6, 10.0 + i, np.float32),
                    "action": np.full(6, 0.1, np.float32),
                    "observation.images.front": np.zeros((48, 64, 3), np.uint8),
                }
            )
        w.save_episode()
    # never read as joint deltas in degrees: train names the two settings
    assert train.main(["--config", PICK, f"--dataset.path={tmp_path / 'ds'}", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "recorded with --pipeline.ee_action.enabled=false --pipeline.gripper.discrete=false" in err
    assert inspect.main([str(tmp_path / "ds"), "--config", PICK]) == 0
    args = train_args_printed(capsys.readouterr().out)
    assert "--pipeline.ee_action.enabled=false" in args and "--pipeline.gripper.discrete=false" in args
    assert train.main([*args, "--dry-run"]) == 0


# ------------------------------------------------------------------------------- export
def fake_run(tmp_path) -> tuple[Path, dict, list]:
    """A run dir whose replay store holds known episodes (as the learner writes it)."""
    cfg = load_config(
        None,
        {
            "env.task": "pick_cube",
            "env.cameras": [{"name": "front", "height": 64, "width": 64}],
            "pipeline.image.size": [64, 64],
            "buffer.online_ratio": 1.0,
            "output_dir": str(tmp_path / "run"),
        },
    )
    spec = pipeline_spec(cfg)
    rng = np.random.default_rng(0)
    buf = ReplayBuffer(spec, 500, storage=Path(cfg.output_dir) / "replay" / "online")  # as the learner
    episodes = []
    # (length, ends: terminated/truncated/open, intervention steps)
    for e, (n, end, human) in enumerate(
        [(7, "terminated", {2, 3}), (5, "truncated", set()), (4, "open", {0})]
    ):
        rows = n + (0 if end == "open" else 1)
        yy, xx = np.mgrid[0:64, 0:64]
        img = np.stack(
            [np.clip(xx * 3 + 10 * i + 40 * e, 0, 255) for i in range(rows)], axis=0
        )  # smooth ramps: video-friendly
        chunk = {
            "observation.state": rng.normal(size=(rows, 18)).astype(np.float32),
            "observation.images.front": np.repeat(img[..., None], 3, -1).astype(np.uint8),
            "action": np.c_[rng.uniform(-1, 1, (rows, 3)), rng.integers(0, 3, rows)].astype(np.float32),
            "reward": np.zeros(rows, np.float32),
            "discrete_penalty": np.zeros(rows, np.float32),
            "terminated": np.zeros(rows, bool),
            "truncated": np.zeros(rows, bool),
            "is_intervention": np.array([i in human for i in range(rows)]),
            "episode_id": np.full(rows, (1 << 23) + e, np.int64),
            "is_last": np.zeros(rows, bool),
        }
        if end != "open":
            chunk["is_last"][-1] = True
            chunk["terminated" if end == "terminated" else "truncated"][n - 1] = True
            if end == "terminated":
                chunk["reward"][n - 1] = 1.0
        buf.add_chunk(chunk)
        episodes.append((chunk, n, end))
    run = Path(cfg.output_dir)
    write_config(cfg, run / "config.yaml")
    buf.close()
    return run, cfg, episodes


def test_export_then_read_back_gives_the_same_transitions(tmp_path, capsys):
    run, cfg, episodes = fake_run(tmp_path)
    out = tmp_path / "exported"
    assert export.main(["--run", str(run), "--out", str(out)]) == 0
    assert "2 episodes, 12 frames" in capsys.readouterr().out  # the running episode is left out
    r = LeRobotReader(out)
    assert r.version == "v3.0" and [e.length for e in r.episodes] == [7, 5]
    assert r.features["observation.images.front"]["info"]["video.codec"] == "av1"  # LeRobot's encoding
    cols = r.read(
        [
            "observation.state",
            "action",
            "next.reward",
            "next.done",
            "complementary_info.truncated",
            "complementary_info.is_intervention",
            "complementary_info.episode_success",
        ]
    )
    want = {k: np.concatenate([c[k][:n] for c, n, _ in episodes[:2]]) for k in episodes[0][0]}
    np.testing.assert_array_equal(cols["observation.state"], want["observation.state"])
    np.testing.assert_array_equal(cols["action"], want["action"])
    np.testing.assert_array_equal(cols["next.reward"], want["reward"])
    np.testing.assert_array_equal(cols["next.done"], want["terminated"] | want["truncated"])
    np.testing.assert_array_equal(cols["complementary_info.truncated"], want["truncated"])
    np.testing.assert_array_equal(cols["complementary_info.is_intervention"], want["is_intervention"])
    np.testing.assert_array_equal(cols["complementary_info.episode_success"], [True] * 7 + [False] * 5)
    frames = dict(r.frames("observation.images.front"))
    images = np.stack([frames[i] for i in range(12)]).astype(np.int16)
    assert np.abs(images - want["observation.images.front"]).mean() < 3.0  # AV1 crf 30 on smooth ramps
    # and it feeds the next run as offline data (the pipeline-format action, 18-dim state)
    cfg2 = load_config(
        None,
        {
            "env.task": "pick_cube",
            "env.fps": cfg.env.fps,
            "env.cameras": [{"name": "front", "height": 64, "width": 64}],
            "pipeline.image.size": [64, 64],
            "dataset.path": str(out),
            "dataset.cache_dir": str(tmp_path / "c"),
        },
    )
    (chunk,) = load_offline_datasets(cfg2, progress=False)
    np.testing.assert_array_equal(chunk["action"][:7], want["action"][:7])
    assert chunk["terminated"][:7].tolist() == [False] * 6 + [True]


def test_export_only_interventions_and_refusals(tmp_path, capsys):
    run, _, _ = fake_run(tmp_path)
    out = tmp_path / "human"
    assert export.main(["--run", str(run), "--out", str(out), "--only-interventions", "--codec", "h264"]) == 0
    r = LeRobotReader(out)
    assert [e.length for e in r.episodes] == [2]  # steps 2-3 of the first episode
    assert r.read(["complementary_info.is_intervention"])["complementary_info.is_intervention"].all()
    assert r.read(["complementary_info.truncated"])["complementary_info.truncated"].tolist() == [False, True]
    capsys.readouterr()
    assert export.main(["--run", str(run), "--out", str(out)]) == 2  # never writes into an existing dataset
    assert export.main(["--run", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert "not a run's output_dir" in capsys.readouterr().err


# ------------------------------------------------------------------------------- gymnasium
def test_import_registers_env_ids_lightly():
    code = (
        "import sys, gymnasium as gym, hilserl_ray\n"
        "assert 'mujoco' not in sys.modules and 'torch' not in sys.modules, 'import hilserl_ray is not light'\n"
        "env = gym.make('hilserl_ray/SO101PickCubeImage-v0')\n"
        "obs, _ = env.reset(seed=0)\n"
        "obs, r, term, trunc, info = env.step(env.action_space.sample())\n"
        "print(sorted(obs), obs['observation.images.front'].shape)\n"
        "assert 'hilserl_ray/SO101ReachImage-v0' in gym.registry\n"
        "env.close()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "(128, 128, 3)" in r.stdout


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.subprocess
def test_real_run_on_a_teleop_dataset_then_export(datasets, tmp_path, capsys):
    """The whole path on local Ray: inspect's overrides -> train fills the offline buffer -> export."""
    assert inspect.main([str(datasets["degrees"]), "--config", PICK]) == 0
    args = train_args_printed(capsys.readouterr().out)
    fast = [
        f"--output_dir={tmp_path / 'run'}",
        "--total_env_steps=60",
        "--env.max_episode_steps=20",
        "--learner.training_starts=20",
        "--policy.batch_size=16",
        "--policy.hidden_dims=[32,32]",
        "--policy.latent_dim=32",
        "--checkpoint.every_updates=10",
        "--pipeline.image.size=[64,64]",
        "--logging.tensorboard=false",
        "--ray.num_cpus=2",
    ]
    r = subprocess.run(
        train_command(*args, *fast),
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        timeout=480,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"0 online + {sum(LENGTHS)} offline transitions" in r.stdout
    assert "joint_targets" in r.stdout  # the conversion report, printed by the learner
    assert export.main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 0
    spec, arrays, episodes = export.read_run_replay(tmp_path / "run")
    back = LeRobotReader(tmp_path / "out")
    assert [e.length for e in back.episodes] == [len(rows) - 1 for rows in episodes]
    trans = np.concatenate([rows[:-1] for rows in episodes])
    np.testing.assert_array_equal(back.read(["action"])["action"], arrays["action"][trans])
