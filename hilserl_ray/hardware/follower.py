"""The SO-101 follower arm at joint level: calibrated reads, safe writes, safe stop.

Owns the bus, the calibration (written into the servos if they disagree with the file), the
safety clamps, the watchdog and its guard process (which stops the arm if this process dies). Units are `observation.state`'s: degrees for the five arm
joints, 0..100 for the gripper. `close()` holds the arm, turns the torque off and closes the
port; it is idempotent and also runs at interpreter exit, so an exception or Ctrl+C anywhere
in the program leaves the arm unpowered rather than frozen at full torque.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hilserl_ray.hardware.calibration import Normalizer, apply_calibration, check_ids, load_calibration
from hilserl_ray.hardware.feetech import FeetechBus
from hilserl_ray.hardware.guard import GuardLink, stop_previous
from hilserl_ray.hardware.safety import Watchdog
from hilserl_ray.limits import SafetyLimits
from hilserl_ray.so101 import JOINT_NAMES

log = logging.getLogger(__name__)


class SO101Follower:
    def __init__(
        self,
        port: str,
        calibration: str | Path,
        motor_ids: Sequence[int] = (1, 2, 3, 4, 5, 6),
        *,
        max_relative_target: float = 10.0,
        fk=None,
        workspace: tuple[Sequence[float], Sequence[float]] | None = None,
        watchdog_s: float | None = 1.0,
        watchdog_release_s: float = 10.0,
        bus_timeout_ms: float = 50.0,
    ):
        if len(motor_ids) != len(JOINT_NAMES):
            raise ValueError(f"robot.motor_ids: one id per joint {list(JOINT_NAMES)}, got {list(motor_ids)}")
        self.names = JOINT_NAMES
        self.calibration_path = Path(calibration)
        self.bus = FeetechBus(
            port, dict(zip(JOINT_NAMES, motor_ids, strict=True)), timeout_margin_ms=bus_timeout_ms
        )
        self.max_relative_target = max_relative_target
        self._fk, self._workspace = fk, workspace
        self._watchdog_args = (watchdog_s, watchdog_release_s)
        self.watchdog: Watchdog | None = None
        self.guard: GuardLink | None = None
        self._guards: list[GuardLink] = []
        self.normalizer: Normalizer | None = None
        self.safety: SafetyLimits | None = None
        self.last_target: np.ndarray | None = None
        self._closed = False
        self._close_lock = threading.Lock()
        self._finalizer = None

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """Open the bus, check calibration, configure, hold the present pose with torque on."""
        cal = load_calibration(self.calibration_path, self.names)
        stop_previous(self.bus.port)  # a guard left by a dead controller of this arm: we take over
        self.bus.connect()
        # runs at interpreter exit (or when the follower is collected) if close() never ran
        self._finalizer = weakref.finalize(self, _atexit_stop, self.bus, self._guards)
        try:
            check_ids(cal, self.bus, str(self.calibration_path))
            if apply_calibration(self.bus, cal):
                log.warning(
                    "servo calibration on %s differed from %s: wrote the file's",
                    self.bus.port,
                    self.calibration_path,
                )
            self.normalizer = Normalizer(cal, self.names)
            low, high = self.normalizer.limits()
            ws_low, ws_high = self._workspace if self._workspace is not None else (None, None)
            self.safety = SafetyLimits(
                low,
                high,
                self.max_relative_target,
                fk=self._fk,
                ws_low=ws_low,
                ws_high=ws_high,
                names=self.names,
            )
            self.bus.disable_torque()
            self.bus.configure(follower=True)
            self._hold_raw()
            self.bus.enable_torque()
            hold_s, release_s = self._watchdog_args
            if hold_s is not None:
                release_s = max(release_s, hold_s)
                # the guard stops the arm if this process dies (hardware.guard says why)
                self.guard = GuardLink(
                    self.bus.port, list(self.bus.motors.values()), release_s, self.bus.timeout_margin_ms
                )
                self._guards.append(self.guard)
                self.watchdog = Watchdog(
                    hold_s, release_s, self.hold, self._release, heartbeat=self.guard.beat
                )
                self.watchdog.start()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Hold, torque off, close the port. Safe to call twice and after a failed connect."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self.watchdog is not None:
            self.watchdog.stop()
        if self._finalizer is not None:
            self._finalizer.detach()
        _atexit_stop(self.bus, self._guards)

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ motion
    def read(self) -> np.ndarray:
        """Present joint positions (6,) float32 in state units."""
        return self.normalizer.to_user(self.bus.sync_read("Present_Position"))

    def send(self, target, present: np.ndarray | None = None, *, workspace: bool = True) -> np.ndarray:
        """Clamp `target` by the safety limits relative to `present` (read if not given) and write
        it; returns the target actually sent. `workspace=False` skips the FK box (reset ramp)."""
        if self._closed:
            raise RuntimeError("the follower is closed (torque off); create a new env to move it again")
        before = self.watchdog.kick() if self.watchdog is not None else "active"
        if before != "active":
            present = None  # the arm was held or dropped meanwhile: clamp from where it is now
        if before == "released":
            log.warning("commands resumed after the watchdog released the arm: re-enabling torque")
            self._hold_raw()
            self.bus.enable_torque()
        if present is None:
            present = self.read()
        safe = self.safety.clamp(target, present, workspace=workspace)
        self.bus.sync_write("Goal_Position", self.normalizer.to_raw(safe))
        self.last_target = safe.astype(np.float32)
        return self.last_target

    def kick(self) -> None:
        """Tell the watchdog the controller is alive (while deliberately waiting)."""
        if self.watchdog is not None:
            self.watchdog.kick()

    def hold(self) -> None:
        """Stop where the arm is: goal = present position (torque stays on)."""
        self._hold_raw()

    def _hold_raw(self) -> None:
        self.bus.sync_write("Goal_Position", self.bus.sync_read("Present_Position"))

    def _release(self) -> None:
        self.bus.disable_torque(best_effort=True)


def _atexit_stop(bus: FeetechBus, guards: list[GuardLink] = ()) -> None:
    """Hold then torque off, never raising: the shutdown path must reach every servo it can.
    Then dismiss the guard (the arm is stopped: nothing left for it to do)."""
    try:
        _stop_bus(bus)
    finally:
        for g in guards:
            g.close()


def _stop_bus(bus: FeetechBus) -> None:
    if not bus.is_connected:
        return
    try:
        bus.sync_write("Goal_Position", bus.sync_read("Present_Position"))
    except Exception as e:
        log.warning("could not hold the arm before torque off: %s", e)
    bus.disable_torque(best_effort=True)
    try:
        bus.close()
    except Exception as e:
        log.warning("closing %s: %s", bus.port, e)
