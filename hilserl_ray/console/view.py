"""What the page shows: the newest frames and the episode's numbers, written by the env's thread.

`Watched` is the outermost env wrapper: every reset and step publishes the raw camera frames (as
the robot delivered them), the frames as the policy sees them (after crop and resize), and the
episode's numbers to a `LiveView`, which the server thread reads. Cues (episode start and end,
takeover, a key press applied) go to the server at once through `LiveView.notify`.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from hilserl_ray.console.controls import WebSource
from hilserl_ray.console.tap import RawTap
from hilserl_ray.features import IMAGE_PREFIX

# The reward classifier's probability of success for a step, when a classifier sets the reward.
CLASSIFIER_PROB_KEY = "classifier_prob"  # set by envs.wrappers.ClassifierReward
EPISODE_WINDOW = 20  # success and intervention rates over this many recent episodes
HZ_WINDOW = 20  # policy Hz over this many recent steps


class LiveView:
    """Thread-safe holder of the newest frames (stream name -> HxWx3 uint8 RGB) and status."""

    def __init__(self, streams: list[str], title: str):
        self.streams = streams
        self._lock = threading.Lock()
        self._frames: dict[str, np.ndarray] = {}
        self._seq = 0
        self.status: dict = {"title": title, "episode": 0, "step": 0, "return": 0.0}
        self._listeners: list[Callable[[dict], None]] = []

    def publish(self, frames: dict[str, np.ndarray], **status) -> None:
        with self._lock:
            self._frames.update({k: np.array(v, copy=True) for k, v in frames.items()})
            self._seq += 1
            self.status.update(status)

    def update(self, **status) -> None:
        with self._lock:
            self.status.update(status)

    def snapshot(self) -> tuple[int, dict[str, np.ndarray], dict]:
        with self._lock:
            return self._seq, dict(self._frames), dict(self.status)

    def subscribe(self, fn: Callable[[dict], None]) -> None:
        self._listeners.append(fn)

    def notify(self, message: dict) -> None:
        for fn in self._listeners:
            fn(message)


class Watched(gym.Wrapper):
    """Publishes every reset/step to the view. In the sim, paces steps to `env.fps` while the
    operator steers from the page (the sim otherwise runs as fast as it can)."""

    def __init__(self, env: gym.Env, view: LiveView, source: WebSource | None, fps: float, realtime: bool):
        super().__init__(env)
        self.feature_spec = getattr(env, "feature_spec", None)
        self.view, self.source = view, source
        self.tap = RawTap(env)
        self.dt, self.realtime = 1.0 / fps, realtime
        self.cameras = [s[: -len("/raw")] for s in view.streams if s.endswith("/raw")]
        self.recent: collections.deque = collections.deque(maxlen=EPISODE_WINDOW)
        self._step_times: collections.deque = collections.deque(maxlen=HZ_WINDOW)
        self._episode = 0
        self._ret, self._len, self._human, self._was_human = 0.0, 0, 0, False
        self._last_t = 0.0

    def _frames(self, obs: dict) -> dict[str, np.ndarray]:
        raw = self.tap.obs or {}
        out = {}
        for cam in self.cameras:
            key = IMAGE_PREFIX + cam
            if key in raw:
                out[f"{cam}/raw"] = raw[key]
            if key in obs:
                out[f"{cam}/policy"] = obs[key]
        return out

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._episode += 1
        self._ret, self._len, self._human, self._was_human = 0.0, 0, 0, False
        self._step_times.clear()
        self.view.publish(
            self._frames(obs), episode=self._episode, step=0, reward=0.0, human=False, **{"return": 0.0}
        )
        self.view.notify({"type": "cue", "cue": "start", "episode": self._episode})
        return obs, info

    def step(self, action):
        if self.realtime and self.source is not None and self.source.controls.engaged:
            # wait for the control tick before the step, so a key pressed meanwhile is in it
            delay = self._last_t + self.dt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        self._last_t = time.monotonic()
        obs, reward, terminated, truncated, info = self.env.step(action)
        now = time.monotonic()
        human = bool(info.get("is_intervention", False))
        self._step_times.append(now)
        self._ret += float(reward)
        self._len += 1
        self._human += human
        hz = None
        if len(self._step_times) > 1:
            hz = (len(self._step_times) - 1) / max(self._step_times[-1] - self._step_times[0], 1e-6)
        status = {
            "step": self._len,
            "reward": float(reward),
            "return": self._ret,
            "human": human,
            "policy_hz": hz,
            "classifier_prob": _maybe_float(info.get(CLASSIFIER_PROB_KEY)),
        }
        if terminated or truncated:
            rerecord = bool(info.get("rerecord", False))
            if not rerecord:
                self.recent.append((bool(info.get("is_success", False)), self._human / self._len))
            status.update(
                last_return=self._ret,
                last_success=bool(info.get("is_success", False)),
                success_rate=float(np.mean([s for s, _ in self.recent])) if self.recent else None,
                intervention_rate=float(np.mean([h for _, h in self.recent])) if self.recent else None,
            )
        self.view.publish(self._frames(obs), **status)
        if self.source is not None and self.source.applied_ids:
            self.view.notify({"type": "applied", "ids": self.source.applied_ids})
            self.source.applied_ids = []
        if human and not self._was_human:
            self.view.notify({"type": "cue", "cue": "takeover"})
        self._was_human = human
        if terminated or truncated:
            self.view.notify(
                {
                    "type": "cue",
                    "cue": "rerecord" if info.get("rerecord") else "end",
                    "success": bool(info.get("is_success", False)),
                    "episode": self._episode,
                    "return": self._ret,
                }
            )
        return obs, reward, terminated, truncated, info


def _maybe_float(v) -> float | None:
    try:
        return None if v is None else float(np.asarray(v).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return None
