"""Checkpoint rotation counts only checkpoints that read back: a damaged one is set aside as
`<name>.damaged` (one line), never kept in a good one's place; the one a run resumed from stays
until newer good ones are complete."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from run_helpers import ROOT, SMALL_REACH, learner_run
from safetensors.numpy import save_file

from hilserl_ray import train
from hilserl_ray.runtime.checkpoint import (
    POINTER,
    complete_checkpoints,
    damaged_file,
    latest_checkpoint,
    set_aside_damaged,
    write_checkpoint,
)
from hilserl_ray.runtime.resume import loadable_checkpoints

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
PARTS = (
    "agent/model.safetensors",
    "agent/train.safetensors",
    "agent/agent.json",
    "learner.json",
    "torch_rng.npy",
)


def fill(d: Path, step: int) -> dict:
    """The files a learner's checkpoint holds, small."""
    (d / "agent").mkdir()
    save_file({"w": np.zeros(4, np.float32)}, str(d / "agent" / "model.safetensors"))
    save_file({"m": np.zeros(4, np.float32)}, str(d / "agent" / "train.safetensors"))
    (d / "agent" / "agent.json").write_text(
        json.dumps({"spec": {}, "policy_config": {}, "num_updates": step})
    )
    (d / "learner.json").write_text(json.dumps({"counters": {"updates": step}}))
    np.save(d / "torch_rng.npy", np.zeros(8, np.uint8))
    return {"updates": step}


def damage(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


@pytest.mark.parametrize("part", PARTS)
def test_a_damaged_checkpoint_is_set_aside_and_never_counted(part, tmp_path):
    root = tmp_path / "checkpoints"
    for step in (10, 20, 30):
        write_checkpoint(root, step, lambda d, s=step: fill(d, s), keep_last=2, check=damaged_file)
    assert names(root) == ["0000000020", "0000000030", POINTER]
    damage(root / "0000000030" / part)
    # a resumed run went on from 20 (30 did not load) and saves 40: 30 must not count as kept
    lines: list[str] = []
    write_checkpoint(root, 40, lambda d: fill(d, 40), keep_last=2, check=damaged_file, report=lines.append)
    assert names(root) == ["0000000020", "0000000030.damaged", "0000000040", POINTER]
    assert len(lines) == 1 and lines[0].startswith("warning: checkpoint 0000000030 is damaged (")
    assert f"{root / '0000000030' / part} (" in lines[0] and lines[0].endswith(
        f"set aside as {root}/0000000030.damaged"
    )
    # the next save deletes 20 (two good, newer ones are complete); the damaged one stays aside
    write_checkpoint(root, 50, lambda d: fill(d, 50), keep_last=2, check=damaged_file, report=lines.append)
    assert names(root) == ["0000000030.damaged", "0000000040", "0000000050", POINTER] and len(lines) == 1


def test_what_only_a_full_load_found_is_set_aside_and_last_names_a_good_one(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (10, 20, 30):
        write_checkpoint(root, step, lambda d, s=step: fill(d, s))
    lines: list[str] = []
    moved = set_aside_damaged(
        root, lines.append, {root / "0000000030": "checkpoint 0000000030 cannot be loaded"}
    )
    assert moved == [root / "0000000030.damaged"] and (root / "0000000030.damaged" / "learner.json").is_file()
    assert lines == [
        f"warning: checkpoint 0000000030 is damaged (checkpoint 0000000030 cannot be loaded); set aside as "
        f"{root}/0000000030.damaged"
    ]
    assert (root / POINTER).read_text().strip() == "0000000020" and latest_checkpoint(
        root
    ) == root / "0000000020"
    # a second damaged 30 later (the same step saved again, damaged again): its own name
    write_checkpoint(root, 30, lambda d: fill(d, 30))
    damage(root / "0000000030" / "learner.json")
    set_aside_damaged(root, lines.append)
    assert (root / "0000000030.damaged-2").is_dir() and complete_checkpoints(root) == [
        root / "0000000020",
        root / "0000000010",
    ]


# ------------------------------------------------------------------------------ a real resume
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run's output dir with three checkpoints, written by the learner itself (no Ray needed)."""
    return learner_run(tmp_path_factory.mktemp("trained") / "run")


def test_last_naming_a_missing_checkpoint_is_one_warning_naming_the_one_used(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (10, 20):
        write_checkpoint(root, step, lambda d, s=step: fill(d, s))
    (root / POINTER).write_text("0000000030\n")  # e.g. its directory deleted by hand
    lines: list[str] = []
    assert loadable_checkpoints(root, lines.append) == [root / "0000000020", root / "0000000010"]
    assert lines == [
        f"warning: {root / POINTER} names checkpoint '0000000030', which is missing; using 0000000020 instead"
    ]
    (root / "0000000030").mkdir()  # there, but never completed
    lines.clear()
    loadable_checkpoints(root, lines.append)
    assert len(lines) == 1 and "'0000000030', which is incomplete" in lines[0]


def test_resume_dry_run_warns_of_last_naming_a_missing_checkpoint(trained, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    shutil.rmtree(out / "checkpoints" / "0000000030")  # `last` still names it
    monkeypatch.chdir(ROOT)
    assert train.main([*SMALL_REACH, f"--output_dir={out}", "--resume", "--dry-run"]) == 0
    warned = [x for x in capsys.readouterr().out.splitlines() if x.startswith("warning:")]
    assert warned == [
        f"warning: {out / 'checkpoints' / POINTER} names checkpoint '0000000030', which is missing; "
        "using 0000000020 instead"
    ]


@pytest.mark.ray
@pytest.mark.subprocess
@pytest.mark.timeout(600)
def test_resume_past_a_damaged_newest_checkpoint_keeps_the_good_ones(trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    root = out / "checkpoints"
    damage(root / "0000000030" / "agent" / "model.safetensors")
    r = subprocess.run(
        [sys.executable, "-m", "hilserl_ray.train", *SMALL_REACH, f"--output_dir={out}", "--resume"]
        + ["--total_env_steps=60", "--checkpoint.keep_last=2", "--checkpoint.every_updates=1000000"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "resumed 0000000020" in r.stdout
    aside = [x for x in r.stdout.splitlines() if "set aside as" in x]
    assert len(aside) == 1 and "checkpoint 0000000030 is damaged" in aside[0], r.stdout[-3000:]
    # kept: the one it resumed from and the final one (same name if no update came since);
    # the damaged one is aside, counted nowhere
    good = complete_checkpoints(root)
    assert len(good) == 2 and root / "0000000020" in good, good
    assert all(damaged_file(c) is None for c in good) and (root / "0000000030.damaged").is_dir()
