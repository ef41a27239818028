"""The configuration as a user meets it: YAML files, dotted overrides, errors, the dry run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from run_helpers import ENV, ROOT, train_command

from hilserl_ray.checks.config import require_valid
from hilserl_ray.config import TrainConfig
from hilserl_ray.configio import ConfigError, load_config, write_config
from hilserl_ray.envs.pipeline import pipeline_spec
from hilserl_ray.errors import UserError
from hilserl_ray.preflight import preflight

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        train_command(*args),
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate(path: Path):
    cfg = load_config(path)
    spec = pipeline_spec(cfg)
    if cfg.env.type == "gym":  # the state is the env's own (lerobot_env_so101: 14 values + the measured jaw)
        assert spec.observation["observation.state"].shape == (15,)
        return
    assert spec.observation["observation.state"].shape == (18,)
    for cam in cfg.env.cameras:
        assert spec.observation[f"observation.images.{cam.name}"].shape == (*cfg.pipeline.image.size, 3)


def test_shipped_config_names():
    assert {p.name for p in CONFIGS} >= {"sim_reach.yaml", "sim_pick_cube.yaml", "so101_real.yaml"}


def test_real_config_preflight_names_missing_calibration(tmp_path):
    cfg = load_config(ROOT / "configs" / "so101_real.yaml")
    with pytest.raises(ConfigError) as e:
        preflight(cfg)
    assert "robot.calibration" in e.value.message()
    from fake_sts3215 import write_calibration

    follower, leader, port, cam = (
        tmp_path / n for n in ("follower.json", "leader.json", "ttyACM0", "video0")
    )
    write_calibration(follower)
    write_calibration(leader)
    port.touch()
    cam.touch()
    ok = [
        f"--robot.calibration={follower}",
        f"--pipeline.intervention.leader_calibration={leader}",
        f"--robot.port={port}",
        f"--pipeline.intervention.leader_port={port}",
        f"--env.cameras.0.device={cam}",
        "--learner.num_gpus=0",
    ]
    preflight(load_config(ROOT / "configs" / "so101_real.yaml", ok))


@pytest.mark.subprocess
def test_dry_run_prints_config_and_feature_table():
    r = cli("--config", "configs/sim_pick_cube.yaml", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "observation.images.gripper_cam  (128, 128, 3)  uint8    image_resize" in r.stdout
    assert "observation.state" in r.stdout and "(18,)" in r.stdout and "proprioception" in r.stdout
    assert "total_env_steps: 15000" in r.stdout


@pytest.mark.subprocess
def test_overrides_are_applied_both_spellings():
    r = cli(
        "--config", "configs/sim_pick_cube.yaml", "--dry-run", "--policy.batch_size=128", "--env.fps", "15"
    )
    assert r.returncode == 0, r.stderr
    printed = yaml.safe_load(r.stdout.split("\nfeature ")[0])
    assert printed["policy"]["batch_size"] == 128
    assert printed["env"]["fps"] == 15


def test_override_into_list_and_nested_dict():
    cfg = load_config(
        ROOT / "configs" / "sim_pick_cube.yaml",
        [
            "--env.cameras.0.width=96",
            "--pipeline.image.crop.gripper_cam=[0, 0, 100, 96]",
            "--pipeline.image.size=[64,64]",
        ],
    )
    assert cfg.env.cameras[0].width == 96
    assert cfg.pipeline.image.crop["gripper_cam"] == (0, 0, 100, 96)
    spec = pipeline_spec(cfg)
    assert spec.observation["observation.images.gripper_cam"].shape == (64, 64, 3)


@pytest.mark.subprocess
def test_unknown_key_suggests_closest_and_exits_2():
    r = cli("--config", "configs/sim_pick_cube.yaml", "--dry-run", "--policy.batch_sise=128")
    assert r.returncode == 2
    assert "policy.batch_sise: unknown key; did you mean 'batch_size'?" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.subprocess
def test_unknown_key_in_yaml_file(tmp_path):
    p = write_yaml(
        tmp_path / "c.yaml", {"env": {"task": "reach", "fsp": 10}, "buffer": {"online_ratio": 1.0}}
    )
    r = cli("--config", str(p), "--dry-run")
    assert r.returncode == 2
    assert "env.fsp: unknown key; did you mean 'fps'?" in r.stderr


@pytest.mark.subprocess
def test_every_problem_reported_at_once_with_path_value_and_rule():
    r = cli(
        "--config",
        "configs/sim_pick_cube.yaml",
        "--dry-run",
        "--env.fps=0",
        "--pipeline.image.size=[0,128]",
        "--policy.num_subsample_critics=5",
        "--env.cameras.0.name=wrist",
    )
    assert r.returncode == 2
    err = r.stderr
    assert "env.fps: got 0; input should be greater than 0" in err
    assert "pipeline.image.size.0: got 0" in err
    assert "policy.num_subsample_critics: got 5; <= policy.num_critics (2)" in err
    assert "env.cameras: got 'wrist'; the sim has cameras ['gripper_cam', 'front']" in err
    assert "problems in the configuration" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            ["--robot.type=so101", "--pipeline.intervention.source=none"],
            "robot.port: got None; a real robot needs its serial port",
        ),
        (["--robot.type=so101", "--robot.port=/dev/ttyACM0"], "robot.calibration: got None"),
        (
            ["--robot.type=so101"],
            "pipeline.intervention.source: got 'oracle'; the scripted oracle needs the sim",
        ),
        (
            ["--pipeline.image.crop.gripper_cam=[0,0,200,10]"],
            "pipeline.image.crop.gripper_cam: got (0, 0, 200, 10)",
        ),
        (
            ["--pipeline.image.crop.front=[0,0,10,10]"],
            "pipeline.image.crop.front: got (0, 0, 10, 10); no such camera",
        ),
        (["--robot.motor_ids=[1,2,3]"], "robot.motor_ids: got [1, 2, 3]; one id per joint: 6 ids"),
        (["--pipeline.ee_action.workspace_high=[0.0,0.2,0.3]"], "pipeline.ee_action.workspace_high"),
        (["--pipeline.intervention.source=leader"], "pipeline.intervention.leader_port: got None"),
        (["--policy.encoder=pretrained"], "policy.encoder_weights: got None; a local weights file"),
        (
            ["--pipeline.intervention.source=none"],
            "buffer.online_ratio: got 0.5; 1.0 when there is no dataset",
        ),
        (
            ["--buffer.online_ratio=1.5"],
            "buffer.online_ratio: got 1.5; input should be less than or equal to 1",
        ),
        (
            ["--robot.mjcf=/nonexistent/arm.xml"],
            "robot.mjcf: got '/nonexistent/arm.xml'; an existing MJCF file",
        ),
        (
            ["--dataset.path=/nonexistent/ds"],
            "dataset.path: got '/nonexistent/ds'; a LeRobot dataset directory",
        ),
    ],
)
def test_cross_field_and_file_rules(overrides, expected):
    with pytest.raises(ConfigError) as e:
        cfg = load_config(ROOT / "configs" / "sim_pick_cube.yaml", overrides)
        preflight(cfg)
    assert expected in e.value.message()


def test_offline_capacity_smaller_than_dataset(tmp_path):
    ds = tmp_path / "ds"
    (ds / "meta").mkdir(parents=True)
    (ds / "meta" / "info.json").write_text(
        '{"codebase_version": "v3.0", "total_frames": 15858, "total_episodes": 100, "features": {}}'
    )
    cfg = load_config(
        ROOT / "configs" / "sim_pick_cube.yaml", [f"--dataset.path={ds}", "--buffer.offline_capacity=1000"]
    )
    with pytest.raises(ConfigError) as e:
        preflight(cfg)
    assert "buffer.offline_capacity: got 1000; > 15958 (the datasets' frames + one row per episode end" in (
        e.value.message()
    )


@pytest.mark.subprocess
def test_bad_yaml_and_missing_file_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("env: [unclosed\n")
    r = cli("--config", str(bad), "--dry-run")
    assert r.returncode == 2 and "not valid YAML" in r.stderr
    r = cli("--config", str(tmp_path / "nope.yaml"), "--dry-run")
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(
        ROOT / "configs" / "sim_pick_cube.yaml", ["--policy.batch_size=64", f"--output_dir={tmp_path}"]
    )
    write_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path)  # a run dir restarts from its config.yaml alone
    assert again == cfg
    assert pipeline_spec(again).fingerprint() == pipeline_spec(cfg).fingerprint()


def test_fingerprint_changes_with_state_dim_and_image_size():
    base = load_config(ROOT / "configs" / "sim_pick_cube.yaml")
    no_proprio = load_config(
        ROOT / "configs" / "sim_pick_cube.yaml",
        ["--pipeline.proprio.joint_velocity=false", "--pipeline.proprio.ee_pose=false"],
    )
    smaller = load_config(ROOT / "configs" / "sim_pick_cube.yaml", ["--pipeline.image.size=[84,84]"])
    assert pipeline_spec(no_proprio).state_dim == 6
    fps = {pipeline_spec(c).fingerprint() for c in (base, no_proprio, smaller)}
    assert len(fps) == 3


def test_a_path_under_home_means_the_users_home(tmp_path):
    cfg = load_config(
        ROOT / "configs" / "sim_reach.yaml",
        ["--output_dir=~/runs/reach", "--dataset.paths=[~/data/a, data/b]"],
    )
    assert cfg.output_dir == Path.home() / "runs" / "reach"  # not ./~/runs/reach
    assert cfg.dataset.paths == [Path.home() / "data" / "a", Path("data/b")]
    write_config(cfg, tmp_path / "config.yaml")  # the run's own config names the real place
    assert str(Path.home()) in (tmp_path / "config.yaml").read_text()


@pytest.mark.parametrize("key", ["max_pending_chunks", "env_steps_per_update"])
def test_a_moved_key_names_its_new_place(key, tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(ROOT / "configs" / "sim_reach.yaml", [f"--learner.{key}=2"])
    assert f"learner.{key}: moved to actors.{key}" in e.value.message()
    p = write_yaml(tmp_path / "c.yaml", {"learner": {key: 2}, "buffer": {"online_ratio": 1.0}})
    r = cli("--config", str(p), "--dry-run")
    assert r.returncode == 2 and f"learner.{key}: moved to actors.{key}" in r.stderr, r.stderr
    assert getattr(load_config(ROOT / "configs" / "sim_reach.yaml", [f"--actors.{key}=2"]).actors, key) == 2


def test_a_run_saved_before_a_key_moved_still_loads(tmp_path):
    """A run's own config.yaml (written before the move) is read with the key in its new place."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    write_yaml(run / "config.yaml", {"learner": {"env_steps_per_update": 3}, "buffer": {"online_ratio": 1.0}})
    assert load_config(run).actors.env_steps_per_update == 3


def test_the_schema_types_fields_and_the_static_rules_refuse_combinations():
    """`TrainConfig` alone is the schema; `require_valid` (run by load_config) adds the cross-field rules."""
    cfg = TrainConfig.model_validate({"robot": {"motor_ids": [1, 2, 3]}, "buffer": {"online_ratio": 1.0}})
    with pytest.raises(ValueError, match="robot.motor_ids: got \\[1, 2, 3\\]; one id per joint") as e:
        require_valid(cfg)
    assert isinstance(e.value, UserError)
    ok = TrainConfig.model_validate({"buffer": {"online_ratio": 1.0}})
    assert require_valid(ok) is ok
