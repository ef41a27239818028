"""Per-arm figures the learner keeps: env steps, episodes, and over each arm's recent episodes the
success, return and intervention rates, so a lab sees which arm (or which human) lags."""

from __future__ import annotations

import collections

import numpy as np

ARM_PREFIX = "arm/"


def episode_summary(episodes: list[dict]) -> dict[str, float]:
    """Mean success, return, intervention rate, length and policy rate over `episodes`.

    `unassisted_success_rate`: the share of them that succeeded with no intervention step. An
    oracle or a person finishing what the policy could not counts in `success_rate`: a run at 90%
    there had its policy alone placing 24% (12 of the last 50), as its deterministic eval did (20%)."""
    if not episodes:
        return {}
    return {
        "success_rate": float(np.mean([e["success"] for e in episodes])),
        "unassisted_success_rate": float(
            np.mean([e["success"] and e["intervention_steps"] == 0 for e in episodes])
        ),
        "episode_return": float(np.mean([e["return"] for e in episodes])),
        "intervention_rate": float(
            np.mean([e["intervention_steps"] / max(e["length"], 1) for e in episodes])
        ),
        "episode_length": float(np.mean([e["length"] for e in episodes])),
        "policy_hz": float(np.mean([e["policy_hz"] for e in episodes])),
    }


class ArmStats:
    """Counters and a window of recent episodes per arm name."""

    def __init__(self, window: int):
        self.window = window
        self.env_steps: dict[str, int] = collections.Counter()
        self.episodes: dict[str, int] = collections.Counter()
        self.recent: dict[str, collections.deque] = {}

    def add(self, arm: str | None, steps: int, episodes: list[dict]) -> None:
        if arm is not None:
            self.env_steps[arm] += steps
        for ep in episodes:
            name = ep.get("arm", arm)
            if name is None:
                continue
            self.episodes[name] += 1
            self.recent.setdefault(name, collections.deque(maxlen=self.window)).append(ep)

    def summary(self) -> dict[str, float]:
        """`arm/<name>/<figure>` for every arm heard from."""
        out: dict[str, float] = {}
        for name in sorted(set(self.env_steps) | set(self.episodes)):
            figures = {"env_steps": self.env_steps[name], "episodes": self.episodes[name]}
            figures.update(episode_summary(list(self.recent.get(name, ()))))
            out.update({f"{ARM_PREFIX}{name}/{k}": v for k, v in figures.items()})
        return out

    def state(self) -> dict:
        return {
            "env_steps": dict(self.env_steps),
            "episodes": dict(self.episodes),
            "recent": {k: list(v) for k, v in self.recent.items()},
        }

    def restore(self, state: dict) -> None:
        self.env_steps.update(state.get("env_steps", {}))
        self.episodes.update(state.get("episodes", {}))
        for name, eps in state.get("recent", {}).items():
            self.recent.setdefault(name, collections.deque(maxlen=self.window)).extend(eps)


def arm_names(stats: dict) -> list[str]:
    """The arm names present in a stats/metrics row, in order."""
    return sorted({k[len(ARM_PREFIX) :].rsplit("/", 1)[0] for k in stats if k.startswith(ARM_PREFIX)})
