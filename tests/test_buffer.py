"""Replay buffer behaviour the learner relies on: correct transitions, FIFO, interventions, threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from hilserl_ray.buffer import ChunkError, MixedSampler, ReplayBuffer
from hilserl_ray.buffer.synthetic import episodes_chunk, identity, split_rows
from hilserl_ray.config import TrainConfig
from hilserl_ray.envs.pipeline import pipeline_spec

CAM = "observation.images.front"


def make_spec(cameras=("front",), size=(16, 16), **pipeline):
    cfg = TrainConfig(
        buffer={"online_ratio": 1.0},
        env={"cameras": [{"name": c} for c in cameras]},
        pipeline={"image": {"size": size}, **pipeline},
    )
    return pipeline_spec(cfg)


@pytest.fixture(scope="module")
def spec():
    return make_spec()


def check_batch(batch, lengths_by_episode: dict[int, int] | None = None, truncated: bool = False):
    """Every sampled transition pairs row (e, t) with (e, t+1) and with its own action/reward."""
    e, s, ne, ns = identity(batch)
    assert (ne == e).all() and (ns == s + 1).all()
    for key, obs in (("observation", (e, s)), ("next_observation", (ne, ns))):
        for cam in [k for k in batch[key] if k.startswith("observation.images.")]:
            img = batch[key][cam].numpy()
            assert img.dtype == np.uint8
            assert (img[:, 0, 0, 0] == obs[1] % 256).all() and (img[:, -1, -1, 1] == obs[0] % 256).all()
    assert (batch["action"].numpy()[:, 0] == s).all()
    assert (batch["reward"].numpy() == 1000 * e + s).all()
    assert (batch["discrete_penalty"].numpy() == np.where(s % 3 == 0, np.float32(-0.02), 0)).all()
    for k in ("action", "reward", "terminated", "discrete_penalty", "is_intervention"):
        assert batch[k].dtype == torch.float32 and batch[k].shape[0] == len(e), k
    if lengths_by_episode is not None:
        final = np.array([s_ == lengths_by_episode[int(e_)] - 1 for e_, s_ in zip(e, s, strict=True)])
        assert (batch["terminated"].numpy() == (final & (not truncated))).all()
    return set(zip(e.tolist(), s.tolist(), strict=True))


def test_sample_pairs_each_observation_with_its_own_next(spec):
    lengths = [5, 12, 1, 30]
    buf = ReplayBuffer(spec, capacity=1000)
    chunk = episodes_chunk(spec, lengths)
    for piece in split_rows(chunk, [3, 9, 1, 20, 19]):  # episode boundaries inside and across chunks
        buf.add_chunk(piece)
    assert len(buf) == sum(lengths) and buf.size == sum(lengths) + len(lengths)
    batch = buf.sample(2048)
    assert batch["observation"][CAM].shape == (2048, 16, 16, 3)
    seen = check_batch(batch, dict(enumerate(lengths)))
    assert seen == {(e, t) for e, n in enumerate(lengths) for t in range(n)}  # never an is_last row


def test_truncated_episode_bootstraps_from_its_own_final_observation(spec):
    buf = ReplayBuffer(spec, capacity=100)
    buf.add_chunk(episodes_chunk(spec, [4], first_episode_id=0, truncated=True))
    buf.add_chunk(episodes_chunk(spec, [4], first_episode_id=1))
    batch = buf.sample(512)
    check_batch(batch)
    e, s, ne, ns = identity(batch)
    end0 = (e == 0) & (s == 3)
    assert end0.any() and (ne[end0] == 0).all() and (ns[end0] == 4).all()  # not episode 1's first frame
    assert (batch["terminated"].numpy()[end0] == 0).all()  # time limit: bootstrap
    assert (batch["terminated"].numpy()[(e == 1) & (s == 3)] == 1).all()


def test_ring_wraps_fifo_and_only_complete_transitions_remain(spec):
    cap = 50
    lengths = [10, 20, 7, 30]  # 71 rows
    buf = ReplayBuffer(spec, capacity=cap)
    chunk = episodes_chunk(spec, lengths)
    for piece in split_rows(chunk, [13, 13, 13, 13, 13, 6]):
        buf.add_chunk(piece)
    rows = [(e, t) for e, n in enumerate(lengths) for t in range(n + 1)]
    alive = set(rows[-cap:])
    expected = {(e, t) for e, t in alive if t < lengths[e]}
    assert buf.size == cap and len(buf) == len(expected)
    assert check_batch(buf.sample(4096), dict(enumerate(lengths))) == expected


def test_chunk_larger_than_capacity_keeps_newest_rows(spec):
    buf = ReplayBuffer(spec, capacity=30)
    buf.add_chunk(episodes_chunk(spec, [10, 40]))  # 52 rows: only episode 1's rows 11..40 fit
    assert len(buf) == 29
    assert check_batch(buf.sample(1024)) == {(1, t) for t in range(11, 40)}


def test_interleaved_actors_link_across_their_own_chunks(spec):
    buf = ReplayBuffer(spec, capacity=500)
    a = split_rows(episodes_chunk(spec, [8, 15], first_episode_id=0), [5, 10, 10])
    b = split_rows(episodes_chunk(spec, [20, 3], first_episode_id=100), [7, 7, 7, 4])
    for piece in [a[0], b[0], b[1], a[1], b[2], a[2], b[3]]:
        buf.add_chunk(piece)
    assert len(buf) == 8 + 15 + 20 + 3
    check_batch(buf.sample(2048), {0: 8, 1: 15, 100: 20, 101: 3})


def test_open_episode_whose_last_row_was_overwritten_does_not_link_to_another(spec):
    buf = ReplayBuffer(spec, capacity=20)
    head, tail = split_rows(episodes_chunk(spec, [10], first_episode_id=0), [5, 6])
    buf.add_chunk(head)  # rows 0..4 of episode 0 at positions 0..4; the episode is still running
    buf.add_chunk(episodes_chunk(spec, [17], first_episode_id=1))  # 18 rows
    buf.add_chunk(episodes_chunk(spec, [2], first_episode_id=2))  # position 4 now holds (2, 1)
    buf.add_chunk(tail)  # rows 5..10: row 4 is gone, so (0, 4) is no transition and (2, 1) keeps (2, 2)
    seen = check_batch(buf.sample(4096))
    assert seen == {(1, t) for t in range(7, 17)} | {(2, 0), (2, 1)} | {(0, t) for t in range(5, 10)}
    assert len(buf) == 10 + 2 + 5


def test_only_interventions_keeps_them_and_their_next_rows_across_chunks(spec):
    inter = np.zeros(21, bool)
    inter[[5, 6, 7, 12, 19]] = True  # 12 ends a chunk; 19 is the last transition (next = is_last row)
    chunk = episodes_chunk(spec, [20], first_episode_id=3, intervention=inter)
    buf = ReplayBuffer(spec, capacity=100)
    stored = [buf.add_chunk(p, only_interventions=True) for p in split_rows(chunk, [13, 6, 2])]
    assert stored == [4 + 1, 1 + 0, 2]  # rows 5,6,7,8,12 | 13 | 19,20
    assert len(buf) == 5
    batch = buf.sample(1024)
    assert check_batch(batch, {3: 20}) == {(3, t) for t in (5, 6, 7, 12, 19)}
    assert (batch["is_intervention"].numpy() == 1).all()


def test_memory_per_transition_is_one_uint8_observation_plus_small_fields():
    one = ReplayBuffer(make_spec(size=(128, 128)), capacity=10)
    two = ReplayBuffer(make_spec(cameras=("front", "gripper_cam"), size=(128, 128)), capacity=10)
    # image 49,152 + state 18*4 + action 4*4 + reward, penalty 2*4 + 4 flags + episode id 8
    # + next link 8 + 2 sampling flags
    assert one.bytes_per_transition == 49_152 + 72 + 16 + 8 + 4 + 8 + 8 + 2 == 49_270
    assert two.bytes_per_transition == 49_270 + 49_152
    assert "49,270 B per row" in one.memory_report()


def test_large_capacity_costs_ram_only_for_rows_written():
    def rss_mb() -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    before = rss_mb()
    buf = ReplayBuffer(make_spec(size=(128, 128)), capacity=100_000)  # 4.9 GB at capacity
    assert rss_mb() - before < 100
    assert buf.capacity * buf.bytes_per_transition > 4.5e9


@pytest.mark.heavy
def test_concurrent_add_and_sample_never_see_a_torn_or_mislinked_row(spec):
    buf = ReplayBuffer(spec, capacity=300, seed=1)
    buf.add_chunk(episodes_chunk(spec, [10], first_episode_id=0))
    stop, errors = threading.Event(), []

    def ingest():
        try:
            eid = 1
            for _ in range(300):
                for piece in split_rows(episodes_chunk(spec, [17, 9], first_episode_id=eid), [11, 11, 6]):
                    buf.add_chunk(piece)
                eid += 2
        except Exception as e:  # reported by the main thread
            errors.append(e)
        finally:
            stop.set()

    t = threading.Thread(target=ingest)
    t.start()
    batches = 0
    while not stop.is_set() or batches < 5:
        check_batch(buf.sample(64))
        batches += 1
    t.join()
    assert not errors and batches >= 5
    assert len(buf) > 0 and buf._written == 11 + 300 * 28


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (CAM, lambda c: c[CAM].astype(np.float32) / 255, "expected dtype uint8, got float32"),
        ("terminated", lambda c: c["terminated"].astype(int), ".astype(bool)"),
        (
            "reward",
            lambda c: np.where(np.arange(len(c["reward"])) == 3, np.nan, c["reward"]),
            "non-finite value at row 3",
        ),
        ("observation.state", lambda c: c["observation.state"][:, :6], "expected shape (11, 18)"),
        ("action", lambda c: c["action"][:-1], "same number of rows"),
    ],
)
def test_bad_chunk_field_is_named(spec, field, value, message):
    chunk = episodes_chunk(spec, [10])
    chunk[field] = value(chunk)
    buf = ReplayBuffer(spec, capacity=50)
    with pytest.raises(ChunkError, match=f"'{field}'|rows") as err:
        buf.add_chunk(chunk)
    assert message in str(err.value)
    assert buf.size == 0


def test_wrong_camera_key_suggests_the_spec_name(spec):
    chunk = episodes_chunk(spec, [3])
    chunk["observation.images.frnt"] = chunk.pop(CAM)
    with pytest.raises(ChunkError, match="did you mean 'observation.images.front'"):
        ReplayBuffer(spec, capacity=50).add_chunk(chunk)


def test_malformed_episode_rows_are_rejected(spec):
    buf = ReplayBuffer(spec, capacity=50)
    chunk = episodes_chunk(spec, [3, 3])
    chunk["episode_id"][:] = 7  # episode 7 would continue after its final row
    with pytest.raises(ChunkError, match="continues after its is_last row 3"):
        buf.add_chunk(chunk)
    chunk = episodes_chunk(spec, [3, 3, 3])
    chunk["episode_id"][8:] = 0  # episode 0 split into two runs
    with pytest.raises(ChunkError, match="separate runs"):
        buf.add_chunk(chunk)


def test_empty_buffer_sample_explains(spec):
    buf = ReplayBuffer(spec, capacity=50)
    buf.add_chunk(split_rows(episodes_chunk(spec, [10]), [1, 10])[0])  # one row, no next yet
    assert len(buf) == 0
    with pytest.raises(RuntimeError, match="empty replay buffer"):
        buf.sample(4)


def test_mixer_takes_the_configured_share_and_falls_back(spec):
    online, offline = ReplayBuffer(spec, 500), ReplayBuffer(spec, 500)
    mixer = MixedSampler(online, offline, online_ratio=0.25)
    online.add_chunk(episodes_chunk(spec, [30, 30], first_episode_id=0))
    assert (identity(mixer.sample(64))[0] < 1000).all()  # offline empty: all online
    offline.add_chunk(episodes_chunk(spec, [40], first_episode_id=1000))
    batch = mixer.sample(256)
    e = identity(batch)[0]
    assert (e[:64] < 1000).all() and (e[64:] >= 1000).all()
    check_batch(batch, {0: 30, 1: 30, 1000: 40})
    with pytest.raises(RuntimeError, match="both replay buffers are empty"):
        MixedSampler(ReplayBuffer(spec, 10), ReplayBuffer(spec, 10)).sample(8)


def test_mixer_add_chunk_sends_interventions_to_both(spec):
    online, offline = ReplayBuffer(spec, 500), ReplayBuffer(spec, 500)
    inter = np.zeros(26, bool)
    inter[[2, 3, 20]] = True
    assert MixedSampler(online, offline).add_chunk(episodes_chunk(spec, [10, 14], intervention=inter)) == (
        26,
        5,
    )
    assert len(online) == 24 and len(offline) == 3
    assert check_batch(offline.sample(256)) == {(0, 2), (0, 3), (1, 9)}


def test_mixer_rejects_buffers_of_different_pipelines(spec):
    other = make_spec(proprio={"joint_velocity": False, "ee_pose": False})
    with pytest.raises(ValueError, match=r"'observation.state' offline \(6,\) float32, online \(18,\)"):
        MixedSampler(ReplayBuffer(spec, 10), ReplayBuffer(other, 10))


def test_buffer_keeps_its_own_copy_of_read_only_chunks(spec):
    """Chunks from ray.get are read-only views owned by the sender; the buffer must not alias them."""
    chunk = episodes_chunk(spec, [6])
    for a in chunk.values():
        a.setflags(write=False)
    buf = ReplayBuffer(spec, capacity=50)
    buf.add_chunk(chunk)
    for a in chunk.values():
        a.setflags(write=True)
        a[...] = 0  # the sender's memory is reused or gone
    check_batch(buf.sample(128), {0: 6})


def test_cuda_device_without_cuda_is_a_clear_error(spec):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available here; use device='cpu'"):
        ReplayBuffer(spec, capacity=10, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_match_cpu_batches(spec):
    chunk = episodes_chunk(spec, [9, 4])
    cpu, gpu = ReplayBuffer(spec, 50, seed=2), ReplayBuffer(spec, 50, device="cuda", seed=2)
    cpu.add_chunk(chunk)
    gpu.add_chunk(chunk)
    a, b = cpu.sample(64), gpu.sample(64)
    assert b["observation"][CAM].is_cuda and b["observation"][CAM].dtype == torch.uint8
    assert torch.equal(a["next_observation"][CAM], b["next_observation"][CAM].cpu())
    assert torch.equal(a["reward"], b["reward"].cpu())
