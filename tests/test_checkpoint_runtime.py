"""Checkpoints in a running driver: named for their contents, no redundant save after a resume,
failures (unwritable directory, learner killed mid-save) handled without ending the run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import ray
from run_helpers import ROOT, wait_for

from hilserl_ray.configio import load_config
from hilserl_ray.runtime.checkpoint import latest_checkpoint, write_checkpoint

SMALL = [
    "--env.max_episode_steps=25",
    "--policy.batch_size=32",
    "--policy.hidden_dims=[32,32]",
    "--policy.latent_dim=16",
    "--learner.training_starts=50",
    "--learner.weights_every=5",
    "--checkpoint.every_updates=1000000",
    "--buffer.online_capacity=4000",
    "--logging.tensorboard=false",
    "--actors.num_robot_actors=1",
]


def small_cfg(out: Path, *extra: str):
    return load_config(ROOT / "configs" / "sim_reach.yaml", [*SMALL, f"--output_dir={out}", *extra])


def saved_updates(ckpt: Path) -> int:
    return json.loads((ckpt / "learner.json").read_text())["counters"]["updates"]


@pytest.mark.heavy
def test_resumed_learner_reports_no_bogus_updates_per_s(tmp_path, seeded_single_thread_torch):
    """The rate after a resume counts updates since the resume, not since update 0."""
    from hilserl_ray.buffer.synthetic import episodes_chunk
    from hilserl_ray.runtime.learner import Learner

    cfg = small_cfg(tmp_path, "--learner.training_starts=20", "--actors.env_steps_per_update=null")
    learner = Learner(cfg.model_dump(mode="json"))
    learner.add_chunk(episodes_chunk(learner.spec, [24, 24]))
    wait_for(lambda: learner.counters_now()["updates"] >= 30, 120, "30 updates")
    learner.stop()
    ckpt = write_checkpoint(tmp_path / "ck", None, lambda d: {**learner.save(str(d)), "step": 0})
    learner.close()  # releases the replay store for the next learner
    idle = small_cfg(tmp_path, "--learner.training_starts=1000000")  # no update after the resume
    resumed = Learner(idle.model_dump(mode="json"), resume_from=str(ckpt))
    assert resumed.counters_now()["updates"] >= 30
    resumed.stats()
    time.sleep(1.1)
    assert resumed.stats()["updates_per_s"] == 0.0
    resumed.close()


@pytest.mark.heavy
def test_a_killed_learner_comes_back_with_at_least_the_updates_it_reported(
    tmp_path, seeded_single_thread_torch
):
    """The driver's progress lines never show the update count going back: updates made after the
    last stored chunk, once reported by stats(), survive a kill -9 of the learner (they were lost
    with it, and the restarted learner counted on from the last chunk's count)."""
    from hilserl_ray.buffer.synthetic import episodes_chunk
    from hilserl_ray.runtime.learner import Learner

    cfg = small_cfg(tmp_path, "--learner.training_starts=20", "--actors.env_steps_per_update=null")
    learner = Learner(cfg.model_dump(mode="json"))
    learner.add_chunk(episodes_chunk(learner.spec, [24, 24]), source=("robot0", 0))
    wait_for(lambda: learner.counters_now()["updates"] >= 30, 120, "30 updates after the chunk")
    reported = learner.stats()["updates"]
    # a kill -9: nothing of the learner runs any more (its threads stopped here, its files released)
    learner._stop.set()
    learner._thread.join()
    learner._syncer.join()
    learner.online.close()
    learner.offline.ring.close()
    idle = small_cfg(tmp_path, "--learner.training_starts=1000000")
    back = Learner(idle.model_dump(mode="json"))
    assert back.counters_now()["updates"] >= reported > 0
    assert back.counters_now()["env_steps"] == 48
    back.close()


@pytest.mark.heavy
def test_storage_not_durable_keeps_rows_in_ram_and_a_resume_starts_empty(tmp_path):
    """storage.durable=false (sim fleets faster than the disk): no replay files, the learner
    trains from RAM, and a resume keeps the agent and counters but not the rows."""
    from hilserl_ray.buffer.synthetic import episodes_chunk
    from hilserl_ray.runtime.learner import Learner
    from hilserl_ray.runtime.rundir import replay_dir

    cfg = small_cfg(tmp_path, "--storage.durable=false", "--learner.training_starts=1000000")
    learner = Learner(cfg.model_dump(mode="json"))
    assert learner.add_chunk(episodes_chunk(learner.spec, [24, 24])) == 48
    assert len(learner.online) == 48 and not replay_dir(cfg.output_dir).exists()
    ckpt = write_checkpoint(tmp_path / "ck", None, lambda d: {**learner.save(str(d)), "step": 0})
    learner.stop()
    learner.close()
    resumed = Learner(cfg.model_dump(mode="json"), resume_from=str(ckpt))
    assert len(resumed.online) == 0 and resumed.counters_now()["env_steps"] == 48
    resumed.close()


def start_run(cfg, resume_from=None):
    from hilserl_ray.runtime.driver import Run, StopSignal

    run = Run(cfg, StopSignal())
    run.start([resume_from] if resume_from else [])
    return run


def progressed(run) -> None:
    """Wait until the learner's counters moved past the newest checkpoint's."""
    wait_for(lambda: ray.get(run.learner.counters_now.remote()) != run.last_saved, 120, "new transitions")


def poll_for(run, seconds: float) -> None:
    """The driver's own loop, stopped after `seconds`."""
    timer = threading.Timer(seconds, run.stop.event.set)
    timer.start()
    run.loop()
    timer.join()
    run.stop.event.clear()


@pytest.mark.ray
def test_checkpoints_are_named_for_their_contents_and_a_resume_saves_nothing_at_once(module_ray, tmp_path):
    out = tmp_path / "run"
    run = start_run(small_cfg(out, "--checkpoint.keep_last=10"))
    try:
        wait_for(lambda: ray.get(run.learner.counters_now.remote())["updates"] >= 30, 180, "30 updates")
        paths = [run.checkpoint() for _ in range(4)]  # while training runs
    finally:
        run.shutdown()
    for p in paths:
        assert p is not None and int(p.name) == saved_updates(p), p
    before = sorted(p.name for p in (out / "checkpoints").glob("[0-9]*"))
    last = latest_checkpoint(out / "checkpoints")
    u = saved_updates(last)
    # resume with every_updates <= the saved count and no training: any checkpoint now is redundant
    no_training = "--learner.training_starts=1000000000"
    resumed = start_run(small_cfg(out, f"--checkpoint.every_updates={u}", no_training), resume_from=last)
    try:
        poll_for(resumed, 3.0)
        assert sorted(p.name for p in (out / "checkpoints").glob("[0-9]*")) == before
    finally:
        resumed.shutdown()


@pytest.mark.ray
def test_checkpoint_failures_do_not_end_the_run(module_ray, tmp_path, capsys):
    out = tmp_path / "run"
    run = start_run(small_cfg(out))
    try:
        wait_for(lambda: ray.get(run.learner.counters_now.remote())["updates"] >= 1, 180, "training")
        good = run.checkpoint()
        assert good is not None
        # the checkpoint directory cannot be written (as on a full or read-only disk)
        shutil.move(out / "checkpoints", tmp_path / "moved")
        (out / "checkpoints").write_text("not a directory")
        assert run.checkpoint() is None
        assert "checkpoint failed" in capsys.readouterr().out
        (out / "checkpoints").unlink()
        shutil.move(tmp_path / "moved", out / "checkpoints")
        progressed(run)  # a checkpoint holds something new, or is not written
        assert run.checkpoint() is not None
        # the learner dies during a save: it is restarted and the run goes on
        pid = ray.get(run.learner.describe.remote())["pid"]
        os.kill(pid, signal.SIGKILL)
        assert run.checkpoint() is None
        assert "learner died" in capsys.readouterr().out
        assert ray.get(run.learner.describe.remote())["pid"] != pid
        progressed(run)
        assert run.checkpoint() is not None
        poll_for(run, 1.0)  # the poll loop carries on
    finally:
        run.shutdown()
    assert latest_checkpoint(out / "checkpoints") is not None
