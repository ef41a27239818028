"""Safety: clamps, workspace by FK, watchdog, and torque off on exceptions, Ctrl+C and exit."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from fake_sts3215 import FakeBus, real_config, write_calibration

from hilserl_ray.envs.kinematics import Kinematics
from hilserl_ray.hardware.follower import SO101Follower
from hilserl_ray.hardware.robot_env import make_real_env
from hilserl_ray.limits import SafetyLimits
from hilserl_ray.so101 import JOINT_NAMES

KIN = Kinematics()
LOW = np.array([-90.0] * 5 + [0.0])
HIGH = np.array([90.0] * 5 + [100.0])
RESET = np.array([0.0, -20.0, 30.0, 70.0, 0.0, 30.0])
WS = (np.array([0.10, -0.25, 0.01]), np.array([0.42, 0.25, 0.30]))


def _limits() -> SafetyLimits:
    return SafetyLimits(
        LOW, HIGH, 10.0, fk=lambda q: KIN.fk(q)[0], ws_low=WS[0], ws_high=WS[1], names=JOINT_NAMES
    )


def test_joint_limits_and_max_step():
    s = _limits()
    present = RESET.copy()
    out = s.clamp(RESET + [5, -4, 3, 0, 0, 200], present)
    np.testing.assert_allclose(out, RESET + [5, -4, 3, 0, 0, 10])  # gripper: 100 cap, then 10 per step
    assert s.last["max_step"] == ["gripper"] and s.last["joint_limits"] == ["gripper"]
    out = s.clamp(RESET + [40, 0, 0, 0, 0, 0], present)
    assert out[0] == pytest.approx(10.0)
    joints_only = SafetyLimits(LOW, HIGH, 10.0)
    far = np.array([85.0, 0, 0, 0, 0, 50])
    assert joints_only.clamp(np.array([200.0, 0, 0, 0, 0, 50]), far)[0] == 90.0  # never past the range
    with pytest.raises(ValueError, match=r"not finite for \['elbow_flex'\]"):
        s.clamp(RESET + [0, 0, np.nan, 0, 0, 0], present)


def test_workspace_by_fk_shortens_moves_that_leave_the_box():
    s = _limits()
    # lowering shoulder and elbow from z = 0.032 m would take the gripperframe under z = 0.01
    present = RESET + [0, 10, 0, 0, 0, 0]
    target = present + [0, 8, 8, 0, 0, 0]
    assert KIN.fk(target)[0][2] < WS[0][2] < KIN.fk(present)[0][2]
    out = s.clamp(target, present)
    assert s.last["workspace"].startswith("shortened")
    assert WS[0][2] - 1e-4 <= KIN.fk(out)[0][2] < WS[0][2] + 2e-3  # as far as allowed, not further
    np.testing.assert_allclose((out - present)[1], (out - present)[2])  # along the requested line
    # from outside the box: further out is refused, back in is allowed
    outside = RESET + [0, 20, 10, 0, 0, 0]
    assert KIN.fk(outside)[0][2] < WS[0][2]
    assert np.array_equal(s.clamp(outside + [0, 0, 5, 0, 0, 0], outside), outside)
    back = s.clamp(outside - [0, 5, 0, 0, 0, 0], outside)
    np.testing.assert_allclose(back, outside - [0, 5, 0, 0, 0, 0])


@pytest.fixture
def fake():
    with FakeBus() as fb:
        yield fb


def test_follower_clamps_what_reaches_the_servos(fake, tmp_path):
    f = SO101Follower(
        fake.port,
        write_calibration(tmp_path / "c.json"),
        max_relative_target=10.0,
        watchdog_s=None,
        bus_timeout_ms=250.0,
    )
    f.connect()
    try:
        assert all(s.torque for s in fake.servos.values())
        present = f.read()
        sent = f.send(present + np.array([50, 0, 0, 0, 0, 0]))
        assert sent[0] == pytest.approx(present[0] + 10, abs=1e-3)
        f.read()  # a round trip: the (unanswered) sync write has been processed
        # the servo got the raw equivalent of +10 degrees (4095 steps per 360)
        assert fake[1].goal == pytest.approx(2048 + 10 * 4095 / 360, abs=1)
        assert abs(f.read()[0] - sent[0]) < 0.1
    finally:
        f.close()
    assert not any(s.torque for s in fake.servos.values())
    f.close()  # idempotent


def test_watchdog_holds_then_releases_and_commands_re_arm(fake, tmp_path):
    for s in fake.servos.values():
        s.speed = 200.0  # steps/s: a move of 10 degrees takes ~0.6 s
    f = SO101Follower(
        fake.port,
        write_calibration(tmp_path / "c.json"),
        watchdog_s=0.15,
        watchdog_release_s=0.5,
        bus_timeout_ms=250.0,
    )
    f.connect()
    try:
        f.send(f.read() + np.array([10, 0, 0, 0, 0, 0]))
        f.read()  # a round trip: the (unanswered) sync write has been processed
        goal_sent = fake[1].goal
        assert goal_sent > 2048 + 100
        time.sleep(0.3)  # commands stop: the watchdog holds where the arm is, short of the goal
        assert f.watchdog.state == "held"
        assert fake[1].torque and fake[1].goal < goal_sent - 20
        time.sleep(0.4)
        assert f.watchdog.state == "released"
        assert not any(s.torque for s in fake.servos.values())
        fake[2].set_present(fake[2].present - 300)  # unpowered, the arm sagged meanwhile
        stale = f.read()
        stale[1] += 300 * 360 / 4095  # what the controller last saw, before the sag
        f.send(stale, present=stale)  # the controller comes back with its stale view
        f.read()
        assert all(s.torque for s in fake.servos.values())
        assert f.watchdog.state == "active"
        # clamped from where the arm really is: at most 10 degrees (114 steps) above the sagged pose
        assert fake[2].goal <= 2048 - 300 + 114 + 1
    finally:
        f.close()


def test_exception_inside_step_turns_torque_off(fake, tmp_path):
    env = make_real_env(real_config(fake.port, write_calibration(tmp_path / "c.json")))
    obs, _ = env.reset()
    assert all(s.torque for s in fake.servos.values())
    bad = obs["observation.state"].copy()
    bad[2] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        env.step(bad)
    assert not any(s.torque or s.peek((55, 1)) for s in fake.servos.values())
    with pytest.raises(RuntimeError, match="closed"):
        env.step(obs["observation.state"])
    env.close()  # idempotent after the safe stop


_CHILD = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path.insert(0, {tests!r})
    from fake_sts3215 import real_config
    from hilserl_ray.hardware.robot_env import make_real_env
    env = make_real_env(real_config({port!r}, {cal!r}))
    obs, _ = env.reset()
    print("ready", flush=True)
    if {mode!r} == "raise":
        sys.stdin.readline()
        raise RuntimeError("a bug in the user's loop, outside any env call")
    while True:
        obs, *_ = env.step(obs["observation.state"])
    """
)


@pytest.mark.heavy
@pytest.mark.parametrize("mode", ["sigint", "raise"])
def test_ctrl_c_or_crash_in_another_process_turns_torque_off(fake, tmp_path, mode):
    """A script driving the arm dies (Ctrl+C mid-loop, or an unrelated exception): torque off."""
    code = _CHILD.format(
        tests=str(Path(__file__).parent),
        port=fake.port,
        cal=str(write_calibration(tmp_path / "c.json")),
        mode=mode,
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        assert all(s.torque for s in fake.servos.values())
        if mode == "sigint":
            time.sleep(0.1)
            child.send_signal(signal.SIGINT)
        else:
            child.stdin.write("go\n")
            child.stdin.flush()
        child.wait(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode != 0
    err = child.stderr.read()
    assert ("KeyboardInterrupt" if mode == "sigint" else "a bug in the user's loop") in err
    assert not any(s.torque for s in fake.servos.values()), err


def test_max_step_keeps_the_arms_direction_and_limits_the_gripper_alone():
    """The arm's joints share one scale (an IK step stays on its path); clipped one joint at a
    time, a level EE move near the table dipped out of the box and the box then held the arm."""
    s = SafetyLimits(LOW, HIGH, 8.0, names=JOINT_NAMES)
    out = s.clamp(RESET + [2.0, 8.2, -16.0, 4.0, 0.0, -30.0], RESET)
    np.testing.assert_allclose(out - RESET, [1.0, 4.1, -8.0, 2.0, 0.0, -8.0])
    assert s.last["max_step"] == ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "gripper"]
