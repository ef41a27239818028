"""Feetech STS3215 servos behind a pseudo-terminal, speaking the protocol byte for byte.

The unmodified `scservo_sdk` opens the pty's slave path as if it were /dev/ttyACM0; a thread on
the master side parses instruction packets (ping, read, write, sync read, sync write), checks
their checksums (a bad one is ignored, as a servo does) and answers with status packets that
carry an error byte. Each servo keeps a 256-byte control table (addresses from
`hardware.feetech.CONTROL_TABLE`); Present_Position is derived from a physical angle as the
firmware does (Present = Actual - Homing_Offset), and the goal is clamped to the position limits.

Who moves the servo: by default its own motion model (to the goal instantly, or at `speed`
steps/s), as the byte-level tests need; the twin sets `external=True` and drives `actual`,
velocity and load from MuJoCo. Reply timing: `reply_delay` (USB adapter latency) plus
`byte_time` per byte on the wire plus each servo's Return_Delay_Time; `drop_rate` loses a
reply now and then (seeded). `unplug()`/`plug()` close and reopen the pty, like a USB cable.
Both the motion model and the reply timing keep the bus's `clock` (the twin's, `twin/clock.py`).
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import threading
import time
import tty
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hilserl_ray.hardware.feetech import CONTROL_TABLE, STS3215_MODEL, decode_sign_magnitude
from hilserl_ray.twin.clock import WALL, TwinClock

INST_PING, INST_READ, INST_WRITE, INST_SYNC_READ, INST_SYNC_WRITE = 0x01, 0x02, 0x03, 0x82, 0x83
BROADCAST = 0xFE
BYTE_TIME_1M = 10e-6  # s per byte at 1 Mbaud (8N1: 10 bits)


def _reg(name: str) -> tuple[int, int]:
    r = CONTROL_TABLE[name]
    return r.address, r.size


# (address, size) of the registers the servo gives behaviour to
MODEL, ID, MIN_LIMIT, MAX_LIMIT = (
    _reg("Model_Number"),
    _reg("ID"),
    _reg("Min_Position_Limit"),
    _reg("Max_Position_Limit"),
)
RETURN_DELAY, HOMING = _reg("Return_Delay_Time"), _reg("Homing_Offset")
TORQUE, GOAL, LOCK = _reg("Torque_Enable"), _reg("Goal_Position"), _reg("Lock")
PRESENT_POS, PRESENT_VEL, PRESENT_LOAD = (
    _reg("Present_Position"),
    _reg("Present_Velocity"),
    _reg("Present_Load"),
)
MOVING, PRESENT_CURRENT = _reg("Moving"), _reg("Present_Current")


def checksum(body: bytes | list[int]) -> int:
    return ~sum(body) & 0xFF


def sm_encode(value: int, bit: int) -> int:
    """Signed -> sign-magnitude, saturating (a register never overflows into its sign bit)."""
    limit = (1 << bit) - 1
    value = max(-limit, min(limit, int(value)))
    return (1 << bit) | -value if value < 0 else value


sm_decode = decode_sign_magnitude


@dataclass
class Servo:
    id: int
    actual: int = 2048  # physical encoder angle, 0..4095
    model: int = STS3215_MODEL
    speed: float | None = None  # own motion model: steps/s toward the goal with torque on; None = instant
    external: bool = False  # True: someone else (the twin's physics) sets actual/velocity/load
    silent: bool = False
    velocity: int | None = None  # Present_Velocity to report; None = from the motion model
    load: int = 0  # Present_Load to report (sign bit 10)
    error: int = 0  # error byte of every status packet (bit 0 voltage, 1 angle, 2 heat, 3 current, 5 load)
    mem: bytearray = field(default_factory=lambda: bytearray(256))
    clock: TwinClock = field(default=WALL, repr=False)  # speed and dt are in its seconds

    def __post_init__(self):
        self._last_t = self.clock.now()
        self.poke(MODEL, self.model)
        self.poke(ID, self.id)
        self.poke(MAX_LIMIT, 4095)
        self.poke((16, 2), 1000)  # Max_Torque_Limit
        self.poke((21, 1), 32)  # P
        self.poke(GOAL, self.present)

    # --- control table
    def peek(self, reg: tuple[int, int]) -> int:
        addr, size = reg
        return int.from_bytes(self.mem[addr : addr + size], "little")

    def poke(self, reg: tuple[int, int], value: int) -> None:
        addr, size = reg
        self.mem[addr : addr + size] = int(value).to_bytes(size, "little")

    @property
    def homing_offset(self) -> int:
        return sm_decode(self.peek(HOMING), 11)

    @property
    def torque(self) -> bool:
        return bool(self.peek(TORQUE))

    @property
    def goal(self) -> int:
        return sm_decode(self.peek(GOAL), 15)

    @property
    def limited_goal(self) -> int:
        """The goal as the firmware drives to it: clamped to Min/Max_Position_Limit."""
        lo, hi = self.peek(MIN_LIMIT), self.peek(MAX_LIMIT)
        return min(max(self.goal, lo), hi) if (lo or hi) else self.goal

    @property
    def present(self) -> int:
        return (self.actual - self.homing_offset) % 4096

    def set_present(self, value: int) -> None:
        """Move the (passive) servo so it reports `value` as Present_Position."""
        self.actual = (value + self.homing_offset) % 4096

    # --- firmware behaviour
    def update(self) -> None:
        now = self.clock.now()
        dt, self._last_t = now - self._last_t, now
        velocity = 0
        if self.torque and not self.external:
            err = self.limited_goal - self.present
            step = err if self.speed is None else max(-self.speed * dt, min(self.speed * dt, err))
            if step:
                self.actual = (self.actual + round(step)) % 4096
                velocity = round(step / dt) if dt > 0 and self.speed is not None else 0
        self.poke(PRESENT_POS, sm_encode(self.present, 15))
        if self.velocity is not None:
            velocity = self.velocity
        self.poke(PRESENT_VEL, sm_encode(velocity, 15))
        self.poke(PRESENT_LOAD, sm_encode(self.load, 10))
        self.poke(MOVING, int(velocity != 0))

    def read(self, addr: int, length: int) -> bytes:
        self.update()
        return bytes(self.mem[addr : addr + length])

    def write(self, addr: int, data: bytes) -> None:
        self.mem[addr : addr + len(data)] = data
        self.update()


PacketHook = Callable[[int, int, bytes], None]


class ServoBus:
    """Servos behind a pty. `port` is the path to give the SDK (`link`, if given, is a stable
    symlink to it that follows unplug/plug); use as a context manager or call `close()`."""

    def __init__(
        self,
        ids=(1, 2, 3, 4, 5, 6),
        actual: dict[int, int] | None = None,
        *,
        link: str | Path | None = None,
        reply_delay: float = 0.0,
        byte_time: float = 0.0,
        drop_rate: float = 0.0,
        seed: int | None = None,
        keep_packets: int | None = None,
        on_packet: PacketHook | None = None,
        clock: TwinClock = WALL,
    ):
        self.clock = clock
        self.servos: dict[int, Servo] = {}
        for i in ids:
            self.servos[i] = Servo(i, actual=(actual or {}).get(i, 2048), clock=clock)
        self.lock = threading.RLock()
        self.packets: deque[tuple[int, int, bytes]] = deque(maxlen=keep_packets)  # valid packets
        self.transactions = 0  # instruction packets handled (a sync read of 6 counts once)
        self.bad_checksums = 0
        self.corrupt_replies = 0  # the next N status packets go out with a wrong checksum
        self.drop_replies = 0  # the next N status packets are not sent
        self.dropped = 0  # replies lost so far (by drop_replies or drop_rate)
        self.reply_delay = reply_delay  # seconds (of the clock) before answering (USB adapter latency)
        self.byte_time = byte_time  # seconds (of the clock) per byte on the wire (BYTE_TIME_1M at 1 Mbaud)
        self.drop_rate = drop_rate  # probability that a status packet is lost
        self.on_packet = on_packet
        self._rng = random.Random(seed)
        self.link = Path(link) if link is not None else None
        self.master: int | None = None
        self._slave: int | None = None
        self.port = ""
        self._buf = bytearray()
        self._answered: list[Servo] = []
        self._stop = threading.Event()
        self._open_pty()
        self._thread = threading.Thread(target=self._run, name="sts3215-bus", daemon=True)
        self._thread.start()

    # --- the cable
    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo or line editing before pyserial configures the port
        self.master, self._slave, self.port = master, slave, os.ttyname(slave)
        self._buf.clear()
        if self.link is not None:
            self.link.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.link.with_name(self.link.name + ".tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self.port)
            tmp.replace(self.link)  # atomic: a reader sees the old or the new device, never none

    def _close_pty(self) -> None:
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
        for fd in (self.master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.master = self._slave = None

    @property
    def plugged(self) -> bool:
        return self.master is not None

    def unplug(self) -> None:
        """Pull the USB cable: the port disappears and the host's reads fail. The servos keep
        their power, state and torque (as real ones do on their own supply)."""
        with self.lock:
            self._close_pty()

    def plug(self) -> None:
        """Plug the cable back in: a new pty (a new /dev/pts number, as a new ttyACM), same servos."""
        with self.lock:
            if self.master is None:
                self._open_pty()

    # --- test helpers
    def __getitem__(self, motor_id: int) -> Servo:
        return self.servos[motor_id]

    def instructions(self, inst: int) -> list[tuple[int, int, bytes]]:
        with self.lock:
            return [p for p in self.packets if p[1] == inst]

    def clear_log(self) -> None:
        with self.lock:
            self.packets.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        with self.lock:
            self._close_pty()

    def __enter__(self) -> ServoBus:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- protocol
    def _run(self) -> None:
        while not self._stop.is_set():
            master = self.master
            if master is None:
                time.sleep(0.02)
                continue
            try:
                ready, _, _ = select.select([master], [], [], 0.02)
                if not ready:
                    continue
                chunk = os.read(master, 4096)
            except (OSError, ValueError):
                time.sleep(0.01)  # slave side closed between SDK sessions, or unplugged
                continue
            t_in = time.monotonic()
            with self.lock:
                if master != self.master:  # unplugged meanwhile
                    continue
                self._buf.extend(chunk)
                replies, wire_bytes = bytearray(), len(chunk)
                self._answered = []
                for packet in self._packets():
                    replies += self._handle(*packet)
            if replies:
                delay = self.reply_delay + self.byte_time * (wire_bytes + len(replies))
                delay += sum(s.peek(RETURN_DELAY) for s in self._answered) * 2e-6  # 2 us units
                if delay > 0:
                    time.sleep(max(0.0, t_in + self.clock.wall(delay) - time.monotonic()))
                with contextlib.suppress(OSError):
                    os.write(master, bytes(replies))

    def _packets(self):
        buf = self._buf
        while True:
            start = buf.find(b"\xff\xff")
            if start < 0:
                del buf[: max(0, len(buf) - 1)]
                return
            del buf[:start]
            if len(buf) >= 3 and buf[2] == 0xFF:  # a third 0xFF: the header starts one later
                del buf[0]
                continue
            if len(buf) < 4 or len(buf) < buf[3] + 4:
                return
            n = buf[3] + 4
            packet, body = bytes(buf[:n]), buf[2 : n - 1]
            if n < 6 or checksum(body) != packet[-1]:
                self.bad_checksums += 1
                del buf[:2]  # resynchronise on the next header
                continue
            del buf[:n]
            yield packet[2], packet[4], packet[5:-1]

    def _status(self, servo: Servo, params: bytes = b"") -> bytes:
        if self.drop_replies or (self.drop_rate and self._rng.random() < self.drop_rate):
            self.drop_replies = max(0, self.drop_replies - 1)
            self.dropped += 1
            return b""
        self._answered.append(servo)
        body = bytes([servo.id, len(params) + 2, servo.error]) + params
        chk = checksum(body)
        if self.corrupt_replies:
            self.corrupt_replies -= 1
            chk ^= 0x5A
        return b"\xff\xff" + body + bytes([chk])

    def _live(self, motor_id: int) -> Servo | None:
        s = self.servos.get(motor_id)
        return s if s is not None and not s.silent else None

    def _handle(self, motor_id: int, inst: int, params: bytes) -> bytes:
        self.packets.append((motor_id, inst, params))
        self.transactions += 1
        out = self._answer(motor_id, inst, params)
        if self.on_packet is not None:
            self.on_packet(motor_id, inst, params)
        return out

    def _answer(self, motor_id: int, inst: int, params: bytes) -> bytes:
        if inst == INST_SYNC_WRITE and motor_id == BROADCAST:
            addr, size = params[0], params[1]
            for k in range(2, len(params), size + 1):
                s = self._live(params[k])
                if s is not None:
                    s.write(addr, params[k + 1 : k + 1 + size])
            return b""
        if inst == INST_SYNC_READ and motor_id == BROADCAST:
            addr, size = params[0], params[1]
            out = b""
            for i in params[2:]:
                s = self._live(i)
                if s is not None:
                    out += self._status(s, s.read(addr, size))
            return out
        s = self._live(motor_id)
        if s is None:
            return b""
        if inst == INST_PING:
            return self._status(s)
        if inst == INST_READ:
            return self._status(s, s.read(params[0], params[1]))
        if inst == INST_WRITE:
            s.write(params[0], params[1:])
            return self._status(s)
        return b""
