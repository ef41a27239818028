"""docs/real_arm.md cannot drift from the journey that proved it: every command in the guide's bash
blocks is one `python -m hilserl_ray.twin.journey` runs, in the same order, with the same module and
flags (the values, devices and paths, differ). The journey itself: `make journey-smoke`."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from run_helpers import ROOT

from hilserl_ray.twin.journey import CONFIG, SMOKE, Journey
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
def test_the_guide_spells_the_commands_the_journey_runs():
    out = subprocess.run(
        [sys.executable, "-m", "hilserl_ray.twin.journey", "--print-commands"],
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
