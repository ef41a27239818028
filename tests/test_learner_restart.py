"""The robots send again within 5 s of a learner being up: a learner killed with kill -9 mid-run
(the driver restarts it; the robots used to wait, paced, while it redid the updates since its
checkpoint), and a run resumed after its driver died (its robot actors used to start only once
its learner was up)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from run_helpers import ROOT, SMALL_REACH

from hilserl_ray.runtime.procs import descendants

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
EPISODE = 5  # env steps per episode: the most a robot sends again after a learner death (paced)
STEPS = re.compile(r"env_steps\s+(\d+) \| updates\s+(\d+)")
UP = re.compile(r"learner up \(pid (\d+)")


class Timeline:
    """The driver's stdout, each line stamped when it arrived."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc) -> None:
        for line in proc.stdout:
            with self._lock:
                self.lines.append((time.monotonic(), line.rstrip()))

    def snapshot(self) -> list[tuple[float, str]]:
        with self._lock:
            return list(self.lines)

    def steps(self) -> list[tuple[float, int, int]]:
        """(time, env_steps, updates) of each console line."""
        return [(t, int(m[1]), int(m[2])) for t, s in self.snapshot() if (m := STEPS.search(s))]

    def learners(self) -> list[tuple[float, int]]:
        """(time, pid) of each `learner up` line."""
        return [(t, int(m[1])) for t, s in self.snapshot() if (m := UP.search(s))]

    def text(self) -> str:
        return "\n".join(s for _, s in self.snapshot())


def waiter(proc: subprocess.Popen, log: Timeline):
    """`wait(pred, timeout, what)`: pred's first truthy value, or an assertion naming `what` with
    the run's output (at once if the run exits)."""

    def wait(pred, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = pred()
            if value:
                return value
            if proc.poll() is not None:
                raise AssertionError(
                    f"the run exited {proc.returncode} waiting for {what}:\n{log.text()[-4000:]}"
                )
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n{log.text()[-4000:]}")

    return wait


def reach_run(out, checkpoint_every: int) -> list[str]:
    """A small reach run of short episodes that goes on until stopped, a progress line every 0.5 s."""
    cmd = [sys.executable, "-m", "hilserl_ray.train", *SMALL_REACH, f"--output_dir={out}"]
    cmd += [f"--env.max_episode_steps={EPISODE}", "--total_env_steps=100000"]
    return cmd + [f"--checkpoint.every_updates={checkpoint_every}", "--logging.every_seconds=0.5"]


def start(cmd: list[str]) -> tuple[subprocess.Popen, Timeline]:
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    return proc, Timeline(proc)


def moving_again(log: Timeline, wait, t_up: float) -> float:
    """Seconds from `t_up` until env_steps rose two episodes past the first figure after it (that
    first figure may lack an episode a robot sends again; two more are new ones)."""
    first = wait(lambda: [s for t, s, _ in log.steps() if t > t_up], 60, "a console line")[0]
    target = first + 2 * EPISODE
    try:
        t = wait(lambda: next((t for t, s, _ in log.steps() if t > t_up and s >= target), None), 90, "steps")
    except AssertionError:
        return float("inf")
    return t - t_up


def end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            for p in descendants(proc.pid):
                with contextlib.suppress(OSError):
                    os.kill(p, signal.SIGKILL)
            proc.kill()


@pytest.mark.ray
@pytest.mark.subprocess
@pytest.mark.timeout(600)
def test_robots_send_again_within_5_s_of_a_restarted_learner_being_up(tmp_path):
    # paced one update per env step (sim_reach.yaml); no checkpoint before the kill, so the
    # restarted learner starts from scratch with the stored rows: the most updates to make up
    proc, log = start(reach_run(tmp_path / "run", checkpoint_every=100000))
    wait = waiter(proc, log)
    try:
        (_, pid), *_ = wait(log.learners, 300, "the learner")
        # well past training_starts (50): a fresh learner would owe ~250 updates to the pacing
        wait(lambda: any(s >= 300 for _, s, _ in log.steps()), 300, "300 env steps")
        before = max(s for _, s, _ in log.steps())
        os.kill(pid, signal.SIGKILL)
        t_kill = time.monotonic()
        ups = wait(lambda: log.learners()[1:], 240, "the restarted learner")
        t_up, new_pid = ups[0]
        assert new_pid != pid
        moving = moving_again(log, wait, t_up)
        died = next(t for t, s in log.snapshot() if "learner died" in s)
        timeline = [(round(t - t_up, 1), s, u) for t, s, u in log.steps() if t > t_kill - 2]
        print(
            f"\nkilled at env_steps >= {before}; the driver saw it {died - t_kill:.1f} s later, the learner "
            f"was up {t_up - t_kill:.1f} s after the kill; sending again {moving:.1f} s after it was up; "
            f"(s after up, env_steps, updates): {timeline[:40]}"
        )
        assert moving < 5.0, (moving, timeline[:40])
    finally:
        end(proc)


@pytest.mark.ray
@pytest.mark.subprocess
@pytest.mark.timeout(600)
def test_a_resumed_runs_robots_send_within_5_s_of_its_learner_being_up(tmp_path):
    """The driver killed with kill -9 (its Ray and actors with it), then `--resume`: the robot
    actor opens its env while the learner loads and starts with the resumed policy's weights."""
    out = tmp_path / "run"
    cmd = reach_run(out, checkpoint_every=50)
    proc, log = start(cmd)
    wait = waiter(proc, log)
    try:
        wait(lambda: (out / "checkpoints" / "last").exists(), 300, "a checkpoint")
        actors = descendants(proc.pid)
        for p in [proc.pid, *actors]:  # the driver and the local Ray it started, as kill -9 of a job
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)
        proc.wait()
    finally:
        end(proc)
    proc, log = start([*cmd, "--resume"])
    wait = waiter(proc, log)
    try:
        ((t_up, _),) = wait(log.learners, 300, "the resumed learner")
        assert "resumed" in next(s for t, s in log.snapshot() if t == t_up)
        moving = moving_again(log, wait, t_up)
        timeline = [(round(t - t_up, 1), s, u) for t, s, u in log.steps()]
        print(f"\nresumed: sending again {moving:.1f} s after its learner was up; {timeline[:20]}")
        assert moving < 5.0, (moving, timeline[:20])
    finally:
        end(proc)
