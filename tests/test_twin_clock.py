"""The twin's clock (`--time-scale S`, hilserl_ray/twin/clock.py): its whole world runs at S x the
wall clock, physics and the servos' timing included, and it tells the robot to run at env.fps x S.
Timings are measured against the wall clock with room for a loaded machine: the twin can fall
behind its clock (a starved physics thread) but never run ahead of it."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from run_helpers import ROOT

from hilserl_ray.configio import load_config
from hilserl_ray.so101 import JOINT_NAMES
from hilserl_ray.twin.__main__ import main as twin_main
from hilserl_ray.twin.clock import RateCheck, TwinClock
from hilserl_ray.twin.launch import TwinProcess
from hilserl_ray.twin.sts3215 import GOAL, TORQUE, Servo, sm_encode
from hilserl_ray.twin.twin import Twin, TwinOptions

CONFIG = str(ROOT / "configs" / "so101_twin.yaml")
NO_CAMERAS = ["--env.cameras=[]", "--pipeline.image.crop={}"]


def _twin(tmp_path, scale: float) -> Twin:
    """The twin in this process with its physics running (no person, cameras or HTTP)."""
    twin = Twin(load_config(CONFIG, NO_CAMERAS), TwinOptions(dir=tmp_path / f"twin{scale}", port=0, time_scale=scale))  # fmt: skip
    twin.arm.start()
    return twin


def _sim_seconds_per_wall_second(twin: Twin, wall_s: float = 1.5) -> float:
    def now():
        with twin.bus.lock:
            return time.monotonic(), float(twin.arm.data.time)

    time.sleep(0.3)  # past the start-up catch-up
    w0, s0 = now()
    time.sleep(wall_s)
    w1, s1 = now()
    return (s1 - s0) / (w1 - w0)


def test_the_physics_runs_at_the_time_scale(tmp_path):
    rates = {}
    for scale in (1.0, 0.5):
        twin = _twin(tmp_path, scale)
        try:
            rates[scale] = _sim_seconds_per_wall_second(twin)
        finally:
            twin.stop()
    # never ahead of its clock (+ one 8 ms tick of rounding); behind only when starved
    assert 0.7 < rates[1.0] <= 1.03, rates
    assert 0.35 < rates[0.5] <= 0.53, rates
    assert rates[0.5] < 0.7 * rates[1.0], rates


def _move_seconds(
    twin: Twin, joint: str, by_deg: float, tol_deg: float = 1.0, timeout: float = 10.0
) -> float:
    """Wall seconds from a Goal_Position write (torque on) until the joint is within tol of it."""
    k = JOINT_NAMES.index(joint)
    time.sleep(0.3)  # settle at rest
    with twin.bus.lock:
        q = twin.arm.joints()
        target = q.copy()
        target[k] += by_deg
        raw = twin.map.norm.to_raw(target)
        for name, i in zip(JOINT_NAMES, twin.map.ids, strict=True):
            s = twin.bus[i]
            goal = raw[name] if name == joint else s.present
            s.poke(GOAL, sm_encode(goal, 15))
            s.poke(TORQUE, 1)
        t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        with twin.bus.lock:
            if abs(twin.arm.joints()[k] - target[k]) <= tol_deg:
                return time.monotonic() - t0
        time.sleep(0.005)
    raise AssertionError(f"{joint} did not reach {target[k]:.1f} within {timeout} s")


def test_a_servo_move_takes_twice_the_wall_time_at_half_scale(tmp_path):
    """The follower's servos are the physics: a move to a goal takes the same twin time, so
    twice the wall time at S=0.5."""
    seconds = {}
    for scale in (1.0, 0.5):
        twin = _twin(tmp_path, scale)
        try:
            seconds[scale] = _move_seconds(twin, "shoulder_pan", 60.0)
        finally:
            twin.stop()
    assert 1.6 < seconds[0.5] / seconds[1.0] < 2.6, seconds


def test_the_servo_motion_model_keeps_the_clock():
    """The byte-level servo's own motion model (speed in steps per second of its clock)."""
    seconds = {}
    for scale in (1.0, 0.5):
        s = Servo(1, speed=2000.0, clock=TwinClock(scale))
        s.poke(TORQUE, 1)
        s.poke(GOAL, sm_encode(s.present + 1000, 15))
        t0 = time.monotonic()
        while s.present != s.goal and time.monotonic() - t0 < 5:
            s.update()
            time.sleep(0.01)
        seconds[scale] = time.monotonic() - t0
    assert 0.45 < seconds[1.0] < 0.75 and 0.95 < seconds[0.5] < 1.3, seconds


def test_a_robot_at_the_wrong_rate_is_warned_of_once(tmp_path, caplog):
    """At S=0.5 the person expects a step every 0.2 s of wall time: a robot at the real 10 Hz is
    warned of (once, in the log and twin.jsonl); one at 5 Hz is not."""
    twin = Twin(load_config(CONFIG, NO_CAMERAS), TwinOptions(dir=tmp_path / "twin", port=0, time_scale=0.5))
    try:
        assert twin.rate_overrides() == {"env.fps": 5.0}
        assert "--env.fps=5" in twin.overrides()
        person = twin.human
        reset = np.asarray(twin.cfg.robot.reset_pose_deg, dtype=np.float64)
        away = reset + np.array([10.0, 0, 0, 0, 0, 0])
        for period, warned in ((0.2, False), (0.1, True), (0.1, True)):
            person._process("goal", reset, 0.0)  # the reset ramp ends: a new episode
            for k in range(1, 30):
                person._process("goal", away, k * period)
            assert person.rate.warned is warned and person.rate.measured_hz == pytest.approx(1 / period)
    finally:
        twin.stop()
    events = [json.loads(x) for x in (tmp_path / "twin" / "twin.jsonl").read_text().splitlines()]
    mismatch = [e for e in events if e["event"] == "rate_mismatch"]
    assert len(mismatch) == 1 and mismatch[0]["expected_hz"] == 5.0, mismatch
    warnings = [r.getMessage() for r in caplog.records if "the robot steps at" in r.getMessage()]
    assert len(warnings) == 1 and "--env.fps=5" in warnings[0], warnings


def test_at_scale_one_the_robots_rate_is_left_to_it():
    check = RateCheck(TwinClock(1.0), 10.0)
    for k in range(40):
        check.step(k * 0.05)  # 20 Hz: the twin at scale 1 leaves the robot's rate to it, as before
    assert not check.warned


@pytest.mark.subprocess
def test_the_twin_prints_the_env_fps_a_slowed_clock_expects(tmp_path):
    twin = TwinProcess(CONFIG, tmp_path / "twin", "--time-scale", "0.5").wait_ready()
    try:
        st = twin.status()
        assert st["clock"]["time_scale"] == 0.5
        assert st["clock"]["rate_overrides"] == {"env.fps": 5.0, "env.cameras.0.fps": 2.5}
        assert twin.overrides()[-2:] == ["--env.fps=5", "--env.cameras.0.fps=2.5"]
        time.sleep(0.5)
    finally:
        twin.stop()
    out = twin.log_path.read_text()
    assert "--env.fps=5 --env.cameras.0.fps=2.5" in out, out
    assert "run the robot with --env.fps=5 (the real 10 Hz x 0.5)" in out, out


@pytest.mark.parametrize("value", ["0", "-0.5", "1.5", "abc", "nan", "inf"])
def test_a_bad_time_scale_is_one_line_and_exit_2(value, capsys):
    assert twin_main(["--config", CONFIG, "--time-scale", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --time-scale: got ") and "(0, 1]" in err[0], err
