"""A run that cannot go on stops with one line and a non-zero exit, on real local Ray: a robot actor
that cannot start, one that keeps dying, a resume that no longer fits, a damaged checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from fake_sts3215 import FakeBus, write_calibration
from run_helpers import ENV, ROOT, SMALL_REACH, learner_run, module_command, still_running, train_command

from hilserl_ray.runtime.checkpoint import complete_checkpoints, latest_checkpoint
from hilserl_ray.runtime.procs import command_line, descendants

pytestmark = pytest.mark.subprocess


def train(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        train_command(*args),
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(r: subprocess.CompletedProcess) -> str:
    """The user-facing failure: no traceback from the driver, an `error:` line naming the cause."""
    assert "Traceback" not in r.stderr, r.stderr[-4000:]
    lines = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, r.stdout[-2000:] + r.stderr[-4000:]
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run's output dir with three checkpoints, written by the learner itself (no Ray needed)."""
    out = learner_run(tmp_path_factory.mktemp("trained") / "run")
    assert len(complete_checkpoints(out / "checkpoints")) == 3
    return out


def test_resume_after_state_size_change_names_both_shapes_before_ray(trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    for extra in ([], ["--total_env_steps=60"]):
        t0 = time.monotonic()
        r = train(
            *SMALL_REACH, f"--output_dir={out}", "--resume", "--pipeline.proprio.joint_velocity=false", *extra
        )
        assert r.returncode == 2, r.stderr[-3000:]
        assert "Traceback" not in r.stderr and "Started a local Ray" not in r.stderr
        assert "'observation.state' checkpoint (18,) float32, config (12,) float32" in r.stderr
        assert time.monotonic() - t0 < 120
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # nothing written, nothing replaced


@pytest.mark.ray
def test_damaged_checkpoints_fall_back_to_the_previous_complete_one(trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    newest, second, third = complete_checkpoints(out / "checkpoints")[:3]
    # what only a full load finds (a sampling RNG state that is not one; the transitions are in
    # the replay store, not in checkpoints): the learner falls back
    state_path = newest / "learner.json"
    state = json.loads(state_path.read_text())
    state["rng"]["online"] = {"bit_generator": "PCG64", "state": "garbage"}
    state_path.write_text(json.dumps(state))
    # what the pre-flight finds (a truncated weights file): skipped before Ray starts
    model = second / "agent" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:1000])
    truncated = shutil.copytree(second, tmp_path / "truncated")  # the run may write a new `second`
    r = train(*SMALL_REACH, f"--output_dir={out}", "--resume", "--total_env_steps=60")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"checkpoint {second.name} is damaged: {model}" in r.stdout
    assert f"checkpoint {newest} cannot be loaded" in r.stdout
    assert f"trying the previous checkpoint {third.name}" in r.stdout
    assert f"resumed {third.name}" in r.stdout
    last = latest_checkpoint(out / "checkpoints")  # went on from there: a new checkpoint, which
    saved = json.loads((last / "learner.json").read_text())  # may replace a damaged one of its name
    assert saved["counters"]["env_steps"] >= 60 and saved["rng"]["online"]["state"] != "garbage"

    # evaluate on the truncated weights: one line naming the checkpoint, exit 2
    r = subprocess.run(
        module_command("hilserl_ray.evaluate", str(out), "--checkpoint", str(truncated), "--no-video"),
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 2 and f"checkpoint {truncated} cannot be loaded" in one_line_error(r)

    # none loadable: exit 2 naming them, before Ray
    for ckpt in complete_checkpoints(out / "checkpoints"):
        (ckpt / "learner.json").write_text("{")
    r = train(*SMALL_REACH, f"--output_dir={out}", "--resume")
    line = one_line_error(r)
    assert r.returncode == 2 and "no checkpoint in" in line and "learner.json" in line


def _robot_actor_pid(parent: int) -> int | None:
    """The pid of a `ray::Robot` worker below `parent` (the run's own local Ray)."""
    return next((p for p in descendants(parent) if command_line(p).startswith("ray::Robot")), None)


@pytest.mark.ray
def test_robot_actor_that_keeps_dying_ends_the_run_with_one_line(tmp_path):
    """kill -9 the robot actor more often than actors.max_restarts: no endless `env_steps`, the
    run stops (final checkpoint) with the error as one line and a non-zero exit."""
    out = tmp_path / "run"
    log = tmp_path / "driver.log"
    cmd = train_command(*SMALL_REACH, f"--output_dir={out}")
    cmd += ["--total_env_steps=100000", "--actors.max_restarts=1"]
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=f, stderr=subprocess.PIPE, text=True)
    try:
        killed: list[int] = []
        deadline = time.monotonic() + 240
        while len(killed) < 2 and time.monotonic() < deadline and proc.poll() is None:
            pid = _robot_actor_pid(proc.pid)
            if pid is not None and pid not in killed and "env_steps" in log.read_text():
                time.sleep(1.0)
                os.kill(pid, 9)
                killed.append(pid)
            time.sleep(0.5)
        if len(killed) < 2:
            proc.kill()
            raise AssertionError(log.read_text()[-3000:] + proc.communicate()[1][-3000:])
        t_kill = time.monotonic()
        _, err = proc.communicate(timeout=120)
        assert time.monotonic() - t_kill < 120
    finally:
        if proc.poll() is None:
            proc.kill()
    r = subprocess.CompletedProcess(cmd, proc.returncode, log.read_text(), err)
    line = one_line_error(r)
    assert proc.returncode != 0 and "robot actor 0 failed 2 times (actors.max_restarts=1)" in line
    assert "its process died" in line
    assert "restarting it" in r.stdout  # the first death was survived
    assert latest_checkpoint(out / "checkpoints") is not None  # the final checkpoint landed


@pytest.mark.ray
def test_robot_actor_that_cannot_start_ends_the_start_with_one_line(tmp_path):
    """The arm's gripper servo does not answer: the robot actor's constructor fails; the driver,
    which awaits it, stops at once (no `env_steps 0` forever), exit 2, the dir not claimed."""
    out = tmp_path / "run"
    cal = write_calibration(tmp_path / "follower.json")
    with FakeBus(ids=(1, 2, 3, 4, 5)) as fake:
        t0 = time.monotonic()
        r = train(
            "--config",
            str(ROOT / "tests" / "bad_inputs" / "configs" / "good_reach.yaml"),
            f"--output_dir={out}",
            "--robot.type=so101",
            f"--robot.port={fake.port}",
            f"--robot.calibration={cal}",
            "--robot.bus_timeout_ms=250",
            "--pipeline.intervention.source=none",
            "--ray.num_cpus=2",
            "--actors.start_timeout_s=120",
            timeout=240,
        )
    line = one_line_error(r)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "robot actor 0 could not start" in line and "gripper" in line, line
    assert time.monotonic() - t0 < 200
    assert not (out / ".hilserl_run").exists() and not (out / "checkpoints").exists()


@pytest.mark.ray
@pytest.mark.parametrize("signals", [1, 2], ids=["ctrl_c", "ctrl_c_twice"])
def test_ctrl_c_during_start_up_exits_130_and_leaves_no_ray_processes(signals, tmp_path):
    out = tmp_path / "run"
    cmd = train_command(*SMALL_REACH, f"--output_dir={out}", "--total_env_steps=100000")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # Ray is up, the learner is being built
            if "[hilserl_ray] run " in line:
                break
        else:
            raise AssertionError(
                f"the run ended before it started: {proc.wait()} {proc.stderr.read()[-3000:]}"
            )
        ray_procs = set(descendants(proc.pid))
        assert ray_procs, "the run's local Ray should have processes by now"
        for _ in range(signals):
            proc.send_signal(2)
            time.sleep(0.3)
        t0 = time.monotonic()
        rest, err = proc.communicate(timeout=120)
        assert time.monotonic() - t0 < 90
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    deadline = time.monotonic() + 20
    while still_running(ray_procs) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not still_running(ray_procs), [
        Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in still_running(ray_procs)
    ]
    assert not (out / ".hilserl_run").exists() and not (out / "checkpoints").exists()  # nothing claimed


@pytest.mark.ray
@pytest.mark.slow
def test_robot_actor_whose_arm_stops_answering_crash_loops_to_one_line(tmp_path):
    """A servo goes silent mid-run: the control loop fails, the driver restarts the actor, whose
    constructor then fails too; after actors.max_restarts the run ends, exit 2, the cause named."""
    out = tmp_path / "run"
    cal = write_calibration(tmp_path / "follower.json")
    with FakeBus() as fake:
        cmd = train_command("--config", str(ROOT / "tests/bad_inputs/configs/good_reach.yaml"))
        cmd += [
            f"--output_dir={out}",
            "--robot.type=so101",
            f"--robot.port={fake.port}",
            f"--robot.calibration={cal}",
        ]
        cmd += ["--robot.bus_timeout_ms=250", "--robot.reset_seconds=0.2", "--env.max_episode_steps=10"]
        cmd += [
            "--learner.training_starts=20",
            "--actors.max_restarts=1",
            "--ray.num_cpus=2",
            "--logging.every_seconds=1",
        ]
        log = tmp_path / "driver.log"
        with log.open("w") as f:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=f, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 300
            while "env_steps" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.5)
            assert "env_steps" in log.read_text(), log.read_text()[-3000:]
            fake[6].silent = True
            _, err = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
    line = one_line_error(subprocess.CompletedProcess(cmd, proc.returncode, log.read_text(), err))
    assert proc.returncode == 2 and "robot actor 0 failed 2 times (actors.max_restarts=1)" in line, line
    assert "gripper" in line
