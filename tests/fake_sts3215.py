"""A fake Feetech STS3215 bus on a pseudo-terminal, speaking the protocol byte for byte.

The unmodified `scservo_sdk` opens the pty's slave path as if it were /dev/ttyACM0; a thread on
the master side parses instruction packets (ping, read, write, sync read, sync write), checks
their checksums (a bad one is ignored, as a servo does) and answers with status packets that
carry an error byte. Each servo keeps a 256-byte control table; Present_Position is derived
from a physical angle as the firmware does (Present = Actual - Homing_Offset), and a servo with
torque on moves to its goal (instantly, or at `speed` steps/s). Tests move a passive arm by
setting `actual`, make servos silent, flip error bits, or corrupt replies.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from dataclasses import dataclass, field

INST_PING, INST_READ, INST_WRITE, INST_SYNC_READ, INST_SYNC_WRITE = 0x01, 0x02, 0x03, 0x82, 0x83
BROADCAST = 0xFE

# (address, size, sign bit or None): the registers the fake gives behaviour to
MODEL, ID, MIN_LIMIT, MAX_LIMIT = (3, 2), (5, 1), (9, 2), (11, 2)
HOMING = (31, 2)
TORQUE, GOAL, LOCK = (40, 1), (42, 2), (55, 1)
PRESENT_POS, PRESENT_VEL, PRESENT_LOAD, MOVING, PRESENT_CURRENT = (56, 2), (58, 2), (60, 2), (66, 1), (69, 2)


def checksum(body: bytes | list[int]) -> int:
    return ~sum(body) & 0xFF


def sm_encode(value: int, bit: int) -> int:
    return (1 << bit) | -value if value < 0 else value


def sm_decode(raw: int, bit: int) -> int:
    mag = raw & ((1 << bit) - 1)
    return -mag if raw >> bit & 1 else mag


@dataclass
class FakeServo:
    id: int
    actual: int = 2048  # physical encoder angle, 0..4095
    model: int = 777
    speed: float | None = None  # steps/s toward the goal with torque on; None = instant
    silent: bool = False
    velocity: int | None = None  # Present_Velocity to report; None = from the motion model
    load: int = 0  # Present_Load to report (sign bit 10)
    error: int = 0  # error byte of every status packet (bit 0 voltage, 1 angle, 2 heat, 3 current, 5 load)
    mem: bytearray = field(default_factory=lambda: bytearray(256))
    _last_t: float = field(default_factory=time.monotonic)

    def __post_init__(self):
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
    def present(self) -> int:
        return (self.actual - self.homing_offset) % 4096

    def set_present(self, value: int) -> None:
        """Move the (passive) servo so it reports `value` as Present_Position."""
        self.actual = (value + self.homing_offset) % 4096

    # --- firmware behaviour
    def update(self) -> None:
        now = time.monotonic()
        dt, self._last_t = now - self._last_t, now
        velocity = 0
        if self.torque:
            goal = self.goal
            lo, hi = self.peek(MIN_LIMIT), self.peek(MAX_LIMIT)
            if lo or hi:
                goal = min(max(goal, lo), hi)
            err = goal - self.present
            step = err if self.speed is None else max(-self.speed * dt, min(self.speed * dt, err))
            if step:
                self.actual = (self.actual + round(step)) % 4096
                velocity = round(step / dt) if dt > 0 and self.speed is not None else 0
        self.poke(PRESENT_POS, sm_encode(self.present, 15))
        if self.velocity is not None:
            velocity = self.velocity
        self.poke(PRESENT_VEL, sm_encode(max(-32767, min(32767, velocity)), 15))
        self.poke(PRESENT_LOAD, sm_encode(self.load, 10))
        self.poke(MOVING, int(velocity != 0))

    def read(self, addr: int, length: int) -> bytes:
        self.update()
        return bytes(self.mem[addr : addr + length])

    def write(self, addr: int, data: bytes) -> None:
        self.mem[addr : addr + len(data)] = data
        self.update()


class FakeBus:
    """Servos behind a pty. `port` is the path to give the SDK; use as a context manager."""

    def __init__(self, ids=(1, 2, 3, 4, 5, 6), actual: dict[int, int] | None = None):
        self.servos: dict[int, FakeServo] = {}
        for i in ids:
            self.servos[i] = FakeServo(i, actual=(actual or {}).get(i, 2048))
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo or line editing before pyserial configures the port
        self.port = os.ttyname(self._slave)
        self.lock = threading.RLock()
        self.packets: list[tuple[int, int, bytes]] = []  # (id, instruction, params) of valid packets
        self.bad_checksums = 0
        self.corrupt_replies = 0  # the next N status packets go out with a wrong checksum
        self.drop_replies = 0  # the next N status packets are not sent
        self.reply_delay = 0.0  # seconds before answering (a slow adapter / long bus)
        self._buf = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-sts3215", daemon=True)
        self._thread.start()

    # --- test helpers
    def __getitem__(self, motor_id: int) -> FakeServo:
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
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> FakeBus:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- protocol
    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.02)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                time.sleep(0.01)  # slave side closed between SDK sessions
                continue
            self._buf.extend(chunk)
            replies = bytearray()
            for packet in self._packets():
                replies += self._handle(*packet)
            if replies:
                if self.reply_delay:
                    time.sleep(self.reply_delay)
                os.write(self.master, bytes(replies))

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

    def _status(self, servo: FakeServo, params: bytes = b"") -> bytes:
        if self.drop_replies:
            self.drop_replies -= 1
            return b""
        body = bytes([servo.id, len(params) + 2, servo.error]) + params
        chk = checksum(body)
        if self.corrupt_replies:
            self.corrupt_replies -= 1
            chk ^= 0x5A
        return b"\xff\xff" + body + bytes([chk])

    def _live(self, motor_id: int) -> FakeServo | None:
        s = self.servos.get(motor_id)
        return s if s is not None and not s.silent else None

    def _handle(self, motor_id: int, inst: int, params: bytes) -> bytes:
        with self.lock:
            self.packets.append((motor_id, inst, params))
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


# ------------------------------------------------------------------------------ test fixtures
JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")

# A calibration file exactly as `lerobot-calibrate` writes it for an SO-101 follower.
LEROBOT_FILE = {
    "shoulder_pan": {"id": 1, "drive_mode": 0, "homing_offset": -1470, "range_min": 758, "range_max": 3292},
    "shoulder_lift": {"id": 2, "drive_mode": 0, "homing_offset": 153, "range_min": 816, "range_max": 3333},
    "elbow_flex": {"id": 3, "drive_mode": 0, "homing_offset": 1367, "range_min": 880, "range_max": 3153},
    "wrist_flex": {"id": 4, "drive_mode": 0, "homing_offset": -2020, "range_min": 833, "range_max": 3219},
    "wrist_roll": {"id": 5, "drive_mode": 0, "homing_offset": 1890, "range_min": 0, "range_max": 4095},
    "gripper": {"id": 6, "drive_mode": 0, "homing_offset": 1216, "range_min": 2023, "range_max": 3542},
}


def write_calibration(
    path, ranges: dict[str, tuple[int, int]] | None = None, offsets: dict[str, int] | None = None
):
    """A LeRobot-format calibration centred on raw 2048 with the official MJCF's joint ranges
    (pan +-110, lift +-100, elbow +-96.8, wrist_flex +-95 degrees), wrist_roll a full turn,
    gripper 1900..2900; homing offsets 0 unless given."""
    import json

    half = {"shoulder_pan": 1251, "shoulder_lift": 1137, "elbow_flex": 1101, "wrist_flex": 1080}
    ranges = {
        **{j: (2048 - h, 2048 + h) for j, h in half.items()},
        "wrist_roll": (0, 4095),
        "gripper": (1900, 2900),
        **(ranges or {}),
    }
    data = {
        j: {
            "id": i + 1,
            "drive_mode": 0,
            "homing_offset": (offsets or {}).get(j, 0),
            "range_min": ranges[j][0],
            "range_max": ranges[j][1],
        }
        for i, j in enumerate(JOINTS)
    }
    with open(path, "w") as f:
        json.dump(data, f, indent=4)
    return path


def write_video(path, width: int = 64, height: int = 48, frames: int = 20):
    """An MJPG .avi whose frame k is filled with gray level 10*k: a camera stand-in."""
    import cv2
    import numpy as np

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (width, height))
    for k in range(frames):
        w.write(np.full((height, width, 3), 10 * k, np.uint8))
    w.release()
    return path


def real_config(port: str, calibration, video=None, **sections):
    """A TrainConfig for the real-robot env on the fake bus (fast: 50 Hz, short reset)."""
    from hilserl_ray.config import TrainConfig

    data = {
        # the fake answers from a Python thread that a loaded CI machine can starve: wait longer
        "robot": {
            "type": "so101",
            "port": port,
            "calibration": str(calibration),
            "reset_seconds": 0.2,
            "bus_timeout_ms": 250.0,
        },
        "env": {"fps": 50, "max_episode_steps": 10, "cameras": []},
        "buffer": {"online_ratio": 1.0},
    }
    if video is not None:
        data["env"]["cameras"] = [
            {"name": "wrist", "device": str(video), "width": 64, "height": 48, "fps": 30}
        ]
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return TrainConfig.model_validate(data)
