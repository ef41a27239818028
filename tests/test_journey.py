"""docs/real_arm.md cannot drift from the journey that proved it: every command in the guide's bash
blocks is one `python -m hilserl_ray.twin.journey` runs, in the same order, with the same module and
flags (the values, devices and paths, differ). The journey itself: `make journey-smoke`."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml
from run_helpers import ROOT

from hilserl_ray.twin.journey import CONFIG, SMOKE, Journey
from hilserl_ray.twin.journey import main as journey_main
from hilserl_ray.twin.launch import TwinProcess

GUIDE = ROOT / "docs" / "real_arm.md"
NOT_RUN = ("--resume",)  # continuing a run: the guide's, not a step of the journey
# flags whose value is the device's (the guide names them for a slow USB adapter; the twin is one)
DEVICE_FLAGS = ("--timeout-ms",)


def shape(line: str) -> tuple[str, list[str]]:
    """(module [subcommand], flag names in order) of `.venv/bin/python -m MODULE ...`."""
    words = line.split()
    module = words[words.index("-m") + 1]
    rest = words[words.index("-m") + 2 :]
    if rest and not rest[0].startswith("-") and module == "hilserl_ray.reward":
        module += " " + rest[0]
    flags = [w.split("=", 1)[0] for w in rest if w.startswith("--")]
    return module, [f for f in flags if f not in DEVICE_FLAGS]


def guide_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", GUIDE.read_text(), flags=re.S)
    lines = [x.strip() for b in blocks for x in b.splitlines() if "-m hilserl_ray." in x]
    return [x for x in lines if not any(n in x for n in NOT_RUN)]


@pytest.mark.subprocess
@pytest.mark.parametrize("scale", [[], ["--time-scale", "0.5"]], ids=["real_time", "slowed"])
def test_the_guide_spells_the_commands_the_journey_runs(scale):
    out = subprocess.run(
        [sys.executable, "-m", "hilserl_ray.twin.journey", "--print-commands", *scale],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    ).stdout
    journey = [shape(x) for x in out.splitlines() if "-m hilserl_ray." in x]
    guide = [shape(x) for x in guide_commands()]
    assert len(guide) >= 10
    assert guide == journey, "\n".join(
        f"{'  ' if g == j else '!='} guide {g}  journey {j}" for g, j in zip(guide, journey, strict=False)
    )
    for line in guide_commands():
        assert line.startswith(".venv/bin/python -m hilserl_ray."), line


@pytest.mark.subprocess
def test_calibrate_against_the_twin_gives_the_arms_own_ranges(tmp_path, monkeypatch):
    """The journey's first steps: `calibrate` on each pty, Enter pressed, the twin's person posing
    and sweeping the joints; the files it writes hold the ranges the twin's arm has."""
    monkeypatch.chdir(ROOT)
    journey = Journey(tmp_path, SMOKE)
    journey.twin = TwinProcess(CONFIG, tmp_path / "twin").wait_ready()
    try:
        paths = journey.twin.paths
        devices = {"follower": paths["robot.port"], "leader": paths["pipeline.intervention.leader_port"]}
        devices |= {"camera": "-", "keys": "-"}
        for stage in journey.stages(devices)[:2]:
            journey.run_stage(stage)
            assert stage.rc == 0, stage.figure
            within = int(re.search(r"ranges within (\d+) steps", stage.figure)[1])
            assert within <= 2, stage.figure
    finally:
        journey.twin.stop()
    assert json.loads(journey.p["leader_cal"].read_text())["gripper"]["range_max"] > 0


def test_a_slowed_journey_runs_the_robot_at_env_fps_times_the_scale(tmp_path, monkeypatch):
    """--time-scale 0.5: the twin's clock at half the wall clock, so the config the journey edits
    carries env.fps 5 (10 Hz of twin time) and the camera's fps halved; the table's head says so."""
    monkeypatch.chdir(ROOT)
    devices = {"follower": "/dev/f", "leader": "/dev/l", "camera": "http://c", "keys": "http://k"}
    for scale, fps, cam_fps in ((1.0, 10, 2), (0.5, 5, 1)):
        journey = Journey(tmp_path / str(scale), SMOKE, time_scale=scale)
        journey.cfg_path.parent.mkdir(parents=True)
        journey.write_config(devices)
        cfg = yaml.safe_load(journey.cfg_path.read_text())
        assert cfg["env"]["fps"] == fps and cfg["env"]["cameras"][0]["fps"] == cam_fps, cfg["env"]
    assert journey.summary().startswith("time scale 0.5:") and "env.fps 5 Hz" in journey.summary()
    assert "= 10 Hz of twin time" in journey.summary()


@pytest.mark.parametrize("value", ["0", "2", "x"])
def test_a_bad_time_scale_for_the_journey_is_one_line_and_exit_2(value, tmp_path, capsys):
    assert journey_main(["--out", str(tmp_path / "j"), "--time-scale", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --time-scale: got "), err
    assert not (tmp_path / "j").exists()
