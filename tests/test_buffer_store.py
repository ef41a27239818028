"""The durable replay store: rows survive a reopen and a kill at any write; chunks are exactly-once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from hilserl_ray.buffer import ReplayBuffer
from hilserl_ray.buffer.offline import DatasetRows, OfflineBuffer
from hilserl_ray.buffer.store import StoreError
from hilserl_ray.buffer.synthetic import episodes_chunk, identity, split_rows
from hilserl_ray.config import TrainConfig
from hilserl_ray.envs.pipeline import pipeline_spec


def make_spec():
    cfg = TrainConfig(
        buffer={"online_ratio": 1.0},
        env={"cameras": [{"name": "front"}]},
        pipeline={"image": {"size": (16, 16)}},
    )
    return pipeline_spec(cfg)


@pytest.fixture(scope="module")
def spec():
    return make_spec()


def pieces(spec, lengths=(12, 25, 9), sizes=(10, 20, 10, 9), first=0):
    return split_rows(episodes_chunk(spec, list(lengths), first_episode_id=first), list(sizes))


def assert_true_transitions(buf: ReplayBuffer, n: int = 512) -> None:
    e, s, ne, ns = identity(buf.sample(n))
    assert (ne == e).all() and (ns == s + 1).all(), "a transition's next observation is from another time"


def test_rows_survive_a_reopen_and_open_episodes_continue(spec, tmp_path):
    p = pieces(spec)
    mem = ReplayBuffer(spec, 32, seed=3)
    buf = ReplayBuffer(spec, 32, seed=3, storage=tmp_path / "s")
    for i, c in enumerate(p[:3]):
        mem.add_chunk(c)
        buf.add_chunk(c, source=("robot", i), meta={"env_steps": i})
    buf.close()
    again = ReplayBuffer(spec, 32, seed=3, storage=tmp_path / "s")
    assert (len(again), again.size, again.meta) == (len(mem), mem.size, {"env_steps": 2})
    for name in ("next", "is_start", *spec.observation):
        assert np.array_equal(np.asarray(again._data[name]), mem._data[name]), name
    # episode 2 is open: its rest continues it, as without the reopen
    mem.add_chunk(p[3])
    again.add_chunk(p[3], source=("robot", 3))
    assert len(again) == len(mem)
    assert_true_transitions(again)
    again.close()


def test_a_chunk_sent_twice_is_stored_once_and_a_gap_never_links(spec, tmp_path):
    p = pieces(spec, lengths=(60,), sizes=(15, 15, 15, 16))
    buf = ReplayBuffer(spec, 200, storage=tmp_path / "s")
    buf.add_chunk(p[0], source=("robot", 0))
    buf.add_chunk(p[1], source=("robot", 1))
    n = len(buf)
    assert buf.is_stored(("robot", 1)) and buf.add_chunk(p[1], source=("robot", 1)) == 0 and len(buf) == n
    # chunk 2 was lost: chunk 3 must not continue step 29 with step 45
    buf.add_chunk(p[3], source=("robot", 3))
    assert len(buf) == 29 + 15  # 29 + 14 transitions + chunk 3's link-free 15 rows (one is final)
    assert_true_transitions(buf, 2048)
    buf.close()


def test_spec_or_capacity_change_is_refused_with_the_fix(spec, tmp_path):
    ReplayBuffer(spec, 32, storage=tmp_path / "s").close()
    with pytest.raises(StoreError, match="capacity 32 rows.*set the capacity back to 32"):
        ReplayBuffer(spec, 64, storage=tmp_path / "s")
    other = pipeline_spec(TrainConfig(buffer={"online_ratio": 1.0}, env={"cameras": [{"name": "front"}]}))
    with pytest.raises(StoreError, match="another feature spec"):
        ReplayBuffer(other, 32, storage=tmp_path / "s")


def write_until_killed(spec, store: Path, acks: Path, kill_after: int) -> None:
    """In a forked child: stream chunks into the store, dying half-way through the n-th pwrite."""
    real, calls = os.pwrite, [0]

    def pwrite(fd, data, offset):
        calls[0] += 1
        if calls[0] == kill_after:
            real(fd, bytes(data)[: len(data) // 2], offset)
            os.kill(os.getpid(), signal.SIGKILL)
        return real(fd, data, offset)

    os.pwrite = pwrite
    buf = ReplayBuffer(spec, 40, storage=store)
    rng = np.random.default_rng(kill_after)
    seq = buf._senders["a"] + 1 if "a" in buf._senders else 0
    chunk = episodes_chunk(spec, [int(t) for t in rng.integers(3, 30, 8)], first_episode_id=100 * kill_after)
    k = len(chunk["episode_id"])
    cuts = np.cumsum(rng.integers(1, 12, 40))
    sizes = np.diff(np.r_[0, cuts[cuts < k], k])
    fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    for i, piece in enumerate(split_rows(chunk, [int(x) for x in sizes])):
        buf.add_chunk(piece, source=("a", seq + i), meta={"acked": seq + i})
        os.write(fd, f"{seq + i}\n".encode())  # the acknowledgement


@pytest.mark.heavy
def test_a_kill_during_any_write_keeps_every_acknowledged_chunk_and_no_bad_link(spec, tmp_path):
    """A writer is killed half-way through its n-th pwrite, for many n, on a small wrapping ring."""
    store, acks = tmp_path / "s", tmp_path / "acks"
    killed = 0
    for n in [3, 7, 11, 19, 23, 40, 57, 81, 99, 130, 161, 170, 10_000]:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                write_until_killed(spec, store, acks, n)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        killed += os.WIFSIGNALED(status)
        acked = [int(x) for x in acks.read_text().split()] if acks.exists() else []
        buf = ReplayBuffer(spec, 40, storage=store)
        if acked:  # everything acknowledged is there, nothing links across the kill
            assert buf._senders["a"] >= acked[-1] and buf.meta["acked"] >= acked[-1]
        if len(buf):
            assert_true_transitions(buf, 1024)
        assert (buf._data["row_id"][np.flatnonzero(buf._data["valid"])] >= 0).all()
        buf.close()
    assert killed >= 10 and buf._written > 40  # the ring wrapped


def test_offline_dataset_is_sampled_in_place_with_the_ring_in_proportion(spec, tmp_path):
    data = episodes_chunk(spec, [30, 30, 30], first_episode_id=500)
    mapped = {}
    for k, v in data.items():  # as the conversion cache hands it over: read-only memory maps
        np.save(tmp_path / f"{k}.npy", v)
        mapped[k] = np.load(tmp_path / f"{k}.npy", mmap_mode="r")
    ds = DatasetRows(spec, mapped, seed=1)
    key = spec.image_keys[0]
    assert np.shares_memory(ds._cols[key], mapped[key]) and len(ds) == 90  # not copied
    ring = ReplayBuffer(spec, 100, seed=2)
    ring.add_chunk(episodes_chunk(spec, [29], first_episode_id=7))
    off = OfflineBuffer(ring, [ds], seed=3)
    assert len(off) == 90 + 29
    from hilserl_ray.buffer import MixedSampler

    online = ReplayBuffer(spec, 100)
    online.add_chunk(episodes_chunk(spec, [10], first_episode_id=1))
    batch = MixedSampler(online, off, 0.0).sample(4000)
    e, s, ne, ns = identity(batch)
    assert (ne == e).all() and (ns == s + 1).all()
    share = np.mean(e >= 500)
    assert abs(share - 90 / 119) < 0.03, share


@pytest.mark.heavy
def test_syncs_from_the_timer_and_a_checkpoint_at_once_while_chunks_arrive(spec, tmp_path):
    import threading

    buf = ReplayBuffer(spec, 64, storage=tmp_path / "s")
    errors: list[BaseException] = []

    def syncing():
        try:
            for _ in range(30):
                buf.sync()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=syncing) for _ in range(2)]
    for t in threads:
        t.start()
    for i, c in enumerate(pieces(spec, lengths=(40, 40, 40), sizes=[41] * 3) * 10):
        buf.add_chunk(c, source=("robot", i))
    for t in threads:
        t.join()
    assert not errors, errors
    buf.close()
