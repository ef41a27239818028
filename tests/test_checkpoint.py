"""Checkpoint directories are atomic: a kill mid-write never costs the previous checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from run_helpers import ENV

from hilserl_ray.runtime.checkpoint import COMPLETE, latest_checkpoint, write_checkpoint


def _writer(payload: str):
    def write(tmp: Path) -> dict:
        (tmp / "weights.bin").write_text(payload)
        return {"payload": payload}

    return write


def test_write_publishes_and_points_last(tmp_path):
    p1 = write_checkpoint(tmp_path, 10, _writer("a"))
    p2 = write_checkpoint(tmp_path, 20, _writer("b"))
    assert latest_checkpoint(tmp_path) == p2
    assert (p2 / "weights.bin").read_text() == "b" and (p2 / COMPLETE).is_file()
    assert p1.exists()
    assert (tmp_path / "last").read_text().strip() == p2.name


def test_keep_last_prunes_oldest(tmp_path):
    for step in range(1, 6):
        write_checkpoint(tmp_path, step, _writer(str(step)), keep_last=2)
    names = sorted(p.name for p in tmp_path.iterdir() if p.name[0].isdigit())
    assert names == [f"{4:010d}", f"{5:010d}"]


def test_failed_write_leaves_previous_and_no_debris(tmp_path):
    good = write_checkpoint(tmp_path, 1, _writer("ok"))

    def boom(tmp: Path) -> dict:
        (tmp / "half").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_checkpoint(tmp_path, 2, boom)
    assert latest_checkpoint(tmp_path) == good
    assert not list(tmp_path.glob(".tmp-*"))


def test_kill_9_during_write_keeps_previous_last(tmp_path):
    good = write_checkpoint(tmp_path, 1, _writer("ok"))
    script = textwrap.dedent(
        f"""
        import time, pathlib
        from hilserl_ray.runtime.checkpoint import write_checkpoint
        def slow(tmp):
            (tmp / "part1").write_text("x")
            pathlib.Path({str(tmp_path / "started")!r}).write_text("1")
            time.sleep(60)
            return {{}}
        write_checkpoint(pathlib.Path({str(tmp_path)!r}), 2, slow)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env=ENV)
    deadline = time.time() + 30
    while not (tmp_path / "started").exists():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert latest_checkpoint(tmp_path) == good
    assert (tmp_path / "last").read_text().strip() == good.name
    # the next write cleans the debris and moves on
    p3 = write_checkpoint(tmp_path, 3, _writer("next"))
    assert latest_checkpoint(tmp_path) == p3
    assert not list(tmp_path.glob(".tmp-*"))


def test_pointer_to_incomplete_dir_falls_back(tmp_path):
    good = write_checkpoint(tmp_path, 1, _writer("ok"))
    (tmp_path / f"{2:010d}").mkdir()  # no COMPLETE marker
    (tmp_path / "last").write_text(f"{2:010d}\n")
    assert latest_checkpoint(tmp_path) == good


def test_no_checkpoint_is_none(tmp_path):
    assert latest_checkpoint(tmp_path / "nothing") is None


KILL_AFTER_NTH_FS_CALL = """
import os, pathlib, shutil, signal, sys
from hilserl_ray.runtime import checkpoint as ck
n, calls = int(sys.argv[2]), [0]
def killing(fn):
    def wrapped(*a, **k):
        out = fn(*a, **k)
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    return wrapped
os.replace, os.rename, shutil.rmtree = map(killing, (os.replace, os.rename, shutil.rmtree))
if hasattr(ck, "exchange"):
    ck.exchange = killing(ck.exchange)
def write(tmp):
    (tmp / "weights.bin").write_text("new")
    return {}
ck.write_checkpoint(pathlib.Path(sys.argv[1]), 5, write)
"""


@pytest.mark.heavy
def test_saving_the_same_step_twice_never_leaves_last_pointing_at_nothing(tmp_path):
    """A kill after any rename/delete of a same-step save leaves a complete step-5 checkpoint."""
    for n in range(1, 20):
        root = tmp_path / f"run{n}"
        write_checkpoint(root, 4, _writer("older"))
        write_checkpoint(root, 5, _writer("old"))
        r = subprocess.run(
            [sys.executable, "-c", KILL_AFTER_NTH_FS_CALL, str(root), str(n)],
            env=ENV,
            capture_output=True,
            text=True,
        )
        assert r.returncode in (0, -signal.SIGKILL), r.stderr
        last = latest_checkpoint(root)
        assert last is not None and last.name == f"{5:010d}", (n, sorted(p.name for p in root.iterdir()))
        assert (last / "weights.bin").read_text() in ("old", "new")
        assert (root / "last").read_text().strip() == last.name
        if r.returncode == 0:  # every step of the save was tried
            assert (last / "weights.bin").read_text() == "new"
            break
    else:
        raise AssertionError("the save never finished")
    write_checkpoint(root, 6, _writer("next"))  # the next save cleans any debris
    assert not list(root.glob(".tmp-*"))
