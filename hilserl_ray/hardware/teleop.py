"""Keyboard and gamepad interventions (`InterventionSource`s) producing end-effector actions.

Both produce the wrapped env's action: (dx, dy, dz) in [-1, 1], then the gripper (index 0 close,
1 stay, 2 open, or a continuous value in [-1, 1]). The devices are read through pynput / pygame,
imported only when a source starts (`pip install 'hilserl_ray[teleop]'`); the key and button
state is plain Python, so the same logic runs from injected events in tests.

Keyboard: space takes over / hands back; arrows move x (up/down) and y (left/right); page up /
page down move z; o opens, c closes the gripper; s = success, f or esc = failure, r = re-record;
hold l while success is visible (reward-classifier labels).
Gamepad (Xbox layout): hold RB to take over; left stick x/y, right stick vertical z; RT opens,
LT closes; Y success, B failure, X re-record; hold A while success is visible.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hilserl_ray.config import TrainConfig
from hilserl_ray.envs.intervention import EVENT_KEYS, no_events

log = logging.getLogger(__name__)

GRIPPER_CLOSE, GRIPPER_STAY, GRIPPER_OPEN = 0.0, 1.0, 2.0


def require(module: str, device: str):
    """Import an optional device library, or explain which extra installs it (or why it cannot load)."""
    import importlib
    import importlib.util

    if importlib.util.find_spec(module.split(".")[0]) is None:
        raise ImportError(
            f"{device} interventions need the optional package '{module.split('.')[0]}': "
            "pip install 'hilserl_ray[teleop]' (or choose another pipeline.intervention.source)"
        )
    try:
        return importlib.import_module(module)
    except Exception as e:  # installed, but e.g. pynput without an X server
        raise RuntimeError(
            f"'{module}' is installed but cannot load ({e}); {device} input needs a desktop session "
            "(DISPLAY / Wayland) or input-device permissions"
        ) from e


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
        g = GRIPPER_OPEN if gripper > 0 else GRIPPER_CLOSE if gripper < 0 else GRIPPER_STAY
    else:
        g = float(np.clip(gripper, -1.0, 1.0))
    return np.concatenate([xyz, np.array([g], dtype=np.float32)]).astype(np.float32)


# ------------------------------------------------------------------------------- keyboard
def key_name(key: Any) -> str:
    """pynput key -> 'a', 'space', 'up', 'page_up', ... (chars lower-cased)."""
    char = getattr(key, "char", None)
    if char:
        return char.lower()
    name = getattr(key, "name", None)
    return name if name else str(key)


class KeyboardListener:
    """Pressed-key state and a queue of key presses, fed by pynput (or `press`/`release`)."""

    def __init__(self):
        self.pressed: set[str] = set()
        self._presses: list[str] = []
        self._lock = threading.Lock()
        self._listener = None

    def start(self) -> None:
        if self._listener is not None:
            return
        keyboard = require("pynput.keyboard", "keyboard")
        try:
            self._listener = keyboard.Listener(
                on_press=lambda k: self.press(key_name(k)), on_release=lambda k: self.release(key_name(k))
            )
            self._listener.start()
        except Exception as e:  # no X server / no input permission
            raise RuntimeError(
                f"cannot listen to the keyboard ({e}); pynput needs a desktop session (DISPLAY) or "
                "uinput permission on Linux"
            ) from e

    def press(self, name: str) -> None:
        with self._lock:
            if name not in self.pressed:
                self._presses.append(name)
            self.pressed.add(name)

    def release(self, name: str) -> None:
        with self._lock:
            self.pressed.discard(name)

    def take_presses(self) -> list[str]:
        with self._lock:
            out, self._presses = self._presses, []
        return out

    def is_down(self, name: str) -> bool:
        with self._lock:
            return name in self.pressed

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None


class RemoteKeys(KeyboardListener):
    """Key presses streamed over HTTP as `press <key>` / `release <key>` lines (the twin's
    scripted human, or a keyboard on another machine than the robot's). Reconnects by itself;
    keys pressed while disconnected are lost, as on an unplugged keyboard."""

    def __init__(self, url: str):
        super().__init__()
        self.url = url
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="remote-keys", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        import urllib.request

        warned = False
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as resp:
                    self.connected.set()
                    warned = False
                    for line in resp:
                        if self._stop.is_set():
                            return
                        verb, _, name = line.decode("utf-8", "replace").strip().partition(" ")
                        if verb == "press" and name:
                            self.press(name)
                        elif verb == "release" and name:
                            self.release(name)
            except Exception as e:  # server away: retry, say so once
                if not warned:
                    log.warning("key stream %s: %s (retrying)", self.url, e)
                    warned = True
            self.connected.clear()
            self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()


def make_keys(cfg: TrainConfig) -> KeyboardListener:
    """This machine's keyboard (pynput), or the stream at `pipeline.intervention.keys_url`."""
    url = cfg.pipeline.intervention.keys_url
    return RemoteKeys(url) if url else KeyboardListener()


EVENT_BINDINGS = {"s": "success", "f": "failure", "esc": "failure", "r": "rerecord"}
SUCCESS_HELD_KEY = "l"  # held while success is visible: per-frame labels for the reward classifier


class KeyEvents:
    """Takeover toggle and episode events from key presses, shared by keyboard and leader sources."""

    def __init__(self, keys: KeyboardListener, toggle: str = "space"):
        self.keys, self.toggle = keys, toggle
        self.engaged = False
        self._events = no_events()

    def poll(self) -> None:
        for name in self.keys.take_presses():
            if name == self.toggle:
                self.engaged = not self.engaged
                log.info("human %s", "takes over" if self.engaged else "hands back")
            elif name in EVENT_BINDINGS:
                self._events[EVENT_BINDINGS[name]] = True

    def events(self) -> dict[str, bool]:
        self.poll()
        out, self._events = self._events, no_events()
        return out

    def reset(self) -> None:
        self.keys.take_presses()
        self.engaged = False
        self._events = no_events()


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
def make_teleop_source(cfg: TrainConfig):
    """The human intervention source named by `pipeline.intervention.source` (keyboard, gamepad,
    leader). Devices open here, so a missing one fails before the first episode."""
    source = cfg.pipeline.intervention.source
    if source in ("keyboard", "gamepad"):  # the leader arm gives joint targets: either action format
        check_action_format(cfg, source)
    discrete = cfg.pipeline.gripper.discrete
    if source == "keyboard":
        return KeyboardSource(discrete, keys=make_keys(cfg))
    if source == "gamepad":
        return GamepadSource(discrete)
    if source == "leader":
        from hilserl_ray.hardware.leader import make_leader_source

        return make_leader_source(cfg)
    raise ValueError(
        f"pipeline.intervention.source: {source!r} is not a human device (keyboard, gamepad, leader)"
    )
