"""The env loop, written once: the robot actor, `record` and `evaluate` all step a `Collector`.

A `Collector` opens the env with its intervention source (behind the console page when there is
one), steps it into rows (what the learner stores: the observation acted on, the applied action,
reward, flags, the episode id; an `is_last` row after each kept episode) and counts each
episode's numbers. What a caller does with a step is its own: the robot actor streams the rows
to the learner, `record` writes frames of the raw observation, `evaluate` counts successes.

    with collecting(cfg, "record demos", seed=cfg.seed) as collector:  # page (URL printed) + env
        collector.reset(seed=cfg.seed)
        step = collector.step(action)  # step.row, step.info, step.raw; step.episode once it ended
        if step.done:
            collector.reset()

No Ray here: a Collector runs in any process (the robot actor's thread, a command, a test).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from hilserl_ray.config import TrainConfig
from hilserl_ray.console.session import Console, open_console
from hilserl_ray.console.tap import RawTap
from hilserl_ray.envs.intervention import InterventionSource
from hilserl_ray.envs.pipeline import pipeline_spec
from hilserl_ray.rig import make_env, make_intervention


@dataclass
class Episode:
    """One episode's numbers, counted as it runs; complete once a step ends it (`Step.episode`)."""

    id: int
    started: float = field(default_factory=time.monotonic)
    ret: float = 0.0
    length: int = 0
    intervention_steps: int = 0
    classifier_prob_max: float | None = None  # with a reward classifier: its highest probability
    classifier_disagreements: int = 0  # steps where the person's word and the classifier's differ
    # set by the step that ends it:
    success: bool = False
    env_success: bool = False  # the env's own success (sim: ground truth), whoever decided `success`
    rerecord: bool = False  # the person asked to redo it: not to be kept
    policy_hz: float = 0.0
    info: dict = field(default_factory=dict)  # the last step's

    def count(self, reward: float, info: dict) -> None:
        self.ret += float(reward)
        self.length += 1
        self.intervention_steps += bool(info.get("is_intervention", False))
        if "classifier_prob" in info:  # a reward classifier decides success
            self.classifier_prob_max = max(self.classifier_prob_max or 0.0, float(info["classifier_prob"]))
            self.classifier_disagreements += bool(info.get("classifier_disagreement"))

    def end(self, info: dict) -> None:
        self.success = bool(info.get("is_success", False))
        self.env_success = bool(info.get("env_success", self.success))
        self.rerecord = bool(info.get("rerecord", False))
        self.policy_hz = self.length / max(time.monotonic() - self.started, 1e-6)
        self.info = info

    def stats(self, **who) -> dict:
        """What the learner's metrics take; `who` names the robot (actor index, arm)."""
        out = {
            "return": self.ret,
            "success": self.success,
            "length": self.length,
            "intervention_steps": self.intervention_steps,
            "policy_hz": self.policy_hz,
            **who,
        }
        if self.classifier_prob_max is not None:  # the env's own success next to the classifier's
            out.update(
                env_success=self.env_success,
                classifier_prob_max=self.classifier_prob_max,
                classifier_disagreements=self.classifier_disagreements,
            )
        return out


@dataclass
class Step:
    """One env step: its rows, the env's info, the raw observation the action was taken from, and
    the episode when this step ended it."""

    rows: list[dict]  # the transition; then the episode's is_last row when it ended (kept)
    info: dict
    raw: dict | None
    episode: Episode | None = None

    @property
    def row(self) -> dict:
        return self.rows[0]

    @property
    def done(self) -> bool:
        return self.episode is not None


def open_env(
    cfg: TrainConfig,
    seed: int | None,
    console: Console | None = None,
    source: InterventionSource | None = None,
) -> gym.Env:
    """`make_env` with `source` (None: the configured one). With a console, the page's `web`
    source goes over it and the page's wrapper outermost; a source opened before the env failed
    (e.g. the leader arm's port) is closed again."""
    if console is None:
        return make_env(cfg, seed=seed, intervention=source)
    web = console.source(source if source is not None else make_intervention(cfg, seed))
    try:
        return console.watch(make_env(cfg, seed=seed, intervention=web))
    except BaseException:
        if web.other is not None:
            web.other.close()
        raise


class Collector:
    """An env stepped into rows and episodes. `seed` seeds the env and its source; episode ids
    count up from `first_episode_id`; `until_time_limit`: the env's own success does not end an
    episode (a person's success or failure still does)."""

    def __init__(
        self,
        cfg: TrainConfig,
        seed: int | None,
        console: Console | None = None,
        source: InterventionSource | None = None,
        first_episode_id: int = 0,
        until_time_limit: bool = False,
    ):
        self.spec = pipeline_spec(cfg)
        self.keys = list(self.spec.observation)
        self.first_episode_id = first_episode_id
        self.until_time_limit = until_time_limit
        self.env = open_env(cfg, seed, console, source)
        self.tap = RawTap(self.env)
        self.obs: dict | None = None  # what the next action is taken from (after a reset)
        self.episode = Episode(first_episode_id)
        self.episodes = 0  # ended so far, rerecorded ones included
        self.steps = 0

    def reset(self, seed: int | None = None) -> dict:
        """Begin the next episode (`seed`: reseed the env first)."""
        self.episode = Episode(self.first_episode_id + self.episodes)
        self.obs, _ = self.env.reset(seed=seed)
        return self.obs

    def step(self, action: np.ndarray) -> Step:
        """Apply `action` (an intervention source may replace it) and count the step."""
        raw, obs, episode = self.tap.obs, self.obs, self.episode
        next_obs, reward, terminated, truncated, info = self.env.step(action)
        human_said = info.get("human_success") or info.get("human_failure")
        if self.until_time_limit and terminated and not human_said:
            terminated = False
        row = {
            **{k: obs[k] for k in self.keys},
            "action": np.asarray(info.get("action", action), dtype=np.float32),
            "reward": np.float32(reward),
            "discrete_penalty": np.float32(info.get("discrete_penalty", 0.0)),
            "terminated": bool(terminated),
            "truncated": bool(truncated),
            "is_intervention": bool(info.get("is_intervention", False)),
            "episode_id": np.int64(episode.id),
            "is_last": False,
        }
        episode.count(reward, info)
        self.steps += 1
        self.obs = next_obs
        step = Step([row], info, raw)
        if terminated or truncated:  # a rerecord too: the intervention wrapper truncates it
            episode.end(info)
            self.episodes += 1
            step.episode = episode
            if not episode.rerecord:
                step.rows.append(self._last_row(next_obs, episode.id))
        return step

    def _last_row(self, obs: dict, episode_id: int) -> dict:
        """The episode's final observation, which the last transition leads to."""
        return {
            **{k: obs[k] for k in self.keys},
            "action": np.zeros(self.spec.action.shape, np.float32),
            "reward": np.float32(0),
            "discrete_penalty": np.float32(0),
            "terminated": False,
            "truncated": False,
            "is_intervention": False,
            "episode_id": np.int64(episode_id),
            "is_last": True,
        }

    def close(self) -> None:
        """Close the env (a real arm: hold, then torque off)."""
        self.env.close()


@contextlib.contextmanager
def collecting(
    cfg: TrainConfig, title: str, seed: int | None, source: InterventionSource | None = None, **options
) -> Iterator[Collector]:
    """A console page titled `title` (its URL printed; none when console.enabled is false) and a
    `Collector` on it; both closed at the end, the env first."""
    console = open_console(cfg, title)
    if console is not None:
        print(f"console: {console.url}", flush=True)
    try:
        collector = Collector(cfg, seed, console, source, **options)
        try:
            yield collector
        finally:
            collector.close()
    finally:
        if console is not None:
            console.close()
