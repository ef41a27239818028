"""The keyboard behind interventions: key state from pynput or a remote key stream, and the
takeover toggle and episode events it drives (shared by the keyboard and leader-arm sources and
the console).

pynput is imported only when a listener starts (`pip install 'hilserl_ray[teleop]'`); the key
state is plain Python, so the same logic runs from injected presses in tests.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from hilserl_ray.config import TrainConfig
from hilserl_ray.envs.intervention import no_events

log = logging.getLogger(__name__)


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
