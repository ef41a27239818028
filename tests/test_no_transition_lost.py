"""No transition is lost: a robot's partial chunk at a normal stop, and (below) learner kills."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import ray
from run_helpers import ENV, ROOT, train_command, wait_for

from hilserl_ray.configio import load_config

pytestmark = pytest.mark.ray


def test_a_normal_stop_sends_the_partial_chunk(module_ray, tmp_path):
    from hilserl_ray.runtime.learner import LearnerActor
    from hilserl_ray.runtime.robot import RobotActor, robot_actor_options

    cfg = load_config(
        ROOT / "configs" / "sim_reach.yaml",
        [
            f"--output_dir={tmp_path}",
            "--env.max_episode_steps=200",
            "--actors.chunk_size=64",
            "--learner.training_starts=1000000",
            "--policy.hidden_dims=[32,32]",
        ],
    )
    d = cfg.model_dump(mode="json")
    learner = LearnerActor.options(num_cpus=1, name="partial_chunk_learner").remote(d, None)
    robot = RobotActor.options(**robot_actor_options(cfg)).remote(d, 0, "partial_chunk_learner")
    wait_for(lambda: ray.get(robot.stats.remote())["env_steps"] >= 100, 120, "100 env steps")
    stopped = ray.get(robot.stop.remote())
    assert ray.get(learner.counters_now.remote())["env_steps"] == stopped["env_steps"]
    ray.get(learner.stop.remote())


def streamer_class():
    """A robot actor's transport without the robot: synthetic episodes whose rows name themselves."""

    @ray.remote(max_concurrency=2)
    class Streamer:
        def __init__(self, cfg_dict: dict, name: str, learner_name: str, first_episode: int, seed: int):
            import threading

            from hilserl_ray.buffer.synthetic import episodes_chunk, split_rows
            from hilserl_ray.config import TrainConfig
            from hilserl_ray.envs.pipeline import pipeline_spec
            from hilserl_ray.runtime.sender import ChunkSender

            spec = pipeline_spec(TrainConfig.model_validate(cfg_dict))
            self.producing = threading.Event()
            self.producing.set()

            def connect():
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    try:
                        handle = ray.get_actor(learner_name)
                        ray.get(handle.counters_now.remote(), timeout=10)
                        return handle
                    except (ValueError, ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                        time.sleep(0.2)
                return None

            self.sender = ChunkSender(name, 8, connect)
            self.sent: list[list[tuple[int, int]]] = []  # per sequence number: (episode, step) rows
            self.episodes_sent: list[int] = []  # per sequence number: episodes it ends

            def run():
                rng, eid = np.random.default_rng(seed), first_episode
                while self.producing.is_set():
                    length = int(rng.integers(5, 40))
                    chunk = episodes_chunk(spec, [length], first_episode_id=eid)
                    eid += 1
                    k = length + 1
                    cuts = np.cumsum(rng.integers(3, 20, k))
                    sizes = np.diff(np.r_[0, cuts[cuts < k], k])
                    for piece in split_rows(chunk, [int(x) for x in sizes]):
                        ends = bool(piece["is_last"][-1])
                        episode = {"return": 0.0, "success": False, "length": length}
                        episode.update(intervention_steps=0, policy_hz=0.0, actor=0)
                        keep = ~piece["is_last"]
                        state = piece["observation.state"]
                        self.sent.append([(int(e), int(s)) for e, s in state[keep][:, :2]])
                        self.episodes_sent.append(int(ends))
                        self.sender.send(piece, [episode] if ends else [])
                        time.sleep(0.005)

            self.thread = threading.Thread(target=run, daemon=True)
            self.thread.start()

        def acked(self) -> tuple[list[tuple[int, int]], int]:
            n = self.sender.acked_through + 1
            return [r for rows in self.sent[:n] for r in rows], sum(self.episodes_sent[:n])

        def finish(self) -> bool:
            self.producing.clear()
            self.thread.join()
            return self.sender.flush()

    return Streamer


def stored_rows(out: Path) -> tuple[list[tuple[int, int]], dict]:
    from hilserl_ray.buffer import ReplayBuffer
    from hilserl_ray.runtime.rundir import replay_dir

    buf = ReplayBuffer.open(replay_dir(out) / "online")
    pos = buf.live_positions()
    keep = pos[~np.asarray(buf._data["is_last"])[pos]]
    state = np.asarray(buf._data["observation.state"])[keep]
    e, s, ne, ns = buf_identity(buf)
    assert (ne == e).all() and (ns == s + 1).all(), "a transition links two moments of different times"
    return [(int(a), int(b)) for a, b in state[:, :2]], buf.meta


def buf_identity(buf):
    from hilserl_ray.buffer.synthetic import identity

    return identity(buf.sample(2048)) if len(buf) else (np.zeros(0),) * 4


@pytest.mark.timeout(600)  # eleven learner start-ups
def test_learner_killed_again_and_again_loses_no_acknowledged_transition(module_ray, tmp_path):
    """kill -9 of the learner at 10 random moments while two senders stream: afterwards the
    store holds every transition they had acknowledgements for, exactly once, and the counters
    match it."""
    from hilserl_ray.runtime.learner import LearnerActor

    cfg = load_config(
        ROOT / "configs" / "sim_reach.yaml",
        [f"--output_dir={tmp_path}", "--learner.training_starts=1000000000", "--policy.hidden_dims=[32,32]"],
    )
    d = cfg.model_dump(mode="json")
    name = "kill_loop_learner"

    def start():
        actor = LearnerActor.options(num_cpus=1, name=name, max_restarts=0).remote(d, None)
        ray.get(actor.ready.remote(), timeout=120)
        return actor, ray.get(actor.describe.remote())["pid"]

    learner, pid = start()
    Streamer = streamer_class()
    senders = [Streamer.remote(d, f"s{i}", name, 10_000 * (i + 1), i) for i in range(2)]
    rng = np.random.default_rng(14)
    before: list = []
    for _ in range(10):
        time.sleep(float(rng.uniform(0.1, 1.0)))
        before = [ray.get(s.acked.remote()) for s in senders]  # acknowledged before this kill
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda a=learner: _dead(a), 60, "the learner's death")
        ray.kill(learner, no_restart=True)
        wait_for(lambda: _name_free(name), 60, "the learner's name")
        learner, pid = start()
        rows, meta = stored_rows(tmp_path)
        stored = set(rows)
        for acked, _ in before:
            assert set(acked) <= stored, "an acknowledged transition is missing after the restart"
    assert all(ray.get([s.finish.remote() for s in senders], timeout=180))
    acked = [ray.get(s.acked.remote()) for s in senders]
    ray.get(learner.close.remote())
    rows, meta = stored_rows(tmp_path)
    all_acked = [r for a, _ in acked for r in a]
    assert len(all_acked) > sum(len(a) for a, _ in before) > 0
    assert sorted(rows) == sorted(all_acked), "each acknowledged transition stored exactly once"
    assert meta["counters"]["env_steps"] == len(rows)
    assert meta["counters"]["episodes"] == sum(n for _, n in acked)


def _dead(actor) -> bool:
    try:
        ray.get(actor.describe.remote(), timeout=5)
        return False
    except ray.exceptions.RayActorError:
        return True
    except ray.exceptions.GetTimeoutError:
        return False


def _name_free(name: str) -> bool:
    try:
        ray.get_actor(name)
        return False
    except ValueError:
        return True


@pytest.mark.subprocess
@pytest.mark.timeout(600)  # two driver start-ups: Ray alone takes 30 s+ on a loaded 2-core machine
def test_driver_killed_then_resume_finds_every_stored_transition(tmp_path):
    """kill -9 of the driver (its Ray and actors go with it): the store keeps at least what the
    run had reported, counters equal to its rows, and --resume starts from exactly that."""
    import fcntl
    import json
    import re
    import subprocess

    from hilserl_ray.buffer import ReplayBuffer
    from hilserl_ray.runtime.checkpoint import latest_checkpoint

    out, log = tmp_path / "run", tmp_path / "driver.log"
    args = train_command(
        "--config",
        "configs/sim_reach.yaml",
        f"--output_dir={out}",
        "--env.max_episode_steps=25",
        "--policy.batch_size=32",
        "--policy.hidden_dims=[32,32]",
        "--policy.latent_dim=16",
        "--learner.training_starts=50",
        "--checkpoint.every_updates=20",
        "--buffer.online_capacity=4000",
        "--logging.every_seconds=1",
        "--logging.tensorboard=false",
        "--ray.num_cpus=2",
    )
    proc = subprocess.Popen(
        [*args, "--total_env_steps=100000"], cwd=ROOT, env=ENV, stdout=log.open("w"), stderr=subprocess.STDOUT
    )

    def reported() -> int:
        path = out / "metrics.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return max([int(json.loads(x)["env_steps"]) for x in lines if x.endswith("}")] or [0])

    try:
        wait_for(lambda: latest_checkpoint(out / "checkpoints") and reported() >= 100, 240, "training")
        last_reported = reported()
        proc.kill()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    store = out / "replay" / "online"

    def writer_gone() -> bool:  # the learner died with the driver's Ray: its lock is free
        fd = os.open(store / "writer.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    wait_for(writer_gone, 60, "the learner to die with the driver")
    buf = ReplayBuffer.open(store)
    pos = buf.live_positions()
    steps = int((~np.asarray(buf._data["is_last"])[pos]).sum())
    assert buf.meta["counters"]["env_steps"] == steps >= last_reported
    valid = np.flatnonzero(buf._data["valid"])
    eid = np.asarray(buf._data["episode_id"])
    assert (eid[np.asarray(buf._data["next"])[valid] % buf.capacity] == eid[valid]).all()
    n_valid = len(buf)
    buf.close()

    r = subprocess.run(
        [*args, "--resume", f"--total_env_steps={steps + 50}"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    up = re.search(r"learner up \(pid \d+, device \w+, (\d+) online", r.stdout)
    assert up and int(up.group(1)) == n_valid, r.stdout[-2000:]
    after = json.loads((latest_checkpoint(out / "checkpoints") / "learner.json").read_text())["counters"]
    assert after["env_steps"] >= steps + 50
