"""Feetech STS3215 bus over the official `scservo_sdk` (PyPI feetech-servo-sdk, protocol end 0).

Values in and out are raw register integers with sign-magnitude registers decoded to signed
ints; units (degrees, 0..100) are calibration's job. Every transaction holds one lock, so the
safety watchdog can stop the arm from its own thread. Failures raise `FeetechError` naming the
port, the motor/register and, when servos stay silent, which ids do answer.

Note: `ftservo-python-sdk` installs a module of the same name with another API; never both.
"""

from __future__ import annotations

import glob
import select
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import scservo_sdk as scs

from hilserl_ray.errors import UserError

STS3215_MODEL = 777
RESOLUTION = 4096
COMM_SUCCESS = scs.COMM_SUCCESS
COMM_RX_CORRUPT = scs.COMM_RX_CORRUPT


@dataclass(frozen=True)
class Register:
    address: int
    size: int
    sign_bit: int | None = None  # sign-magnitude registers: index of the sign bit


CONTROL_TABLE: dict[str, Register] = {
    "Model_Number": Register(3, 2),
    "ID": Register(5, 1),
    "Baud_Rate": Register(6, 1),
    "Return_Delay_Time": Register(7, 1),
    "Min_Position_Limit": Register(9, 2),
    "Max_Position_Limit": Register(11, 2),
    "Max_Torque_Limit": Register(16, 2),
    "Phase": Register(18, 1),
    "P_Coefficient": Register(21, 1),
    "D_Coefficient": Register(22, 1),
    "I_Coefficient": Register(23, 1),
    "Protection_Current": Register(28, 2),
    "Homing_Offset": Register(31, 2, 11),
    "Operating_Mode": Register(33, 1),
    "Overload_Torque": Register(36, 1),
    "Torque_Enable": Register(40, 1),
    "Acceleration": Register(41, 1),
    "Goal_Position": Register(42, 2, 15),
    "Goal_Time": Register(44, 2),
    "Goal_Velocity": Register(46, 2, 15),
    "Torque_Limit": Register(48, 2),
    "Lock": Register(55, 1),
    "Present_Position": Register(56, 2, 15),
    "Present_Velocity": Register(58, 2, 15),
    "Present_Load": Register(60, 2, 10),
    "Present_Voltage": Register(62, 1),
    "Present_Temperature": Register(63, 1),
    "Moving": Register(66, 1),
    "Present_Current": Register(69, 2),
    "Maximum_Acceleration": Register(85, 1),
}

_ERROR_BITS = {1: "input voltage", 2: "angle sensor", 4: "overheat", 8: "over-current", 32: "overload"}


class FeetechError(UserError, RuntimeError):
    """A bus problem: port missing, servos silent, corrupt replies, or a servo reporting an error."""


def encode_sign_magnitude(value: int, sign_bit: int) -> int:
    """Signed int -> register value with the sign in bit `sign_bit` (Feetech's convention)."""
    limit = (1 << sign_bit) - 1
    if abs(value) > limit:
        raise ValueError(
            f"{value} does not fit a sign-magnitude register with sign bit {sign_bit} (|v| <= {limit})"
        )
    return (1 << sign_bit) | -value if value < 0 else value


def decode_sign_magnitude(raw: int, sign_bit: int) -> int:
    magnitude = raw & ((1 << sign_bit) - 1)
    return -magnitude if (raw >> sign_bit) & 1 else magnitude


def describe_error_byte(error: int) -> str:
    names = [name for bit, name in _ERROR_BITS.items() if error & bit]
    return ", ".join(names) or f"error byte {error:#04x}"


_SDK_CHECKED = False


def check_sdk() -> None:
    """Refuse a `scservo_sdk` shadowed by ftservo-python-sdk (same module name, other API)."""
    global _SDK_CHECKED
    if _SDK_CHECKED:
        return
    import importlib.metadata

    dists = importlib.metadata.packages_distributions().get("scservo_sdk", [])
    if any(d.lower().replace("_", "-") == "ftservo-python-sdk" for d in dists) or not hasattr(
        scs, "GroupSyncRead"
    ):
        raise ImportError(
            f"module scservo_sdk comes from {dists}: ftservo-python-sdk installs the same module name with "
            "another API. Fix: pip uninstall -y ftservo-python-sdk feetech-servo-sdk && pip install feetech-servo-sdk"
        )
    _SDK_CHECKED = True


def candidate_ports() -> list[str]:
    """Serial devices a USB servo adapter usually shows up as (for error messages)."""
    pats = ("/dev/ttyACM*", "/dev/ttyUSB*", "/dev/serial/by-id/*", "/dev/tty.usbmodem*", "/dev/cu.usbmodem*")
    return sorted(p for pat in pats for p in glob.glob(pat))


class _PortHandler(scs.PortHandler):
    """The SDK's port with a usable packet timeout and a wait that is not a busy loop.

    The SDK allows ~34 ms for a whole reply; a 6-servo sync read over a USB adapter regularly
    needs more, so (as LeRobot does) allow byte time x (length + 3) + `margin_ms`. The SDK polls
    a non-blocking read in a tight loop while it waits; here an empty read waits up to 0.5 ms
    for bytes in select(), which frees the CPU (and the GIL) for the policy and camera threads.
    """

    margin_ms = 50.0

    def setPacketTimeout(self, packet_length):  # noqa: N802 (SDK name)
        self.packet_start_time = self.getCurrentTime()
        self.packet_timeout = self.tx_time_per_byte * (packet_length + 3) + self.margin_ms

    def readPort(self, length):  # noqa: N802 (SDK name)
        data = self.ser.read(length)
        if not data and length > 0:
            try:
                select.select([self.ser.fileno()], [], [], 0.0005)
            except (AttributeError, OSError, ValueError):  # no fileno (Windows): plain poll
                return data
            data = self.ser.read(length)
        return data


def _flush_late(port) -> None:
    """Before a retry: let replies to the failed request land, then drop them (else the retry
    would take the previous request's late answer for its own)."""
    time.sleep(0.002)
    port.ser.reset_input_buffer()


def _attempt(fn, *args):
    """One SDK transaction. A stale reply (e.g. a late answer to a timed-out request) can make
    the SDK index an empty payload: report it as a corrupt reply so the caller retries."""
    try:
        return fn(*args)
    except IndexError:
        return None


class FeetechBus:
    """One serial bus of STS3215 servos, addressed by motor name.

    `motors` maps names to ids. `connect()` opens the port and pings every id; then `read`,
    `write`, `sync_read`, `sync_write`, torque control and `configure` are available.
    """

    def __init__(
        self,
        port: str,
        motors: Mapping[str, int],
        *,
        retries: int = 3,
        timeout_margin_ms: float = 50.0,
        baudrate: int = 1_000_000,
    ):
        if len(set(motors.values())) != len(motors):
            raise ValueError(f"motor ids must be unique, got {dict(motors)}")
        self.port = port
        self.motors = dict(motors)
        self.retries = retries
        self.baudrate = baudrate
        self.timeout_margin_ms = timeout_margin_ms
        self._lock = threading.RLock()
        self._port: _PortHandler | None = None
        self._ph = None

    # ------------------------------------------------------------------ connection
    @property
    def is_connected(self) -> bool:
        return self._port is not None

    def connect(self, *, check_ids: bool = True) -> None:
        """Open the port and (by default) check every configured id answers as an STS3215."""
        with self._lock:
            if self._port is not None:
                return
            check_sdk()
            port = _PortHandler(self.port)
            port.margin_ms = self.timeout_margin_ms
            port.baudrate = self.baudrate
            try:
                ok = port.openPort()
            except Exception as e:  # pyserial raises SerialException / OSError
                raise FeetechError(
                    f"cannot open the servo bus port {self.port!r}: {e}. Serial devices present: "
                    f"{candidate_ports() or 'none'}; set robot.port (or pipeline.intervention.leader_port)."
                ) from e
            if not ok:
                raise FeetechError(
                    f"cannot open {self.port!r} at {self.baudrate} baud (unsupported baud rate?)"
                )
            self._port, self._ph = port, scs.PacketHandler(0)
        if check_ids:
            try:
                self.check_motors()
            except Exception:
                self.close()
                raise

    def check_motors(self) -> None:
        """Ping every configured id; error naming the silent ids, the ids that answer, and bad models."""
        found = self.scan(self.motors.values())
        silent = {n: i for n, i in self.motors.items() if i not in found}
        if silent:
            raise FeetechError(
                f"servos {silent} do not answer on {self.port}; ids that answer: {sorted(found) or 'none'}. "
                "Check power (the 12 V/5 V supply), the daisy-chain cable to those servos and their ids "
                "(robot.motor_ids)."
            )
        wrong = {n: found[i] for n, i in self.motors.items() if found[i] != STS3215_MODEL}
        if wrong:
            raise FeetechError(
                f"servos on {self.port} report model numbers {wrong}, expected {STS3215_MODEL} (STS3215)"
            )

    def close(self) -> None:
        with self._lock:
            if self._port is not None:
                try:
                    self._port.closePort()
                finally:
                    self._port = None

    def __enter__(self) -> FeetechBus:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _require(self):
        if self._port is None:
            raise FeetechError(f"bus {self.port} is not connected (call connect())")
        # Callers hold self._lock, so nobody else is mid-packet: clear a busy flag an interrupted
        # transaction (Ctrl+C inside the SDK) left behind, or every later call fails as "port busy".
        self._port.is_using = False
        self._port.ser.reset_input_buffer()  # late replies from a timed-out request are stale
        return self._port, self._ph

    def _reg(self, name: str) -> Register:
        try:
            return CONTROL_TABLE[name]
        except KeyError:
            raise KeyError(f"unknown STS3215 register {name!r}; known: {sorted(CONTROL_TABLE)}") from None

    def _id(self, motor: str) -> int:
        try:
            return self.motors[motor]
        except KeyError:
            raise KeyError(f"unknown motor {motor!r} on {self.port}; motors: {list(self.motors)}") from None

    # ------------------------------------------------------------------ single servo
    def ping(self, motor_id: int) -> int | None:
        """Model number of the servo with this id, or None if it does not answer."""
        with self._lock:
            port, ph = self._require()
            for attempt in range(max(1, self.retries)):
                if attempt:
                    _flush_late(port)
                out = _attempt(ph.ping, port, motor_id)
                if out is not None and out[1] == COMM_SUCCESS:
                    return out[0]
        return None

    def scan(self, ids: Iterable[int]) -> dict[int, int]:
        """{id: model number} of the ids that answer a ping."""
        out = {}
        for i in ids:
            model = self.ping(i)
            if model is not None:
                out[i] = model
        return out

    def read(self, register: str, motor: str) -> int:
        reg, motor_id = self._reg(register), self._id(motor)
        with self._lock:
            port, ph = self._require()
            fn = {1: ph.read1ByteTxRx, 2: ph.read2ByteTxRx, 4: ph.read4ByteTxRx}[reg.size]
            for attempt in range(self.retries + 1):
                if attempt:
                    _flush_late(port)
                value, result, error = _attempt(fn, port, motor_id, reg.address) or (0, COMM_RX_CORRUPT, 0)
                if result == COMM_SUCCESS:
                    break
        self._check(result, error, f"read {register} from {motor} (id {motor_id})")
        return decode_sign_magnitude(value, reg.sign_bit) if reg.sign_bit is not None else value

    def write(self, register: str, motor: str, value: int) -> None:
        reg, motor_id = self._reg(register), self._id(motor)
        raw = self._encode(reg, register, int(value))
        with self._lock:
            port, ph = self._require()
            fn = {1: ph.write1ByteTxRx, 2: ph.write2ByteTxRx, 4: ph.write4ByteTxRx}[reg.size]
            for attempt in range(self.retries + 1):
                if attempt:
                    _flush_late(port)
                result, error = _attempt(fn, port, motor_id, reg.address, raw) or (COMM_RX_CORRUPT, 0)
                if result == COMM_SUCCESS:
                    break
        self._check(result, error, f"write {register}={value} to {motor} (id {motor_id})")

    # ------------------------------------------------------------------ all servos at once
    def sync_read(self, register: str, motors: Iterable[str] | None = None) -> dict[str, int]:
        """One instruction, one reply per servo; retried. Error names the ids that did not answer."""
        reg = self._reg(register)
        names = list(self.motors if motors is None else motors)
        ids = [self._id(n) for n in names]
        with self._lock:
            port, ph = self._require()
            group = scs.GroupSyncRead(port, ph, reg.address, reg.size)
            for i in ids:
                group.addParam(i)
            for attempt in range(self.retries + 1):
                if attempt:
                    _flush_late(port)
                result = _attempt(group.txRxPacket)
                # a stale short reply with the right id "succeeds" with a truncated payload,
                # which getData would silently turn into position 0: count it as corrupt
                if result == COMM_SUCCESS and all(len(group.data_dict[i]) == reg.size for i in ids):
                    break
                if result == COMM_SUCCESS or result is None:
                    result = COMM_RX_CORRUPT
            else:
                silent = [i for i in ids if self.ping(i) is None]
                raise FeetechError(
                    f"sync read of {register} on {self.port} failed after {self.retries + 1} tries "
                    f"({ph.getTxRxResult(result)}): ids {silent or '(none: replies were corrupt)'} do not answer "
                    f"a ping; ids that answer: {[i for i in ids if i not in silent]}. Check the cable and power "
                    "of the silent servos."
                )
            values = {n: group.getData(i, reg.address, reg.size) for n, i in zip(names, ids, strict=True)}
        if reg.sign_bit is not None:
            values = {n: decode_sign_magnitude(v, reg.sign_bit) for n, v in values.items()}
        return values

    def sync_write(self, register: str, values: Mapping[str, int]) -> None:
        """Broadcast one write to several servos (no replies, so no per-servo confirmation)."""
        reg = self._reg(register)
        with self._lock:
            port, ph = self._require()
            group = scs.GroupSyncWrite(port, ph, reg.address, reg.size)
            for motor, value in values.items():
                raw = self._encode(reg, register, int(value))
                group.addParam(self._id(motor), list(raw.to_bytes(reg.size, "little")))
            result = group.txPacket()
        self._check(result, 0, f"sync write {register}")

    # ------------------------------------------------------------------ conveniences
    def enable_torque(self, motors: Iterable[str] | None = None) -> None:
        """Torque on, then Lock 1 (EEPROM writes locked while the arm is driven)."""
        for m in self.motors if motors is None else motors:
            self.write("Torque_Enable", m, 1)
            self.write("Lock", m, 1)

    def disable_torque(self, motors: Iterable[str] | None = None, *, best_effort: bool = False) -> None:
        """Torque off, then Lock 0. `best_effort` tries every motor and never raises (shutdown path)."""
        errors = []
        for m in self.motors if motors is None else motors:
            try:
                self.write("Torque_Enable", m, 0)
                self.write("Lock", m, 0)
            except Exception as e:
                if not best_effort:
                    raise
                errors.append(f"{m}: {e}")
        if errors:
            import logging

            logging.getLogger(__name__).error("torque off failed for %s", "; ".join(errors))

    def configure(self, *, follower: bool = True, gripper: str | None = "gripper") -> None:
        """LeRobot's SO-101 settings: position mode, fast replies, max acceleration; follower PID and
        a gentle gripper (it grips without cooking itself). Torque must be off (EEPROM writes)."""
        for m in self.motors:
            self.write("Return_Delay_Time", m, 0)
            self.write("Maximum_Acceleration", m, 254)
            self.write("Acceleration", m, 254)
            self.write("Operating_Mode", m, 0)
            if follower:
                self.write("P_Coefficient", m, 16)
                self.write("I_Coefficient", m, 0)
                self.write("D_Coefficient", m, 32)
        if follower and gripper in self.motors:
            self.write("Max_Torque_Limit", gripper, 500)
            self.write("Protection_Current", gripper, 250)
            self.write("Overload_Torque", gripper, 25)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _encode(reg: Register, name: str, value: int) -> int:
        if reg.sign_bit is not None:
            return encode_sign_magnitude(value, reg.sign_bit)
        if not 0 <= value < 1 << (8 * reg.size):
            raise ValueError(f"{name}: {value} does not fit {reg.size} unsigned byte(s)")
        return value

    def _check(self, result: int, error: int, what: str) -> None:
        if result != COMM_SUCCESS:
            raise FeetechError(f"{what} on {self.port} failed: {self._ph.getTxRxResult(result)}")
        if error:
            raise FeetechError(f"{what} on {self.port}: the servo reports {describe_error_byte(error)}")
