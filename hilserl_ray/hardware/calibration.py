"""Calibration: LeRobot-compatible JSON, raw <-> degrees / 0..100, and the guided procedure.

The JSON is LeRobot's `{motor: {id, drive_mode, homing_offset, range_min, range_max}}`, so a
file from `lerobot-calibrate` loads unchanged, and the normalization is LeRobot's, so joint
angles from LeRobot-recorded datasets line up with ours:
  degrees = (raw - (range_min + range_max) / 2) * 360 / 4095      (arm joints, not clipped)
  gripper = (clip(raw) - range_min) / (range_max - range_min) * 100  (0 closed .. 100 open)
with drive_mode 1 mirroring the 0..100 scale.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hilserl_ray.errors import UserError
from hilserl_ray.hardware.feetech import RESOLUTION, FeetechBus

MAX_RES = RESOLUTION - 1  # 4095: LeRobot's divisor
HALF_TURN = MAX_RES // 2  # 2047: the reading of a mid-range pose after homing
RANGE_0_100 = frozenset({"gripper"})
FULL_TURN = frozenset({"wrist_roll"})  # rotates freely: its range is the whole turn


class CalibrationError(UserError, ValueError):
    """A calibration file that is missing or cannot be used; the message names the file and motor."""


@dataclass(frozen=True)
class MotorCalibration:
    id: int
    drive_mode: int
    homing_offset: int
    range_min: int
    range_max: int


def load_calibration(path: str | Path, motors: Sequence[str] | None = None) -> dict[str, MotorCalibration]:
    """Read a LeRobot-format calibration; errors name the file, the motor and the field."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(
            f"calibration file {str(path)!r} does not exist; record one with "
            f"`python -m hilserl_ray.calibrate --port <port> --out {path}`"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CalibrationError(f"calibration file {path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise CalibrationError(
            f"calibration file {path}: expected an object {{motor: {{...}}}}, got {type(data).__name__}"
        )
    missing = [m for m in (motors or []) if m not in data]
    if missing:
        raise CalibrationError(
            f"calibration file {path} has no entry for motors {missing}; it has {sorted(data)}"
        )
    fields = ("id", "drive_mode", "homing_offset", "range_min", "range_max")
    out = {}
    for name, entry in data.items():
        if motors is not None and name not in motors:
            continue
        if not isinstance(entry, dict) or any(f not in entry for f in fields):
            got = sorted(entry) if isinstance(entry, dict) else entry
            raise CalibrationError(
                f"calibration file {path}, motor {name!r}: expected fields {list(fields)}, got {got}"
            )
        try:
            cal = MotorCalibration(**{f: int(entry[f]) for f in fields})
        except (TypeError, ValueError) as e:
            raise CalibrationError(
                f"calibration file {path}, motor {name!r}: fields must be integers ({e})"
            ) from e
        if not 0 <= cal.range_min < cal.range_max <= MAX_RES:
            raise CalibrationError(
                f"calibration file {path}, motor {name!r}: need 0 <= range_min < range_max <= {MAX_RES}, "
                f"got {cal.range_min}..{cal.range_max}; re-run the calibration and move the joint through its range"
            )
        out[name] = cal
    return out


def save_calibration(path: str | Path, calibration: Mapping[str, MotorCalibration]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({m: asdict(c) for m, c in calibration.items()}, indent=4) + "\n")
    tmp.replace(path)


class Normalizer:
    """Raw positions <-> user units for a fixed motor order (degrees; 0..100 for the gripper)."""

    def __init__(self, calibration: Mapping[str, MotorCalibration], motors: Sequence[str]):
        missing = [m for m in motors if m not in calibration]
        if missing:
            raise ValueError(f"calibration has no entry for motors {missing}")
        self.motors = list(motors)
        cals = [calibration[m] for m in motors]
        self._min = np.array([c.range_min for c in cals], dtype=np.float64)
        self._max = np.array([c.range_max for c in cals], dtype=np.float64)
        self._mid = (self._min + self._max) / 2
        self._pct = np.array([m in RANGE_0_100 for m in motors])
        self._flip = np.array([bool(c.drive_mode) for c in cals]) & self._pct
        self._flip_range = np.array([bool(c.drive_mode) for c in cals]) & ~self._pct

    def to_user(self, raw: Mapping[str, int]) -> np.ndarray:
        r = np.array([raw[m] for m in self.motors], dtype=np.float64)
        deg = (r - self._mid) * 360.0 / MAX_RES
        pct = (np.clip(r, self._min, self._max) - self._min) / (self._max - self._min) * 100.0
        pct = np.where(self._flip, 100.0 - pct, pct)
        return np.where(self._pct, pct, deg).astype(np.float32)

    def to_raw(self, values: Sequence[float] | np.ndarray) -> dict[str, int]:
        v = np.asarray(values, dtype=np.float64)
        if v.shape != (len(self.motors),):
            raise ValueError(f"expected {len(self.motors)} joint values ({self.motors}), got shape {v.shape}")
        deg_raw = v * MAX_RES / 360.0 + self._mid
        pct = np.clip(np.where(self._flip, 100.0 - v, v), 0.0, 100.0)
        pct_raw = pct / 100.0 * (self._max - self._min) + self._min
        raw = np.rint(np.where(self._pct, pct_raw, deg_raw))
        raw = np.clip(raw, 0, MAX_RES).astype(int)
        return {m: int(r) for m, r in zip(self.motors, raw, strict=True)}

    def from_lerobot_range(self, values: np.ndarray) -> np.ndarray:
        """LeRobot's default SO-101 units (`use_degrees=False`: arm joints -100..100 over the
        calibrated range, gripper 0..100) -> ours, for datasets recorded that way. (..., 6)."""
        v = np.asarray(values, dtype=np.float64)
        arm = np.where(self._flip_range, -v, v)
        raw = (arm + 100.0) / 200.0 * (self._max - self._min) + self._min
        return np.where(self._pct, v, (raw - self._mid) * 360.0 / MAX_RES).astype(np.float32)

    def to_lerobot_range(self, values: np.ndarray) -> np.ndarray:
        """Ours -> LeRobot's default units (what `use_degrees=False` records; clipped to the
        calibrated range as LeRobot does). The inverse of `from_lerobot_range`. (..., 6)."""
        v = np.asarray(values, dtype=np.float64)
        raw = np.clip(v * MAX_RES / 360.0 + self._mid, self._min, self._max)
        arm = (raw - self._min) / (self._max - self._min) * 200.0 - 100.0
        arm = np.where(self._flip_range, -arm, arm)
        return np.where(self._pct, v, arm).astype(np.float32)

    def limits(self) -> tuple[np.ndarray, np.ndarray]:
        """The calibrated range of each joint in user units (what the arm can reach)."""
        lo = np.where(self._pct, 0.0, (self._min - self._mid) * 360.0 / MAX_RES)
        hi = np.where(self._pct, 100.0, (self._max - self._mid) * 360.0 / MAX_RES)
        return lo.astype(np.float32), hi.astype(np.float32)


# ---------------------------------------------------------------------- servos <-> calibration
def read_servo_calibration(bus: FeetechBus) -> dict[str, tuple[int, int, int]]:
    """{motor: (homing_offset, min_limit, max_limit)} as stored in the servos' EEPROM."""
    offs = bus.sync_read("Homing_Offset")
    lo = bus.sync_read("Min_Position_Limit")
    hi = bus.sync_read("Max_Position_Limit")
    return {m: (offs[m], lo[m], hi[m]) for m in bus.motors}


def write_servo_calibration(bus: FeetechBus, calibration: Mapping[str, MotorCalibration]) -> None:
    """Homing offsets and position limits into the servos (torque off: EEPROM writes need Lock 0)."""
    bus.disable_torque()
    for m in bus.motors:
        c = calibration[m]
        bus.write("Homing_Offset", m, c.homing_offset)
        bus.write("Min_Position_Limit", m, c.range_min)
        bus.write("Max_Position_Limit", m, c.range_max)


def check_ids(calibration: Mapping[str, MotorCalibration], bus: FeetechBus, source: str) -> None:
    wrong = {m: (calibration[m].id, i) for m, i in bus.motors.items() if calibration[m].id != i}
    if wrong:
        raise ValueError(
            f"calibration {source} was recorded for other servo ids: {{motor: (file id, configured id)}} = {wrong}; "
            "use the matching calibration file or fix robot.motor_ids"
        )


def apply_calibration(bus: FeetechBus, calibration: Mapping[str, MotorCalibration]) -> bool:
    """Make the servos match the file; True if anything had to be written (as LeRobot does on
    connect: a swapped servo or a file from another machine must not shift every angle)."""
    stored = read_servo_calibration(bus)
    want = {m: (c.homing_offset, c.range_min, c.range_max) for m, c in calibration.items() if m in bus.motors}
    if all(stored[m] == want[m] for m in want):
        return False
    write_servo_calibration(bus, calibration)
    return True


# ---------------------------------------------------------------------- guided procedure
def set_half_turn_homings(bus: FeetechBus) -> dict[str, int]:
    """With the arm posed mid-range: offsets that make every joint read 2047 there."""
    bus.disable_torque()
    for m in bus.motors:
        bus.write("Homing_Offset", m, 0)
    actual = bus.sync_read("Present_Position")
    offsets = {m: actual[m] - HALF_TURN for m in bus.motors}
    for m, off in offsets.items():
        bus.write("Homing_Offset", m, off)
    return offsets


def record_ranges(
    bus: FeetechBus,
    stop: Callable[[], bool],
    *,
    poll_s: float = 0.02,
    on_sample: Callable[[dict, dict, dict], None] | None = None,
) -> tuple[dict[str, int], dict[str, int]]:
    """Track min/max of every joint while a person moves it, until `stop()`; full-turn joints get
    0..4095. Errors if a joint never moved (a forgotten joint would clamp the arm to one pose)."""
    first = bus.sync_read("Present_Position")
    mins, maxs = dict(first), dict(first)
    while True:
        pos = bus.sync_read("Present_Position")
        for m, v in pos.items():
            mins[m], maxs[m] = min(mins[m], v), max(maxs[m], v)
        if on_sample is not None:
            on_sample(pos, mins, maxs)
        if stop():
            break
        time.sleep(poll_s)
    for m in bus.motors:
        if m in FULL_TURN:
            mins[m], maxs[m] = 0, MAX_RES
    still = [m for m in bus.motors if maxs[m] - mins[m] < 20]
    if still:
        raise ValueError(
            f"joints {still} moved less than 20 steps (2 degrees) while recording ranges; "
            "move every joint through its full range before pressing Enter"
        )
    return mins, maxs


def calibrate(
    bus: FeetechBus,
    *,
    wait: Callable[[str], None],
    stop: Callable[[], bool],
    say: Callable[[str], None] = print,
    on_sample: Callable[[dict, dict, dict], None] | None = None,
) -> dict[str, MotorCalibration]:
    """The guided calibration: pose mid-range -> homing offsets; move every joint -> ranges; write
    both into the servos. `wait(msg)` blocks for the person (Enter on the CLI); recording runs
    until `stop()` is true (the CLI: Enter pressed again)."""
    bus.disable_torque()
    for m in bus.motors:
        bus.write("Operating_Mode", m, 0)
    wait("Move the arm to the middle of its range of motion (all joints), then press Enter.")
    offsets = set_half_turn_homings(bus)
    say(
        "Recording: move every joint except wrist_roll through its entire range of motion, "
        "then press Enter to stop."
    )
    mins, maxs = record_ranges(bus, stop, on_sample=on_sample)
    cal = {
        m: MotorCalibration(
            id=i, drive_mode=0, homing_offset=offsets[m], range_min=mins[m], range_max=maxs[m]
        )
        for m, i in bus.motors.items()
    }
    write_servo_calibration(bus, cal)
    return cal
