"""The one env loop (`runtime.collector`) in the real sim, and the robot actor's loop around it
against a stand-in learner: no Ray."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from run_helpers import ROOT, wait_for

from hilserl_ray.configio import load_config
from hilserl_ray.envs.intervention import no_events
from hilserl_ray.envs.pipeline import pipeline_spec
from hilserl_ray.policy import ActorPolicy
from hilserl_ray.rig import make_env
from hilserl_ray.runtime.collector import Collector
from hilserl_ray.runtime.robot import Robot

STEPS = 12  # per episode (reach: the time limit, unless the target is reached first)
NO_SOURCE = ["--pipeline.intervention.source=none", "--buffer.online_ratio=1.0"]  # the policy alone


def reach(*overrides: str):
    return load_config(
        ROOT / "configs" / "sim_reach.yaml",
        [
            f"--env.max_episode_steps={STEPS}",
            "--policy.hidden_dims=[32,32]",
            "--console.enabled=false",
            "--actors.env_steps_per_update=null",
            *overrides,
        ],
    )


def actions(spec, n: int, seed: int = 0) -> list[np.ndarray]:
    """Random moves, gripper staying."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = np.zeros(spec.action.shape, np.float32)
        a[:3] = rng.uniform(-1, 1, 3)
        a[-1] = 1.0
        out.append(a)
    return out


class RerecordAt:
    """An intervention source that never acts and asks to redo the episode at its `n`-th step."""

    def __init__(self, n: int):
        self.n, self.steps = n, 0

    def reset(self) -> None:
        self.steps = 0

    def action(self, obs, env):
        self.steps += 1

    def events(self) -> dict[str, bool]:
        return {**no_events(), "rerecord": self.steps == self.n}

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- the collector
def test_rows_are_the_envs_steps_and_each_episode_ends_with_a_last_row():
    """Stepped side by side with the same env made by hand (same seed, same oracle takeovers):
    a row holds the observation acted on, the applied action and what followed; an episode's
    end adds the is_last row of its final observation; its numbers add up the rows."""
    cfg = reach()
    spec = pipeline_spec(cfg)
    collector = Collector(cfg, seed=3, first_episode_id=100)
    env = make_env(cfg, seed=3)
    try:
        obs, _ = env.reset(seed=3)
        collector.reset(seed=3)
        moves = iter(actions(spec, 4 * STEPS))
        total = 0
        for episode_id in (100, 101):
            rows, step = [], None
            while step is None or not step.done:
                a = next(moves)
                step = collector.step(a)
                row = step.row
                for k in spec.observation:
                    np.testing.assert_array_equal(row[k], obs[k])
                obs, reward, terminated, truncated, info = env.step(a)
                np.testing.assert_array_equal(row["action"], info["action"])
                assert row["reward"] == np.float32(reward) and row["episode_id"] == episode_id
                assert (row["terminated"], row["truncated"]) == (terminated, truncated)
                assert row["is_intervention"] == info["is_intervention"] and not row["is_last"]
                rows += step.rows
            last = rows[-1]
            assert last["is_last"] and last["episode_id"] == episode_id and not last["action"].any()
            for k in spec.observation:
                np.testing.assert_array_equal(last[k], obs[k])
            ep, steps = step.episode, rows[:-1]
            total += len(steps)
            assert ep.id == episode_id and ep.length == len(steps) <= STEPS
            assert ep.ret == pytest.approx(sum(float(r["reward"]) for r in steps))
            assert ep.intervention_steps == sum(r["is_intervention"] for r in steps)
            assert ep.success == bool(info["is_success"]) and not ep.rerecord and ep.policy_hz > 0
            stats = ep.stats(actor=0, arm="a")
            assert stats == {
                "return": ep.ret,
                "success": ep.success,
                "length": ep.length,
                "intervention_steps": ep.intervention_steps,
                "policy_hz": ep.policy_hz,
                "actor": 0,
                "arm": "a",
            }
            obs, _ = env.reset()
            collector.reset()
        assert (collector.episodes, collector.steps) == (2, total)
    finally:
        collector.close()
        env.close()


def test_a_rerecord_ends_the_episode_with_no_last_row_and_the_next_gets_a_new_id():
    cfg = reach()
    collector = Collector(cfg, seed=0, source=RerecordAt(4))
    try:
        collector.reset(seed=0)
        move = actions(pipeline_spec(cfg), 1)[0]
        steps = [collector.step(move) for _ in range(4)]
        assert [s.done for s in steps] == [False, False, False, True]
        end = steps[-1]
        assert end.episode.rerecord and end.episode.length == 4 and len(end.rows) == 1
        assert end.row["truncated"] and not end.row["is_last"]
        collector.reset()
        assert collector.step(move).row["episode_id"] == end.row["episode_id"] + 1
    finally:
        collector.close()


def test_raw_is_the_robots_observation_the_action_was_taken_from():
    cfg = reach()
    collector = Collector(cfg, seed=0)
    try:
        collector.reset(seed=0)
        before = collector.tap.obs
        step = collector.step(actions(pipeline_spec(cfg), 1)[0])
        assert step.raw is before and collector.tap.obs is not before
        assert step.raw["observation.state"].shape == (6,)  # joints, before proprioception
    finally:
        collector.close()


# ------------------------------------------------------------------------ the robot's loop
class FakeLearner:
    """The learner as a robot sees it, in this process: each chunk acknowledged at once. It trains
    one update each time it is asked for its counters; `stop` is set once `stop_at` env steps
    were asked for (in `pump`, called once per step)."""

    def __init__(
        self, stop: threading.Event, stop_at: int | None = None, weights=None, pace=None, first=None
    ):
        self.stop, self.stop_at, self.new_weights, self.pace = stop, stop_at, weights, pace
        self.first = first  # the weights `connect` answers with
        self.versions_at_steps: list[int] = []  # the robot's weights version at each step's pump
        self.chunks: list[dict[str, np.ndarray]] = []
        self.episodes: list[dict] = []
        self.acked_steps = self.updates = self.pumps = 0
        self.ahead = 0  # chunks that came while the robot should have been waiting

    def __len__(self) -> int:
        return 0

    def send(self, chunk, episodes) -> None:
        if self.pace is not None:
            starts, ratio = self.pace
            self.ahead += self.acked_steps > starts + self.updates * ratio
        self.chunks.append(chunk)
        self.episodes += episodes
        self.acked_steps += int((~chunk["is_last"]).sum())

    def pump(self) -> None:
        self.versions_at_steps.append(self.robot.weights_version)
        self.pumps += 1
        if self.pumps == self.stop_at:
            self.stop.set()

    def flush(self, give_up=lambda: False) -> bool:
        return True

    def connect(self):
        return self.first

    def weights(self, have_version: int):
        reply, self.new_weights = self.new_weights, None
        return reply

    def counters(self):
        return None

    def counters_now(self) -> dict:
        self.updates += 1
        return {"env_steps": self.acked_steps, "updates": self.updates}


def robot_on(cfg, **learner):
    torch.manual_seed(0)  # the untrained policy's weights and its sampled actions
    stop = threading.Event()
    fake = FakeLearner(stop, **learner)
    fake.robot = Robot(cfg, 0, "arm0", fake, incarnation=5, stop=stop)
    return fake.robot, fake


def test_the_robot_streams_chunks_of_k_steps_and_each_episodes_end_with_its_numbers():
    cfg = reach("--actors.chunk_size=5", *NO_SOURCE)
    robot, learner = robot_on(cfg, stop_at=2 * STEPS)
    robot.run()  # until the learner stops it
    lengths = [e["length"] for e in learner.episodes]
    assert sum(lengths) == 2 * STEPS and lengths == [STEPS, STEPS]  # an untrained policy: no reach
    assert [len(c["is_last"]) for c in learner.chunks] == [5, 5, 3, 5, 5, 3]  # the last: 2 + is_last
    eids = [int(c["episode_id"][0]) for c in learner.chunks]
    assert eids == [5 << 23] * 3 + [(5 << 23) + 1] * 3
    for c in learner.chunks:
        assert (c["episode_id"] == c["episode_id"][0]).all()
        assert list(c["is_last"]) == [False] * (len(c["is_last"]) - 1) + [len(c["is_last"]) == 3]
    assert all(e["actor"] == 0 and e["arm"] == "arm0" for e in learner.episodes)
    stats = robot.stats()
    assert (stats["episodes"], stats["env_steps"], stats["acked_steps"]) == (2, 2 * STEPS, 2 * STEPS)
    robot.stop()


def test_a_normal_stop_sends_the_partial_chunk():
    cfg = reach("--actors.chunk_size=5")
    robot, learner = robot_on(cfg, stop_at=7)
    robot.run()
    assert [len(c["is_last"]) for c in learner.chunks] == [5, 2]
    assert learner.acked_steps == robot.stats()["env_steps"] == 7
    robot.stop()


def test_a_rerecorded_episodes_unsent_rows_are_dropped_and_its_numbers_not_sent():
    cfg = reach("--actors.chunk_size=5", "--console.enabled=true", *NO_SOURCE)
    robot, learner = robot_on(cfg)
    try:
        robot.collector.reset(seed=0)  # as `run` begins
        for _ in range(7):
            robot.step()
        robot.console.controls.press("r")
        assert robot.step().episode.rerecord
        assert [len(c["is_last"]) for c in learner.chunks] == [5] and learner.episodes == []
        after = robot.step()
        assert after.row["episode_id"] == (5 << 23) + 1 and robot.stats()["episodes"] == 1
    finally:
        robot.stop()


def test_the_robot_takes_newer_weights_between_steps():
    cfg = reach()
    torch.manual_seed(1)
    state = ActorPolicy(pipeline_spec(cfg), cfg.policy).state_numpy()
    robot, learner = robot_on(cfg, weights=(7, state))
    try:
        robot.collector.reset(seed=0)
        robot.step()
        assert robot.weights_version == 7
        for k, v in robot.policy.state_numpy().items():
            np.testing.assert_array_equal(v, state[k])
    finally:
        robot.stop()


def test_the_robots_first_step_uses_the_weights_the_learner_has_when_it_answers():
    """A resumed run's robot opens its env while the learner loads: its first action must be the
    trained policy's, not the untrained one it was built with."""
    cfg = reach()
    torch.manual_seed(1)
    state = ActorPolicy(pipeline_spec(cfg), cfg.policy).state_numpy()
    robot, learner = robot_on(cfg, first=(12, state), stop_at=3)
    robot.run()
    assert learner.versions_at_steps == [12, 12, 12]
    for k, v in robot.policy.state_numpy().items():
        np.testing.assert_array_equal(v, state[k])
    robot.stop()


def test_sim_pacing_holds_the_robot_until_the_learners_updates_allow_more_steps():
    starts, ratio = 10, 2
    chunks = [f"--learner.training_starts={starts}", "--actors.chunk_size=4"]
    for pacing, ahead in (([f"--actors.env_steps_per_update={ratio}"], 0), ([], 7)):
        robot, learner = robot_on(reach(*chunks, *pacing), stop_at=40, pace=(starts, ratio))
        robot.run()
        robot.stop()
        # paced: no chunk comes while the steps are ahead of the updates; free: each from step 12
        assert learner.acked_steps == 40 and learner.ahead == ahead


def test_the_robot_thread_runs_until_stop_and_loses_no_step():
    cfg = reach("--actors.chunk_size=8")
    robot, learner = robot_on(cfg)
    robot.start()
    wait_for(lambda: robot.stats()["env_steps"] >= 30, 60, "30 env steps")
    stats = robot.stop()
    assert not stats["alive"] and stats["env_steps"] == learner.acked_steps >= 30
    assert robot.watch() == robot.stats()  # ended without error
