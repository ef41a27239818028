"""Keyboard and gamepad interventions (`InterventionSource`s) producing end-effector actions.

Both produce the wrapped env's action: (dx, dy, dz) in [-1, 1], then the gripper (index 0 close,
1 stay, 2 open, or a continuous value in [-1, 1]). The devices are read through pynput / pygame,
imported only when a source starts (`pip install 'hilserl_ray[teleop]'`); the key and button
state is plain Python, so the same logic runs from injected events in tests. The key state and
the key bindings are in `keys.py` (the leader-arm source and the console read them too).

Keyboard: space takes over / hands back; arrows move x (up/down) and y (left/right); page up /
page down move z; o opens, c closes the gripper; s = success, f or esc = failure, r = re-record;
hold l while success is visible (reward-classifier labels).
Gamepad (Xbox layout): hold RB to take over; left stick x/y, right stick vertical z; RT opens,
LT closes; Y success, B failure, X re-record; hold A while success is visible.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hilserl_ray.config import TrainConfig
from hilserl_ray.envs.intervention import EVENT_KEYS, no_events
from hilserl_ray.hardware.keys import SUCCESS_HELD_KEY, KeyboardListener, KeyEvents, make_keys, require
from hilserl_ray.so101 import CLOSE, OPEN, STAY

log = logging.getLogger(__name__)


def check_action_format(cfg: TrainConfig, source: str) -> None:
    if not cfg.pipeline.ee_action.enabled:
        raise ValueError(
            f"pipeline.intervention.source={source!r} produces end-effector actions; "
            "set pipeline.ee_action.enabled=true (got false)"
        )


def ee_action(delta_xyz: Sequence[float], gripper: float, discrete: bool) -> np.ndarray:
    """Pack (dx, dy, dz) and a gripper command (-1 close .. +1 open) into the action format."""
    xyz = np.clip(np.asarray(delta_xyz, dtype=np.float32), -1.0, 1.0)
    if discrete:
        g = OPEN if gripper > 0 else CLOSE if gripper < 0 else STAY
    else:
        g = float(np.clip(gripper, -1.0, 1.0))
    return np.concatenate([xyz, np.array([g], dtype=np.float32)]).astype(np.float32)


# ------------------------------------------------------------------------------- keyboard
class KeyboardSource:
    """End-effector teleoperation from the keyboard; see the module docstring for the keys."""

    MOVES = {
        "up": (0, 1),
        "down": (0, -1),
        "left": (1, 1),
        "right": (1, -1),
        "page_up": (2, 1),
        "page_down": (2, -1),
    }

    def __init__(
        self, discrete_gripper: bool = True, keys: KeyboardListener | None = None, start: bool = True
    ):  # keys: make_keys(cfg) for the configured keyboard
        self.keys = keys or KeyboardListener()
        self.control = KeyEvents(self.keys)
        self.discrete = discrete_gripper
        if start:
            self.keys.start()

    def reset(self) -> None:
        self.control.reset()

    def action(self, obs: dict[str, np.ndarray], env: Any) -> np.ndarray | None:
        self.control.poll()
        if not self.control.engaged:
            return None
        delta = np.zeros(3, dtype=np.float32)
        for name, (axis, sign) in self.MOVES.items():
            if self.keys.is_down(name):
                delta[axis] += sign
        gripper = 1.0 if self.keys.is_down("o") else -1.0 if self.keys.is_down("c") else 0.0
        return ee_action(delta, gripper, self.discrete)

    def events(self) -> dict[str, bool]:
        return self.control.events()

    def success_held(self) -> bool:
        return self.keys.is_down(SUCCESS_HELD_KEY)

    def close(self) -> None:
        self.keys.stop()


# -------------------------------------------------------------------------------- gamepad
class PygameGamepad:
    """The first joystick pygame sees; `poll()` -> (axes, buttons)."""

    def __init__(self, index: int = 0):
        self.pygame = require("pygame", "gamepad")
        self.pygame.init()
        self.pygame.joystick.init()
        count = self.pygame.joystick.get_count()
        if count <= index:
            raise RuntimeError(
                f"no gamepad #{index}: pygame sees {count} joystick(s); plug one in or pick another source"
            )
        self.js = self.pygame.joystick.Joystick(index)
        self.js.init()
        log.info("gamepad: %s", self.js.get_name())

    def poll(self) -> tuple[list[float], list[bool]]:
        self.pygame.event.pump()
        axes = [self.js.get_axis(i) for i in range(self.js.get_numaxes())]
        buttons = [bool(self.js.get_button(i)) for i in range(self.js.get_numbuttons())]
        return axes, buttons

    def close(self) -> None:
        self.js.quit()


XBOX = {
    "x_axis": (1, -1.0),  # (axis index, sign): stick forward = +x
    "y_axis": (0, -1.0),
    "z_axis": (4, -1.0),
    "close_axis": 2,  # LT
    "open_axis": 5,  # RT
    "takeover_button": 5,  # RB, held
    "success_button": 3,  # Y
    "failure_button": 1,  # B
    "rerecord_button": 2,  # X
    "success_held_button": 0,  # A, held while success is visible
}


class GamepadSource:
    """Hold the takeover button to steer; sticks give (dx, dy, dz), triggers the gripper."""

    def __init__(
        self,
        discrete_gripper: bool = True,
        poll: Callable[[], tuple[Sequence[float], Sequence[bool]]] | None = None,
        mapping: dict | None = None,
        deadzone: float = 0.1,
    ):
        self._pad = None
        if poll is None:
            self._pad = PygameGamepad()
            poll = self._pad.poll
        self._poll = poll
        self.map = {**XBOX, **(mapping or {})}
        self.discrete, self.deadzone = discrete_gripper, deadzone
        self._prev_buttons: Sequence[bool] = ()
        self._events = no_events()

    def _read(self) -> tuple[Sequence[float], Sequence[bool]]:
        axes, buttons = self._poll()
        m = self.map
        for key in EVENT_KEYS:  # rising edges only: a held button is one event
            b = m[f"{key}_button"]
            was = b < len(self._prev_buttons) and self._prev_buttons[b]
            if b < len(buttons) and buttons[b] and not was:
                self._events[key] = True
        self._prev_buttons = list(buttons)
        return axes, buttons

    def reset(self) -> None:
        self._read()
        self._events = no_events()

    def action(self, obs: dict[str, np.ndarray], env: Any) -> np.ndarray | None:
        axes, buttons = self._read()
        m = self.map
        if not (m["takeover_button"] < len(buttons) and buttons[m["takeover_button"]]):
            return None

        def axis(i: int) -> float:
            v = float(axes[i]) if i < len(axes) else 0.0
            return 0.0 if abs(v) < self.deadzone else v

        delta = [sign * axis(i) for i, sign in (m["x_axis"], m["y_axis"], m["z_axis"])]
        # triggers rest at -1 and go to +1 when pulled
        close, open_ = axis(m["close_axis"]) > 0.5, axis(m["open_axis"]) > 0.5
        gripper = 1.0 if open_ and not close else -1.0 if close and not open_ else 0.0
        return ee_action(delta, gripper, self.discrete)

    def events(self) -> dict[str, bool]:
        self._read()
        out, self._events = self._events, no_events()
        return out

    def success_held(self) -> bool:
        b = self.map["success_held_button"]
        return b < len(self._prev_buttons) and bool(self._prev_buttons[b])

    def close(self) -> None:
        if self._pad is not None:
            self._pad.close()


# -------------------------------------------------------------------------------- factory
def make_teleop_source(cfg: TrainConfig, demonstrating: bool = False):
    """The human intervention source named by `pipeline.intervention.source` (keyboard, gamepad,
    leader). Devices open here, so a missing one fails before the first episode. demonstrating:
    the leader drives from each episode's first step (`record`); keys and pads act when touched."""
    source = cfg.pipeline.intervention.source
    if source in ("keyboard", "gamepad"):  # the leader arm gives joint targets: either action format
        check_action_format(cfg, source)
    discrete = cfg.pipeline.gripper.discrete
    if source == "keyboard":
        return KeyboardSource(discrete, keys=make_keys(cfg))
    if source == "gamepad":
        return GamepadSource(discrete)
    if source == "leader":
        # here, not at the top: the leader's bus and kinematics stay out of the sim and the console
        from hilserl_ray.hardware.leader import make_leader_source

        return make_leader_source(cfg, from_start=demonstrating)
    raise ValueError(
        f"pipeline.intervention.source: {source!r} is not a human device (keyboard, gamepad, leader)"
    )
