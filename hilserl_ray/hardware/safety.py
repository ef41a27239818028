"""What stands between an action and the motors: joint limits, step size, workspace, watchdog.

`SafetyLimits.clamp` turns any requested joint target into one the arm may go to this step:
finite, inside the calibrated joint ranges, at most `max_step` from where the arm is, and with
the end effector (by FK) inside the workspace box. `Watchdog` holds the arm when commands stop
arriving and releases the torque if they stay away; it also feeds the guard process
(`hardware.guard`) that does the same if this process dies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)


class SafetyLimits:
    """Joint-space clamps plus an optional Cartesian box checked by forward kinematics.

    `fk(joints_user_units) -> xyz` of the end effector; the box is [ws_low, ws_high] in metres.
    A target whose FK leaves the box is pulled back along the straight joint-space line towards
    the present pose (bisection); if the arm is already outside, only moves that do not take it
    further out are allowed, so it can always be driven back in.
    """

    def __init__(
        self,
        low: np.ndarray,
        high: np.ndarray,
        max_step: float | np.ndarray,
        *,
        fk: Callable[[np.ndarray], np.ndarray] | None = None,
        ws_low: np.ndarray | None = None,
        ws_high: np.ndarray | None = None,
        names: tuple[str, ...] | None = None,
    ):
        self.low = np.asarray(low, dtype=np.float64)
        self.high = np.asarray(high, dtype=np.float64)
        self.max_step = np.broadcast_to(np.asarray(max_step, dtype=np.float64), self.low.shape)
        self.fk = fk
        self.ws_low = None if ws_low is None else np.asarray(ws_low, dtype=np.float64)
        self.ws_high = None if ws_high is None else np.asarray(ws_high, dtype=np.float64)
        self.names = names or tuple(f"joint{i}" for i in range(len(self.low)))
        self.last: dict[str, object] = {}  # what the latest clamp changed, for logs and tests

    def outside(self, joints: np.ndarray) -> float:
        """Distance (m) of the end effector outside the workspace box; 0 inside or without FK."""
        if self.fk is None or self.ws_low is None or self.ws_high is None:
            return 0.0
        p = np.asarray(self.fk(joints), dtype=np.float64)
        return float(np.linalg.norm(np.maximum(self.ws_low - p, 0) + np.maximum(p - self.ws_high, 0)))

    def clamp(self, target, present, *, workspace: bool = True) -> np.ndarray:
        """The target the arm may go to this step (`workspace=False`: joint clamps only)."""
        target = np.asarray(target, dtype=np.float64)
        present = np.asarray(present, dtype=np.float64)
        if target.shape != self.low.shape:
            raise ValueError(
                f"joint target: expected shape {self.low.shape} ({self.names}), got {target.shape}"
            )
        bad = [n for n, v in zip(self.names, target, strict=True) if not np.isfinite(v)]
        if bad:
            raise ValueError(f"joint target is not finite for {bad}: {target.tolist()}; refusing to move")
        self.last = {}
        out = np.clip(target, self.low, self.high)
        if np.any(out != target):
            self.last["joint_limits"] = [n for n, a, b in zip(self.names, out, target, strict=True) if a != b]
        stepped = np.clip(out, present - self.max_step, present + self.max_step)
        if np.any(stepped != out):
            self.last["max_step"] = [n for n, a, b in zip(self.names, stepped, out, strict=True) if a != b]
        out = stepped
        err = self.outside(out) if workspace else 0.0
        if err > 0:
            now = self.outside(present)
            if now > 0:
                if err > now:  # already outside: never further out
                    out = present.copy()
                    self.last["workspace"] = "held: the move would leave the workspace further"
            else:
                lo, hi = 0.0, 1.0  # fraction of the move that stays inside
                for _ in range(12):
                    mid = (lo + hi) / 2
                    if self.outside(present + mid * (out - present)) > 0:
                        hi = mid
                    else:
                        lo = mid
                out = present + lo * (out - present)
                self.last["workspace"] = f"shortened to {lo:.3f} of the move"
        if self.last:
            log.debug("safety clamp: %s", self.last)
        return out


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
