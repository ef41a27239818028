"""The Ray runtime as a user runs it: real local Ray, real MuJoCo, the CLI in a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import ray
from run_helpers import ENV, ROOT, SMALL_REACH, module_command, start_cluster, train_command, wait_for

from hilserl_ray.configio import load_config
from hilserl_ray.runtime.checkpoint import latest_checkpoint
from hilserl_ray.runtime.procs import session

pytestmark = pytest.mark.ray


def train_cmd(out: Path, *extra: str) -> list[str]:
    return train_command(*SMALL_REACH, f"--output_dir={out}", *extra)


def train(out: Path, *extra: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        train_cmd(out, *extra), env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def counters(out: Path) -> dict:
    last = latest_checkpoint(out / "checkpoints")
    assert last is not None, f"no checkpoint in {out}"
    return json.loads((last / "learner.json").read_text())["counters"]


def trained(out: Path, min_updates: int = 1):
    def pred():
        path = out / "metrics.jsonl"
        if not path.exists():
            return False
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        return any(r.get("updates", 0) >= min_updates for r in rows)

    return pred


@pytest.mark.subprocess
def test_end_to_end_resume_and_continue(tmp_path):
    out = tmp_path / "run"
    # --resume with no checkpoint: one warning line, then a fresh run
    r = train(out, "--resume", "--total_env_steps=300")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "no checkpoint" in r.stdout and "starting fresh" in r.stdout
    pages = json.loads((out / "console.json").read_text())  # the run lists each robot actor's page
    assert len(pages) == 1 and f"console, robot actor 0: {pages[0]['url']}" in r.stdout
    first = counters(out)
    assert first["env_steps"] >= 300 and first["updates"] > 0 and first["episodes"] > 0
    assert (out / "config.yaml").is_file()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["env_steps"] >= 300 and "success_rate" in rows[-1]

    # a fresh run into the same dir refuses (exit 2) and loses nothing
    r = train(out, "--total_env_steps=300", timeout=60)
    assert r.returncode == 2 and "not empty" in r.stderr and "--resume" in r.stderr
    assert counters(out) == first

    # resume continues the counters, with a changed training setting said and applied
    r = train(out, "--resume", "--total_env_steps=450", "--policy.actor_lr=0.0001")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "resume: policy.actor_lr: 0.0003 -> 0.0001 (the config's setting applies from now on)" in r.stdout
    second = counters(out)
    assert second["env_steps"] >= 450 and second["updates"] > first["updates"]
    assert second["episodes"] > first["episodes"]

    r = subprocess.run(module_command("hilserl_ray.plot", str(out)), env=ENV, capture_output=True, text=True)
    assert r.returncode == 0 and (out / "curves.png").stat().st_size > 10_000

    # the trained policy alone, deterministic, with a video of its episodes
    r = subprocess.run(
        module_command("hilserl_ray.evaluate", str(out), "--episodes", "2"),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    ev = json.loads((out / "eval.json").read_text())
    assert ev["episodes"] == 2 and len(ev["per_episode"]) == 2 and (out / "eval.mp4").stat().st_size > 1000


@pytest.mark.subprocess
def test_learner_restart_then_sigint_leaves_a_resumable_checkpoint(tmp_path):
    out = tmp_path / "run"
    out_log = tmp_path / "driver.log"
    proc = subprocess.Popen(
        train_cmd(out, "--total_env_steps=100000"),
        env=ENV,
        cwd=ROOT,
        stdout=out_log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(trained(out, 5), 180, "training to start", proc)
        # a dead learner is restarted by the driver from the last checkpoint
        wait_for(lambda: latest_checkpoint(out / "checkpoints"), 120, "a first checkpoint", proc)
        pid = int(re.search(r"learner up \(pid (\d+)", log_so_far(out_log)).group(1))
        os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda: "learner died: restarting it from" in log_so_far(out_log), 120, "learner restart", proc
        )
        wait_for(lambda: log_so_far(out_log).count("learner up") == 2, 120, "the new learner", proc)
        t0 = time.time()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        log = log_so_far(out_log)
        assert time.time() - t0 < 30, "shutdown took longer than shutdown_timeout_s"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, log[-3000:]
    assert "SIGINT received" in log and "checkpoint" in log
    c = counters(out)
    assert c["updates"] >= 5 and c["env_steps"] > 0
    # the restarted learner came back with every stored transition: env_steps never went back
    steps = [json.loads(x)["env_steps"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps), steps
    # the checkpoint is loadable: the agent weights are in it, the transitions in the replay store
    last = latest_checkpoint(out / "checkpoints")
    assert (last / "agent").is_dir() and (out / "replay" / "online" / "commit.bin").is_file()


def log_so_far(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def ray_head(env: dict):
    """`ray start --head` on localhost in its own temp dir and session; torn down by that session
    alone, so other Ray clusters on the machine (a developer's training run) are left alone, unlike
    `ray stop`. (Matching the temp dir in command lines missed the dashboard agent, renamed
    `ray::DashboardAgent`: it outlived the test spinning at 90% of a core, with its forkserver.)"""
    ray_bin = str(Path(sys.executable).parent / "ray")
    temp_dir = tempfile.mkdtemp(prefix="rayt", dir="/tmp")  # short: Ray's socket paths have a limit
    dash = _free_port()
    start = subprocess.Popen(
        [
            ray_bin,
            "start",
            "--head",
            f"--port={_free_port()}",
            "--num-cpus=2",
            f"--temp-dir={temp_dir}",
            "--include-dashboard=true",
            f"--dashboard-port={dash}",
            # the agent's own port too: its default (52365) is taken by any other Ray on the machine,
            # and without it `ray job submit` gets "No available agent" for good
            f"--dashboard-agent-listen-port={_free_port()}",
            "--dashboard-host=127.0.0.1",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its pid is the session id of every Ray process it starts
    )
    try:
        out, _ = start.communicate(timeout=120)
        assert start.returncode == 0, out
        yield ray_bin, f"http://127.0.0.1:{dash}"
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in session(start.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(2)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.subprocess
def test_ray_job_submit_and_job_stop_checkpoint(tmp_path):
    """`ray start --head` on localhost, `ray job submit`, then `ray job stop` lands a final checkpoint."""
    env = {**ENV, "RAY_AUTH_MODE": "token"}
    out = tmp_path / "run"
    # the runtime env the README documents for `ray job submit`
    runtime_env = json.dumps(
        {"env_vars": {"RAY_JOB_STOP_SIGNAL": "SIGINT", "RAY_JOB_STOP_WAIT_TIME_S": "30"}}
    )
    with ray_head(env) as (ray_bin, address):
        submit = [
            ray_bin,
            "job",
            "submit",
            f"--address={address}",
            "--no-wait",
            f"--working-dir={ROOT}",
            f"--runtime-env-json={runtime_env}",
            "--",
            *train_cmd(out, "--total_env_steps=100000"),
        ]

        def submitted():  # the job agent needs a few seconds after `ray start` on a busy machine
            r = subprocess.run(submit, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
            if r.returncode != 0 and "No available agent" in r.stdout + r.stderr:
                return None
            assert r.returncode == 0, r.stdout + r.stderr
            return r

        sub = wait_for(submitted, 120, "the job agent")
        job_id = re.search(r"raysubmit_[A-Za-z0-9]+", sub.stdout).group(0)
        wait_for(trained(out, 5), 180, "the job to train")
        stop = subprocess.run(
            [ray_bin, "job", "stop", f"--address={address}", job_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert stop.returncode == 0, stop.stdout + stop.stderr
        logs = subprocess.run(
            [ray_bin, "job", "logs", f"--address={address}", job_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        assert "SIGINT received" in logs, logs[-3000:]
        assert counters(out)["updates"] >= 5


def test_killed_robot_actor_restarts_and_training_continues(local_ray, tmp_path):
    from hilserl_ray.runtime.learner import LearnerActor
    from hilserl_ray.runtime.robot import RobotActor, robot_actor_options

    cfg = load_config(ROOT / "configs" / "sim_reach.yaml", [*SMALL_REACH[2:], f"--output_dir={tmp_path}"])
    d = cfg.model_dump(mode="json")
    learner = LearnerActor.options(num_cpus=1, name="test_learner").remote(d, None)
    robot = RobotActor.options(**robot_actor_options(cfg)).remote(d, 0, "test_learner")
    wait_for(lambda: ray.get(learner.stats.remote())["updates"] > 0, 120, "first updates")
    pid = ray.get(robot.stats.remote())["pid"]
    page = ray.get(robot.console_info.remote())["url"]
    os.kill(pid, signal.SIGKILL)
    before = ray.get(learner.stats.remote())
    # Ray restarts the actor; its loop starts again by itself and the learner keeps training
    new = wait_for(lambda: _stats_or_none(robot), 120, "the robot actor to come back")
    assert new["pid"] != pid and new["alive"]
    page2 = ray.get(robot.console_info.remote())["url"]  # the new incarnation serves its own page
    assert page2 != page and urllib.request.urlopen(page2, timeout=30).status == 200
    wait_for(
        lambda: ray.get(learner.stats.remote())["env_steps"] > before["env_steps"] + 50, 120, "new env steps"
    )
    assert ray.get(learner.stats.remote())["updates"] > before["updates"]
    ray.get(robot.stop.remote())
    ray.get(learner.stop.remote())


def _stats_or_none(actor):
    try:
        return ray.get(actor.stats.remote(), timeout=5)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return None


def test_real_robot_actor_is_pinned_by_label_and_owns_the_arm():
    from hilserl_ray.runtime.robot import robot_actor_options

    cfg = load_config(ROOT / "configs" / "so101_real.yaml")
    opts = robot_actor_options(cfg)
    assert opts["label_selector"] == {"robot": "so101"} and opts["resources"] == {"so101": 1}

    # a robot node and a third node with no arm
    cluster, (robot_node, _) = start_cluster({"resources": {"so101": 1}, "labels": {"robot": "so101"}}, {})
    ray.init(address=cluster.address)
    try:

        @ray.remote
        class Where:
            def node(self):
                return ray.get_runtime_context().get_node_id()

        first = Where.options(**{k: v for k, v in opts.items() if k != "max_task_retries"}).remote()
        assert ray.get(first.node.remote(), timeout=60) == robot_node.node_id
        second = Where.options(label_selector=opts["label_selector"], resources=opts["resources"]).remote()
        ready, _ = ray.wait([second.node.remote()], timeout=3)
        assert not ready, "a second actor must not drive the same arm"
        ray.kill(first)
        assert ray.get(second.node.remote(), timeout=60) == robot_node.node_id
    finally:
        ray.shutdown()
        cluster.shutdown()
