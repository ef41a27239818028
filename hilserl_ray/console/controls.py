"""`web`: the page's keys and buttons as an InterventionSource with the keyboard's semantics.

The page sends key names (`space`, `up`, `page_up`, `o`, `s`, ...) that the server thread feeds
into a `KeyboardSource`'s listener, so takeover, moves, gripper and success / failure /
re-record behave exactly as with `pipeline.intervention.source=keyboard` (one implementation).
Pause (`p`) is the page's own: while paused the env's thread waits inside `action()`, so no step,
no transition and no episode time passes; a real arm keeps its pose with its watchdog fed.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from hilserl_ray.envs.intervention import EVENT_KEYS, InterventionSource, success_held
from hilserl_ray.hardware.keys import EVENT_BINDINGS, KeyboardListener
from hilserl_ray.hardware.teleop import KeyboardSource, ee_action

PAUSE_KEY = "p"
TAKEOVER_KEY = "space"
STEER_KEYS = frozenset({*KeyboardSource.MOVES, "o", "c"})
KEYS = frozenset({TAKEOVER_KEY, PAUSE_KEY, *STEER_KEYS, *EVENT_BINDINGS})
HOLD_POLL_S = 0.05  # how often a paused env thread feeds the real arm's watchdog


class WebControls:
    """The operator's input: written by the server thread, read by the env's thread.

    steer=False (joint-space actions): the page can judge and pause, but not take over.
    """

    def __init__(self, discrete_gripper: bool = True, steer: bool = True):
        self.keys = KeyboardListener()  # fed by `press`/`release`; never started (no pynput)
        self.keyboard = KeyboardSource(discrete_gripper, keys=self.keys, start=False)
        self.discrete, self.steer = discrete_gripper, steer
        self._running = threading.Event()  # cleared while paused
        self._running.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._pending: list[int] = []  # ids of presses no step has consumed yet

    # ------------------------------------------------------------------- server thread
    def press(self, name: str, press_id: int | None = None) -> bool:
        """A key went down on the page; False if it is not a console key (ignored)."""
        if name not in KEYS or (not self.steer and (name == TAKEOVER_KEY or name in STEER_KEYS)):
            return False
        if name == PAUSE_KEY:
            self.set_paused(not self.paused)
            return True
        self.keys.press(name)
        if press_id is not None:
            with self._lock:
                self._pending.append(press_id)
        return True

    def release(self, name: str) -> None:
        self.keys.release(name)

    def set_paused(self, paused: bool) -> None:
        if paused and not self._closed.is_set():
            self._running.clear()
        else:
            self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def engaged(self) -> bool:
        """The operator has taken over (as of the env's last poll)."""
        return self.keyboard.control.engaged

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        """Unblock a paused env thread for good (shutdown)."""
        self._closed.set()
        self._running.set()

    # ---------------------------------------------------------------------- env thread
    def wait_while_paused(self, env: Any) -> None:
        hold = getattr(getattr(env, "unwrapped", None), "hold_still", None)
        while not self._running.is_set():
            if hold is not None:
                hold()
            self._running.wait(HOLD_POLL_S)

    def take_pending(self) -> list[int]:
        with self._lock:
            out, self._pending = self._pending, []
        return out

    def hold_action(self) -> np.ndarray:
        """No motion, gripper as it is: what a closing console applies instead of anything else."""
        return ee_action(np.zeros(3), 0.0, self.discrete)


class WebSource:
    """The page, over another source (the configured one, or None): while the operator has taken
    over, the page's action wins; events from both count. Implements `InterventionSource`.

    `applied_ids` holds the ids of the key presses the last step's action included (latency).
    """

    def __init__(self, controls: WebControls, other: InterventionSource | None = None):
        self.controls, self.other = controls, other
        self.applied_ids: list[int] = []

    def reset(self) -> None:
        self.controls.keyboard.reset()
        if self.other is not None:
            self.other.reset()

    def action(self, obs: dict[str, np.ndarray], env: Any) -> np.ndarray | None:
        c = self.controls
        c.wait_while_paused(env)
        if c.closed:
            return c.hold_action() if c.steer else None
        pending = c.take_pending()
        human = c.keyboard.action(obs, env)  # polls the takeover toggle, reads held keys
        self.applied_ids = pending if human is not None else []
        # the other source is asked every step, so its own state (oracle rule, leader) moves on
        theirs = self.other.action(obs, env) if self.other is not None else None
        return human if human is not None else theirs

    def events(self) -> dict[str, bool]:
        mine = self.controls.keyboard.events()
        theirs = self.other.events() if self.other is not None else {}
        return {k: bool(mine.get(k) or theirs.get(k)) for k in EVENT_KEYS}

    def success_held(self) -> bool | None:
        """The labelling key held on the page or at the other source (None: neither has one)."""
        held = [h for h in (success_held(self.controls.keyboard), success_held(self.other)) if h is not None]
        return any(held) if held else None

    def close(self) -> None:
        self.controls.close()
        if self.other is not None:
            self.other.close()
