"""The interface every source of human actions implements (oracle, keyboard, gamepad, leader arm).

The intervention wrapper asks the source once per step. A source that returns an action takes
over that step: the env applies the human's action instead of the policy's and marks the step
`info["is_intervention"] = True`, so the learner puts it in both buffers. Actions are in the
wrapped env's action format (spec.action: (dx, dy, dz) in [-1, 1], then the gripper index
0 = close, 1 = stay, 2 = open, or a continuous gripper value).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

EVENT_KEYS = ("success", "failure", "rerecord")


@runtime_checkable
class InterventionSource(Protocol):
    """A human (or a script standing in for one). All methods are called from the env's thread."""

    def reset(self) -> None:
        """A new episode begins: clear per-episode state (engagement, pending events)."""

    def action(self, obs: dict[str, np.ndarray], env: Any) -> np.ndarray | None:
        """The human's action for this step, or None while the human is not intervening.

        obs is the wrapped observation the policy also sees; env is the wrapped env (a scripted
        source may read privileged sim state through `env.unwrapped`).
        """

    def events(self) -> dict[str, bool]:
        """Episode events the human signalled since the last call: success, failure, rerecord.

        Each is reported once (the call consumes them). success/failure end the episode as
        terminated; rerecord ends it as truncated with info["rerecord"] = True.
        """

    def close(self) -> None:
        """Release devices (keyboard listener, serial port, ...)."""


def success_held(source: Any) -> bool | None:
    """Whether the human holds the 'success is visible' key now (hil-serl's labelling key).

    Optional for a source (`success_held()`); None when it has no such key. Recording stores
    it per frame as the reward classifier's label.
    """
    fn = getattr(source, "success_held", None)
    return bool(fn()) if callable(fn) else None


def no_events() -> dict[str, bool]:
    return dict.fromkeys(EVENT_KEYS, False)
