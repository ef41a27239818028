"""Saving and loading replay buffers: identical contents, atomic replacement, clear refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hilserl_ray.buffer import BufferFileError, ReplayBuffer
from hilserl_ray.buffer import persist as persist_mod
from hilserl_ray.buffer.synthetic import episodes_chunk, identity, split_rows
from hilserl_ray.config import TrainConfig
from hilserl_ray.envs.pipeline import pipeline_spec


def make_spec(**proprio):
    cfg = TrainConfig(
        buffer={"online_ratio": 1.0},
        env={"cameras": [{"name": "front"}]},
        pipeline={"image": {"size": (16, 16)}, "proprio": proprio},
    )
    return pipeline_spec(cfg)


@pytest.fixture(scope="module")
def spec():
    return make_spec()


def wrapped_buffer(spec, cap=32):
    """A buffer that wrapped around and has an episode still open (its rest comes later)."""
    buf = ReplayBuffer(spec, capacity=cap, seed=3)
    pieces = split_rows(episodes_chunk(spec, [12, 25, 9]), [10, 20, 10, 9])  # 13 + 26 + 10 = 49 rows
    for p in pieces[:3]:
        buf.add_chunk(p)
    return buf, pieces[3]


def same_batches(a, b) -> bool:
    for key in ("observation", "next_observation"):
        for k in a[key]:
            if not np.array_equal(a[key][k].numpy(), b[key][k].numpy()):
                return False
    return all(
        np.array_equal(a[k].numpy(), b[k].numpy()) for k in a if k not in ("observation", "next_observation")
    )


def test_save_load_is_identical_and_continues_open_episodes(spec, tmp_path):
    buf, rest = wrapped_buffer(spec)
    buf.save(tmp_path / "buf")
    loaded = ReplayBuffer.load(tmp_path / "buf", spec=spec, seed=3)
    assert loaded.spec.fingerprint() == spec.fingerprint()
    assert (len(loaded), loaded.size, loaded.capacity) == (len(buf), buf.size, buf.capacity)
    for name, arr in buf._data.items():
        assert np.array_equal(loaded._data[name], arr), name
    assert same_batches(buf.sample(128), loaded.sample(128))
    # the open episode (2) continues after the load exactly as it would have without it
    buf.add_chunk(rest)
    loaded.add_chunk(rest)
    assert len(loaded) == len(buf)
    assert same_batches(buf.sample(256), loaded.sample(256))
    e, s, ne, ns = identity(loaded.sample(512))
    assert (ne == e).all() and (ns == s + 1).all() and ((e == 2) & (s == 8)).any()


def test_save_replaces_atomically_and_a_failed_save_keeps_the_old_one(spec, tmp_path, monkeypatch):
    buf, rest = wrapped_buffer(spec)
    target = tmp_path / "buf"
    buf.save(target)
    n_before = len(buf)
    buf.add_chunk(rest)
    saves = 0

    def failing_save(f, a):
        nonlocal saves
        saves += 1
        if saves == 3:
            raise OSError("disk full")
        np.lib.format.write_array(f, a)

    monkeypatch.setattr(persist_mod.np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        buf.save(target)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["buf"]  # no temp dir left behind
    assert len(ReplayBuffer.load(target)) == n_before
    buf.save(target)
    assert len(ReplayBuffer.load(target)) == len(buf) > n_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["buf"]


def test_interrupted_swap_loads_the_moved_aside_copy(spec, tmp_path):
    buf, _ = wrapped_buffer(spec)
    buf.save(tmp_path / "buf")
    (tmp_path / "buf").rename(tmp_path / ".buf.old-1234abcd")  # crash between the two renames
    with pytest.warns(UserWarning, match="a save was interrupted"):
        assert len(ReplayBuffer.load(tmp_path / "buf")) == len(buf)


def test_load_refuses_another_pipeline_spec(spec, tmp_path):
    buf, _ = wrapped_buffer(spec)
    buf.save(tmp_path / "buf")
    state6 = make_spec(joint_velocity=False, ee_pose=False)
    with pytest.raises(BufferFileError, match=r"'observation.state' saved \(18,\) float32, expected \(6,\)"):
        ReplayBuffer.load(tmp_path / "buf", spec=state6)


def test_corrupt_or_missing_files_are_named(spec, tmp_path):
    buf, _ = wrapped_buffer(spec)
    d = buf.save(tmp_path / "buf")
    img = d / "observation.images.front.npy"
    img.write_bytes(img.read_bytes()[:1000])
    with pytest.raises(BufferFileError, match="observation.images.front.npy"):
        ReplayBuffer.load(d)
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(BufferFileError, match="manifest.json: unreadable"):
        ReplayBuffer.load(d)
    with pytest.raises(BufferFileError, match="no saved replay buffer here"):
        ReplayBuffer.load(tmp_path / "nothing")


def test_load_with_other_capacity_keeps_newest_rows_and_keeps_linking(spec, tmp_path):
    buf, rest = wrapped_buffer(spec)
    buf.save(tmp_path / "buf")
    small = ReplayBuffer.load(tmp_path / "buf", capacity=15)
    big = ReplayBuffer.load(tmp_path / "buf", capacity=400)
    assert small.size == 15 and big.size == buf.size == 32
    assert len(big) == len(buf)
    for b in (small, big):
        b.add_chunk(rest)
        e, s, ne, ns = identity(b.sample(512))
        assert (ne == e).all() and (ns == s + 1).all()
    # newest 15 rows before `rest`: episode 1's rows 12..25 and episode 2's row 0;
    # `rest` (episode 2's rows 1..9) then overwrites the oldest 9 of them
    assert set(zip(*identity(small.sample(512))[:2], strict=True)) == {(1, t) for t in range(21, 25)} | {
        (2, t) for t in range(9)
    }


def test_mmap_load_reads_lazily_and_never_writes_the_files(spec, tmp_path):
    buf, rest = wrapped_buffer(spec)
    d = buf.save(tmp_path / "buf")
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    m = ReplayBuffer.load(d, mmap=True, seed=3)
    assert isinstance(m._data["observation.images.front"], np.memmap)
    assert same_batches(buf.sample(64), m.sample(64))
    m.add_chunk(rest)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    assert json.loads((d / "manifest.json").read_text())["transitions"] == len(buf)


def test_empty_buffer_round_trips(spec, tmp_path):
    ReplayBuffer(spec, capacity=10).save(tmp_path / "empty")
    loaded = ReplayBuffer.load(tmp_path / "empty", spec=spec)
    assert (len(loaded), loaded.size, loaded.capacity) == (0, 0, 10)
    loaded.add_chunk(episodes_chunk(spec, [3]))
    assert len(loaded) == 3


def test_save_refuses_to_replace_a_directory_that_is_not_a_buffer(spec, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("name: run\n")
    with pytest.raises(BufferFileError, match="is not a saved replay buffer"):
        ReplayBuffer(spec, capacity=10).save(tmp_path / "run")
    assert (tmp_path / "run" / "config.yaml").exists()


def test_sampling_continues_its_random_stream_after_load(spec, tmp_path):
    """A resumed run draws the batches the uninterrupted run would have drawn, not the seed's first ones."""
    buf, _ = wrapped_buffer(spec)
    buf.sample(32)  # move the stream on
    buf.save(tmp_path / "buf")
    loaded = ReplayBuffer.load(tmp_path / "buf", spec=spec)
    a, b = buf.sample(64), loaded.sample(64)
    assert all(np.array_equal(x, y) for x, y in zip(identity(a), identity(b), strict=True))
