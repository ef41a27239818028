"""The real arm's watchdog: what stops it when commands stop arriving.

`Watchdog` holds the arm when commands stop arriving and releases the torque if they stay away;
it also feeds the guard process (`hardware.guard`) that does the same if this process dies. The
per-step limits (joint ranges, step size, workspace) are `hilserl_ray.limits`, which the sim
applies too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Watchdog:
    """Hold the arm if no command arrives for `hold_after_s`; release torque after `release_after_s`.

    The env calls `kick()` on every command (and while it deliberately waits). The callbacks run
    on the watchdog thread; they must be thread-safe (the bus serialises its transactions).
    """

    def __init__(
        self,
        hold_after_s: float,
        release_after_s: float,
        on_hold: Callable[[], None],
        on_release: Callable[[], None],
        heartbeat: Callable[[bool], None] | None = None,
    ):
        if release_after_s < hold_after_s:
            raise ValueError(
                f"watchdog: release_after_s ({release_after_s}) must be >= hold_after_s ({hold_after_s})"
            )
        self.hold_after_s = hold_after_s
        self.release_after_s = release_after_s
        self._on_hold, self._on_release = on_hold, on_release
        self._heartbeat = heartbeat  # (commanded since the last beat) -> the guard process
        self._kicked = False
        self._last = time.monotonic()
        self.state = "active"  # active -> held -> released; kick() returns to active
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self.kick()
            self._thread = threading.Thread(target=self._run, name="so101-watchdog", daemon=True)
            self._thread.start()

    def kick(self) -> str:
        """Note a command; returns the state before it (the env re-arms a released arm)."""
        with self._lock:
            before, self.state, self._last = self.state, "active", time.monotonic()
            self._kicked = True
        return before

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        self._thread = None

    def _run(self) -> None:
        period = min(0.05, self.hold_after_s / 4)
        while not self._stop.wait(period):
            with self._lock:
                idle = time.monotonic() - self._last
                state = self.state
                if state == "active" and idle >= self.hold_after_s:
                    self.state = "held"
                elif state == "held" and idle >= self.release_after_s:
                    self.state = "released"
                new = self.state
                kicked, self._kicked = self._kicked, False
            if self._heartbeat is not None:
                self._heartbeat(kicked)
            try:
                if new != state and new == "held":
                    log.warning("no command for %.1f s: holding the arm", idle)
                    self._on_hold()
                elif new != state and new == "released":
                    log.warning("no command for %.1f s: torque off", idle)
                    self._on_release()
            except Exception:  # keep watching; the next kick or close will report bus errors
                log.exception("watchdog action failed")
