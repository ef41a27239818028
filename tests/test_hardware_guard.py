"""The guard process: the arm is held, then released, when the process driving it is killed -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fake_sts3215 import INST_SYNC_WRITE, FakeBus, write_calibration

from hilserl_ray.hardware.guard import pid_file

_CHILD = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path.insert(0, {tests!r})
    from fake_sts3215 import real_config
    from hilserl_ray.hardware.robot_env import make_real_env
    cfg = real_config({port!r}, {cal!r}, robot={{"watchdog_seconds": 0.3, "watchdog_release_seconds": 1.5}})
    env = make_real_env(cfg)
    obs, _ = env.reset()
    print("ready", flush=True)
    k = 0
    while True:
        k += 1
        obs, *_ = env.step(obs["observation.state"] + np.array([0.2 * (k % 10), 0, 0, 0, 0, 0], np.float32))
    """
)


def _alive(pid: int) -> bool:
    try:
        return b"State:\tZ" not in Path(f"/proc/{pid}/status").read_bytes()
    except OSError:
        return False


def _goal_writes(fake: FakeBus) -> int:
    return sum(1 for _, _, p in fake.instructions(INST_SYNC_WRITE) if p[0] == 42)


@pytest.mark.heavy
def test_kill_9_of_the_driving_process_holds_then_releases_the_arm(tmp_path):
    with FakeBus() as fake:
        code = _CHILD.format(
            tests=str(Path(__file__).parent), port=fake.port, cal=str(write_calibration(tmp_path / "c.json"))
        )
        child = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            assert child.stdout.readline().strip() == "ready", child.stderr.read()
            time.sleep(0.3)
            guard_pid = int(pid_file(fake.port).read_text())
            assert all(s.torque for s in fake.servos.values())
            writes = _goal_writes(fake)
            os.kill(child.pid, signal.SIGKILL)
            t_kill = time.monotonic()
            child.wait(timeout=10)
            # the guard holds (one more goal write: goal = present), then turns the torque off
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and any(s.torque for s in fake.servos.values()):
                time.sleep(0.02)
            released = time.monotonic() - t_kill
            assert not any(s.torque for s in fake.servos.values()), "the arm stayed powered after kill -9"
            assert 0.5 < released < 1.5 + 3.0  # the release schedule (1.5 s after the last command)
            assert _goal_writes(fake) > writes  # the hold came first
            assert all(s.goal == s.present for s in fake.servos.values())
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and pid_file(fake.port).exists():
                time.sleep(0.05)
            assert not pid_file(fake.port).exists()  # the guard is gone once its job is done
            while time.monotonic() < deadline and _alive(guard_pid):
                time.sleep(0.05)
            assert not _alive(guard_pid)
        finally:
            if child.poll() is None:
                child.kill()
