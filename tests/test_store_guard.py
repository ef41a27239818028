"""A replay store checks itself on open: a missing manifest, a cut ring file, a torn commit record
or a wiped row_id is a named error (the file, what is wrong, the fix), before Ray at `--resume`
and in `data.export`; never a store silently made empty, never numpy's traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from run_helpers import ROOT, SMALL_REACH, learner_run

from hilserl_ray.buffer import ReplayBuffer
from hilserl_ray.buffer.store import COMMIT, MANIFEST, SLOT, StoreDamaged
from hilserl_ray.buffer.synthetic import episodes_chunk
from hilserl_ray.config import TrainConfig
from hilserl_ray.data import export
from hilserl_ray.envs.pipeline import pipeline_spec

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}


@pytest.fixture(scope="module")
def spec():
    return pipeline_spec(TrainConfig(buffer={"online_ratio": 1.0}))


def stored(spec, d: Path, cap: int = 64, lengths=(12, 9)) -> int:
    """A store at `d` holding two episodes; returns its transitions."""
    buf = ReplayBuffer(spec, cap, storage=d)
    buf.add_chunk(episodes_chunk(spec, list(lengths)), source=("robot", 0), meta={"env_steps": sum(lengths)})
    n = len(buf)
    buf.close()
    return n


def cut(path: Path, keep: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(keep)


def test_a_healthy_store_and_a_creation_cut_short_open_as_before(spec, tmp_path):
    n = stored(spec, tmp_path / "s")
    again = ReplayBuffer(spec, 64, storage=tmp_path / "s")
    assert len(again) == n and again.meta == {"env_steps": 21}
    again.close()
    # a learner killed while making a new store (files, no manifest, never opened): made again
    (tmp_path / "t").mkdir()
    np.save(tmp_path / "t" / "row_id.npy", np.full(64, -1, np.int64))
    fresh = ReplayBuffer(spec, 64, storage=tmp_path / "t")
    assert len(fresh) == 0
    fresh.close()


def test_a_missing_manifest_is_named_and_the_rows_stay(spec, tmp_path):
    d = tmp_path / "s"
    stored(spec, d)
    (d / MANIFEST).unlink()
    before = {p.name: p.read_bytes() for p in d.iterdir() if p.suffix == ".npy"}
    for readonly in (False, True):
        with pytest.raises(StoreDamaged) as e:
            ReplayBuffer(spec, 64, storage=d, readonly=readonly)
        msg = e.value.message()
        assert f"{d / MANIFEST}: missing" in msg and "none of its rows can be read" in msg
        assert "restore manifest.json" in msg and f"move {d} aside" in msg and "--overwrite" in msg
    with pytest.raises(StoreDamaged):
        ReplayBuffer.open(d)
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.suffix == ".npy"} == before  # not made anew


def test_a_cut_ring_file_is_named_with_the_rows_past_the_cut(spec, tmp_path):
    d = tmp_path / "s"
    stored(spec, d)
    path = d / "observation.state.npy"
    row = int(np.prod(spec.observation["observation.state"].shape)) * 4
    offset = np.load(path, mmap_mode="r").offset
    cut(path, offset + 10 * row)  # ring positions 0..9 whole; the store holds 23 rows
    for readonly in (False, True):
        with pytest.raises(StoreDamaged) as e:
            ReplayBuffer(spec, 64, storage=d, readonly=readonly)
        msg = e.value.message()
        assert msg.startswith(f"{path}: cut short") and "10 of its 64 ring positions" in msg, msg
        assert "13 of the 23 stored rows lie past the cut" in msg and "restore observation.state.npy" in msg
    cut(path, 40)  # inside the header
    with pytest.raises(StoreDamaged, match="not a readable .npy file"):
        ReplayBuffer.open(d)
    path.unlink()
    with pytest.raises(StoreDamaged, match=r"observation.state.npy: missing \(23 stored rows"):
        ReplayBuffer.open(d)


def test_a_field_file_of_another_shape_a_torn_commit_and_a_wiped_row_id_are_named(spec, tmp_path):
    d = tmp_path / "s"
    stored(spec, d)
    np.save(d / "reward.npy", np.zeros((64, 2), np.float32))
    with pytest.raises(StoreDamaged, match=r"reward.npy: holds \(64, 2\) float32, the manifest says \(64,\)"):
        ReplayBuffer(spec, 64, storage=d)

    d = tmp_path / "c"
    stored(spec, d)
    buf = ReplayBuffer(spec, 64, storage=d)  # a second commit: both slots written
    buf.add_chunk(episodes_chunk(spec, [5], first_episode_id=7), source=("robot", 1))
    buf.close()
    with open(d / COMMIT, "r+b") as f:
        for slot in (0, 1):
            f.seek(slot * SLOT + 20)
            f.write(b"garbage")
    with pytest.raises(StoreDamaged, match="commit.bin: no intact commit record"):
        ReplayBuffer(spec, 64, storage=d)

    d = tmp_path / "r"
    stored(spec, d)
    np.save(d / "row_id.npy", np.zeros(64, np.int64))  # zeroed: row 0 alone is right
    with pytest.raises(
        StoreDamaged, match=r"row_id.npy: 63 rows carry a row number no write leaves there \(22 of"
    ):
        ReplayBuffer(spec, 64, storage=d)

    d = tmp_path / "m"
    stored(spec, d)
    (d / COMMIT).unlink()
    with pytest.raises(StoreDamaged, match="commit.bin: missing, while rows are stored"):
        ReplayBuffer(spec, 64, storage=d)


# --------------------------------------------------------------------------- the commands
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run's output dir with stored transitions and a checkpoint, written by the learner itself."""
    return learner_run(tmp_path_factory.mktemp("stored") / "run", updates=(10,), episodes=[20, 20])


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def resume(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "hilserl_ray.train",
            *SMALL_REACH,
            f"--output_dir={out}",
            "--resume",
            "--total_env_steps=60",
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def error_line(r: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in r.stderr, r.stderr[-4000:]
    lines = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, r.stdout[-2000:] + r.stderr[-4000:]
    return lines[0]


@pytest.mark.parametrize("damage", ["manifest", "ring_file"])
def test_dry_run_of_a_resume_names_the_damaged_store_file(damage, run_dir, tmp_path, capsys):
    """`--resume --dry-run` checks the replay store as the run does before Ray."""
    from hilserl_ray import train

    out = copy_run(run_dir, tmp_path)
    args = [*SMALL_REACH, f"--output_dir={out}", "--resume", "--dry-run"]
    assert train.main(args) == 0
    assert f"replay store {out / 'replay'}: online and interventions checked" in capsys.readouterr().out
    if damage == "manifest":
        path = out / "replay" / "online" / MANIFEST
        path.unlink()
        expect = f"error: {path}: missing"
    else:
        path = out / "replay" / "online" / "observation.state.npy"
        cut(path, path.stat().st_size // 2)
        expect = f"error: {path}: cut short"
    assert train.main(args) == 2
    err = capsys.readouterr().err
    assert expect in err and "\n  fix: " in err and "Traceback" not in err, err


@pytest.mark.subprocess
def test_resume_names_a_missing_manifest_before_ray(run_dir, tmp_path):
    out = copy_run(run_dir, tmp_path)
    (out / "replay" / "online" / MANIFEST).unlink()
    r = resume(out)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-3000:]
    line = error_line(r)
    assert f"{out / 'replay' / 'online' / MANIFEST}: missing" in line, line
    assert "fix: restore manifest.json" in r.stderr and "Started a local Ray" not in r.stderr
    assert "learner up" not in r.stdout


@pytest.mark.subprocess
def test_resume_and_export_name_a_cut_ring_file(run_dir, tmp_path, capsys):
    out = copy_run(run_dir, tmp_path)
    path = out / "replay" / "online" / "observation.state.npy"
    cut(path, path.stat().st_size // 2)
    r = resume(out)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-3000:]
    assert f"{path}: cut short" in error_line(r) and "Started a local Ray" not in r.stderr

    capsys.readouterr()
    assert export.main(["--run", str(out), "--out", str(tmp_path / "exported")]) == 2
    err = capsys.readouterr().err
    assert f"error: {path}: cut short" in err and "Traceback" not in err, err
