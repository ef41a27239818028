"""A full disk under `output_dir` stops the run with one line, loses nothing acknowledged, and leaves
a usable checkpoint: each writer alone on a small tmpfs (no Ray), then a whole run on one.

The tmpfs needs `mount` (root, as here and in CI); elsewhere these tests skip saying so."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from run_helpers import ENV, ROOT, SMALL_REACH, train_command, wait_for

from hilserl_ray.buffer import ReplayBuffer
from hilserl_ray.buffer.store import check_store
from hilserl_ray.buffer.synthetic import episodes_chunk
from hilserl_ray.configio import load_config
from hilserl_ray.errors import DiskFull
from hilserl_ray.runtime.checkpoint import (
    complete_checkpoints,
    damaged_file,
    latest_checkpoint,
    make_room,
    write_checkpoint,
)
from hilserl_ray.runtime.learner import Learner
from hilserl_ray.runtime.metrics import MetricsLogger, read_metrics

FIX = "free space on it, or point output_dir to another disk"


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of its own (8 MiB): `fill` then takes its last free byte."""
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"a full disk needs a tmpfs of its own, and `mount` failed here: {r.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Write a file on `disk` until no byte fits (what is freed later is taken again)."""
    filler = disk / "filler"
    with open(filler, "ab", buffering=0) as f:
        for block in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * block)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    return filler


def reach_cfg(out: Path, *extra: str):
    return load_config(ROOT / "configs" / "sim_reach.yaml", [*SMALL_REACH[2:], f"--output_dir={out}", *extra])


def stored(out: Path) -> tuple[dict, int, int]:
    """The online store read back from disk: its committed counters, its rows that are env steps
    and its sampleable transitions."""
    check_store(out / "replay" / "online")  # every file agrees with the commit record
    buf = ReplayBuffer.open(out / "replay" / "online")
    try:
        steps = int(np.count_nonzero(~buf.column("is_last")[buf.live_positions()]))
        return buf.meta["counters"], steps, len(buf)
    finally:
        buf.close()


@pytest.mark.heavy
def test_a_full_disk_refuses_the_chunk_and_every_later_one_and_keeps_each_acknowledged(small_disk):
    out = small_disk / "run"
    cfg = reach_cfg(out, "--learner.training_starts=1000000000")
    learner = Learner(cfg.model_dump(mode="json"))
    acked, seq = 0, 0
    try:
        for _ in range(3):
            acked = learner.add_chunk(episodes_chunk(learner.spec, [24, 24], 100 * seq), source=("r", seq))
            seq += 1
        filler = fill(small_disk)
        with pytest.raises(DiskFull) as err:
            for _ in range(200):  # a chunk needs a new page of some field file within a few chunks
                acked = learner.add_chunk(
                    episodes_chunk(learner.spec, [24, 24], 100 * seq), source=("r", seq)
                )
                seq += 1
        line = err.value.message()
        assert line.startswith(f"{out}: the disk is full (no space left while storing replay rows)")
        assert FIX in line and "--resume" in line and "\n" not in line
        # sent again (its acknowledgement never came): still refused, never taken as stored
        with pytest.raises(DiskFull):
            learner.add_chunk(episodes_chunk(learner.spec, [24, 24], 100 * seq), source=("r", seq))
        assert learner.stats()["disk_full"].message() == line  # what the driver stops the run with
        assert learner.counters_now()["env_steps"] == acked
        learner.stop()  # no error: the rows committed stay committed
    finally:
        learner.close()
    counters, steps, _ = stored(out)
    assert counters["env_steps"] == steps == acked > 0

    # room again: the refused chunk, sent again, is stored (it had not counted as stored)
    filler.unlink()
    learner = Learner(cfg.model_dump(mode="json"))
    try:
        assert learner.counters_now()["env_steps"] == acked
        after = learner.add_chunk(episodes_chunk(learner.spec, [24, 24], 100 * seq), source=("r", seq))
        assert after == acked + 48
    finally:
        learner.close()
    counters, steps, _ = stored(out)
    assert counters["env_steps"] == steps == acked + 48


def test_a_learner_that_cannot_create_its_replay_store_says_the_disk_is_full(small_disk):
    out = small_disk / "run"
    fill(small_disk)
    with pytest.raises(DiskFull, match="no space left while creating the replay store"):
        Learner(reach_cfg(out, "--learner.training_starts=1000000000").model_dump(mode="json"))


def test_a_metrics_line_that_does_not_fit_is_taken_back(small_disk):
    out = small_disk / "run"
    metrics = MetricsLogger(out, tensorboard=False)
    for step in range(3):
        metrics.log(step, {"updates": step})
    fill(small_disk)
    with pytest.raises(DiskFull, match="no space left while writing metrics"):
        for step in range(3, 100_000):
            metrics.log(step, {"updates": step, "loss/critic": 0.5})
    metrics.close()  # nothing buffered: closing finds nothing to write
    text = (out / "metrics.jsonl").read_text()
    assert text.endswith("\n") and len(read_metrics(out)) == len(text.splitlines()) >= 3


def test_a_checkpoint_that_does_not_fit_leaves_the_previous_one_and_room_is_made_for_it(small_disk):
    root = small_disk / "run" / "checkpoints"

    def write(tmp: Path, n: int) -> dict:
        (tmp / "weights.bin").write_bytes(os.urandom(300_000))
        return {"step": n}

    for n in (10, 20, 30):
        write_checkpoint(root, None, lambda tmp, n=n: write(tmp, n), keep_last=3)
    fill(small_disk)
    with pytest.raises(OSError) as err:
        write_checkpoint(root, None, lambda tmp: write(tmp, 40), keep_last=3)
    assert err.value.errno == errno.ENOSPC
    assert latest_checkpoint(root).name == "0000000030"  # `last` still names a complete one
    assert [p.name for p in complete_checkpoints(root)] == ["0000000030", "0000000020", "0000000010"]
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []  # nothing half-written left
    assert make_room(root) == root / "0000000010"  # the oldest goes first
    # 300 kB freed, 300 kB taken: the new `last` pointer does not fit, the old one goes instead
    write_checkpoint(root, None, lambda tmp: write(tmp, 40), keep_last=3)
    assert latest_checkpoint(root).name == "0000000040"
    assert [p.name for p in complete_checkpoints(root)] == ["0000000040", "0000000030", "0000000020"]
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []
    # the newest is never the one to go
    assert make_room(root) == root / "0000000020"
    assert make_room(root) == root / "0000000030"
    assert make_room(root) is None
    assert latest_checkpoint(root).name == "0000000040"


@pytest.mark.ray
@pytest.mark.subprocess
@pytest.mark.timeout(600)  # two driver start-ups on a shared 2-core machine
def test_a_full_disk_stops_the_run_with_one_line_and_loses_nothing_acknowledged(small_disk):
    """The disk fills while robots send: the run stops (no robot actor restart), exit 2, one line
    naming the directory and the fix; the final checkpoint fits (the oldest made room for it) and
    holds what the store holds; with room again, `--resume` goes on with every stored transition."""
    out = small_disk / "run"
    log = small_disk.parent / "driver.log"
    cmd = train_command(*SMALL_REACH, f"--output_dir={out}", "--total_env_steps=100000")
    cmd += ["--checkpoint.every_updates=60", "--logging.every_seconds=3"]
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=f, stderr=subprocess.PIPE, text=True)
    try:
        # three checkpoints (checkpoint.keep_last): the disk fills mid-run, as training goes on
        wait_for(lambda: len(complete_checkpoints(out / "checkpoints")) >= 3, 300, "3 checkpoints", proc)
        filler = fill(small_disk)
        for _ in range(2):  # a save under way when the disk filled may still rotate one away
            time.sleep(1.0)
            fill(small_disk)
        t_full = time.monotonic()
        _, err = proc.communicate(timeout=180)
        stop_s = time.monotonic() - t_full
    finally:
        if proc.poll() is None:
            proc.kill()
    stdout = log.read_text()
    (small_disk.parent / "driver.err").write_text(err)
    assert proc.returncode == 2, stdout[-3000:] + err[-3000:]
    assert "Traceback" not in stdout + err, stdout[-3000:] + err[-3000:]
    assert "restarting it" not in stdout  # no robot actor restart loop
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}: the disk is full (no space left while "), (
        err
    )
    assert FIX in lines[0] and "--resume" in lines[0]
    assert stop_s < 90, stop_s

    # the final checkpoint fitted: older ones made room for it (the newest of them stays), and it
    # holds what the store holds
    assert "to make room for the final one" in stdout, stdout[-3000:]
    final, *older = complete_checkpoints(out / "checkpoints")
    assert final == latest_checkpoint(out / "checkpoints") and older
    assert all(damaged_file(c) is None for c in (final, *older))
    counters, steps, transitions = stored(out)
    saved = json.loads((final / "learner.json").read_text())["counters"]
    assert saved["env_steps"] == counters["env_steps"] == steps > 0
    printed = [int(x.split()[2]) for x in stdout.splitlines() if x.startswith("[hilserl_ray] env_steps")]
    assert printed and max(printed) <= steps  # every count the learner reported is stored

    # room again (the run's directory, as it was left, on a normal disk): --resume goes on
    filler.unlink()
    moved = small_disk.parent / "moved"
    shutil.copytree(out, moved)
    r = subprocess.run(
        train_command(*SMALL_REACH, f"--output_dir={moved}", "--resume", f"--total_env_steps={steps + 30}"),
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    up = next(x for x in r.stdout.splitlines() if "learner up" in x)
    assert f"{transitions} online" in up and f"resumed {final.name}" in up, up
    assert stored(moved)[0]["env_steps"] >= steps + 30
