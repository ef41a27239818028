"""The real-robot env on the fake bus with a video file as its camera."""

from __future__ import annotations

import time

import numpy as np
import pytest
from fake_sts3215 import INST_SYNC_WRITE, FakeBus, real_config, write_calibration, write_video

from hilserl_ray.hardware.robot_env import make_real_env

RESET = np.array([0.0, -20.0, 30.0, 70.0, 0.0, 30.0])


@pytest.fixture
def fake():
    # the arm starts folded near the ends of its ranges
    with FakeBus(actual={1: 1100, 2: 1100, 3: 3000, 4: 1100, 5: 2048, 6: 1950}) as fb:
        yield fb


def _goals(fake: FakeBus) -> np.ndarray:
    """Goal_Position rows (raw) of every sync write, in order."""
    rows = []
    for _, _, params in fake.instructions(INST_SYNC_WRITE):
        if params[0] == 42:
            rows.append([int.from_bytes(params[k + 1 : k + 3], "little") for k in range(2, len(params), 3)])
    return np.array(rows)


def test_raw_env_interface_reset_ramp_and_control_rate(fake, tmp_path):
    cfg = real_config(
        fake.port,
        write_calibration(tmp_path / "c.json"),
        write_video(tmp_path / "cam.avi"),
        robot={"reset_seconds": 0.3, "reset_wait_seconds": 0.3, "watchdog_seconds": 0.1},
    )
    env = make_real_env(cfg)
    try:
        assert env.observation_space["observation.state"].shape == (6,)
        assert env.observation_space["observation.images.wrist"].shape == (48, 64, 3)
        assert env.action_space.shape == (6,)
        fake.clear_log()
        obs, info = env.reset()
        assert info["is_success"] is False
        assert env.observation_space.contains(obs)
        np.testing.assert_allclose(obs["observation.state"], RESET, atol=0.2)
        # the ramp is smooth: no command jumps more than max_relative_target_deg (10 deg = 114 steps)
        goals = _goals(fake)
        assert len(goals) >= 9
        assert np.abs(np.diff(goals, axis=0)).max() <= 114
        # the reset wait (0.3 s) outlasted the watchdog (0.1 s) without the arm being released
        assert all(s.torque for s in fake.servos.values())
        n, t0 = 10, time.monotonic()
        for k in range(n):
            target = RESET + [2.0 * (k + 1), 0, 0, 0, 0, 0]
            obs, reward, terminated, truncated, info = env.step(target.astype(np.float32))
            assert (reward, terminated, truncated, info["is_success"]) == (0.0, False, False, False)
        elapsed = time.monotonic() - t0
        assert elapsed >= (n - 1) / cfg.env.fps  # paced at env.fps (50 Hz here)
        assert obs["observation.state"][0] == pytest.approx(20.0, abs=0.1)
        assert obs["observation.images.wrist"].dtype == np.uint8
        with pytest.raises(ValueError, match=r"expected \(6,\) joint targets"):
            env.step(np.zeros(4, np.float32))
    finally:
        env.close()
    assert not any(s.torque for s in fake.servos.values())
    env.close()


def test_missing_servo_at_start_names_port_and_ids(tmp_path):
    with FakeBus(ids=(1, 2, 3, 4, 5)) as fake:
        cfg = real_config(fake.port, write_calibration(tmp_path / "c.json"))
        with pytest.raises(Exception, match=r"\{'gripper': 6\} do not answer on .*\[1, 2, 3, 4, 5\]"):
            make_real_env(cfg)


def test_calibration_for_other_ids_is_refused(fake, tmp_path):
    cfg = real_config(
        fake.port, write_calibration(tmp_path / "c.json"), robot={"motor_ids": [1, 2, 3, 4, 6, 5]}
    )
    with pytest.raises(ValueError, match="other servo ids"):
        make_real_env(cfg)
    assert not any(s.torque for s in fake.servos.values())
