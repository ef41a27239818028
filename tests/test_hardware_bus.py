"""Feetech bus over the fake STS3215 pty, driven by the unmodified scservo_sdk."""

from __future__ import annotations

import time

import pytest
import scservo_sdk as scs
import serial
from fake_sts3215 import INST_SYNC_READ, INST_SYNC_WRITE, FakeBus, checksum

from hilserl_ray.hardware.feetech import (
    FeetechBus,
    FeetechError,
    decode_sign_magnitude,
    encode_sign_magnitude,
)

NAMES = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
MOTORS = dict(zip(NAMES, range(1, 7), strict=True))
SLOW_CI_MS = 250.0  # the fake answers from a Python thread a loaded machine can starve


@pytest.fixture
def fake():
    with FakeBus() as fb:
        yield fb


@pytest.fixture
def bus(fake):
    b = FeetechBus(fake.port, MOTORS, timeout_margin_ms=SLOW_CI_MS)
    b.connect()
    yield b
    b.close()


def _raw(port: str, packet: bytes, reply_len: int, timeout: float = 0.5) -> bytes:
    """Send raw bytes and collect the reply (no SDK in between)."""
    with serial.Serial(port, 1_000_000, timeout=timeout) as s:
        s.write(packet)
        return s.read(reply_len)


def test_wire_bytes_ping_read_and_bad_checksum(fake):
    # ping id 1: FF FF 01 02 01 FB -> status FF FF 01 02 00 FC
    assert _raw(fake.port, bytes([0xFF, 0xFF, 1, 2, 1, 0xFB]), 6) == bytes([0xFF, 0xFF, 1, 2, 0, 0xFC])
    # read 2 bytes of Model_Number (addr 3) from id 2: reply carries 777 little-endian (0x09, 0x03)
    body = bytes([2, 4, 2, 3, 2])
    reply = _raw(fake.port, b"\xff\xff" + body + bytes([checksum(body)]), 8)
    assert reply[:7] == bytes([0xFF, 0xFF, 2, 4, 0, 0x09, 0x03])
    assert reply[7] == checksum(reply[2:7])
    # a corrupted checksum is ignored, as by a real servo: no reply at all
    assert _raw(fake.port, bytes([0xFF, 0xFF, 1, 2, 1, 0x00]), 6, timeout=0.1) == b""
    assert fake.bad_checksums == 1
    # the error byte travels in the status packet
    fake[1].error = 0x20
    assert _raw(fake.port, bytes([0xFF, 0xFF, 1, 2, 1, 0xFB]), 6)[4] == 0x20


def test_sign_magnitude_encoding():
    assert encode_sign_magnitude(-300, 11) == 0x800 | 300
    assert encode_sign_magnitude(300, 11) == 300
    assert encode_sign_magnitude(-5, 15) == 0x8005
    for bit in (10, 11, 15):
        for v in (0, 1, -1, 1000, -1000, (1 << bit) - 1, -((1 << bit) - 1)):
            assert decode_sign_magnitude(encode_sign_magnitude(v, bit), bit) == v
    with pytest.raises(ValueError, match="sign bit 11"):
        encode_sign_magnitude(4096, 11)


def test_sign_magnitude_registers_through_the_bus(fake, bus):
    bus.write("Homing_Offset", "elbow_flex", -300)
    assert fake[3].peek((31, 2)) == 0x800 | 300  # what the servo stores
    assert bus.read("Homing_Offset", "elbow_flex") == -300
    # firmware: Present = Actual - Homing_Offset
    fake[3].actual = 1000
    assert bus.sync_read("Present_Position")["elbow_flex"] == 1300
    fake[4].velocity, fake[4].load = -25, -7
    assert bus.read("Present_Velocity", "wrist_flex") == -25
    assert fake[4].peek((60, 2)) == 0x400 | 7  # Present_Load: sign bit 10
    assert bus.read("Present_Load", "wrist_flex") == -7


def test_sync_read_and_sync_write_move_the_servos(fake, bus):
    for i, s in fake.servos.items():
        s.actual = 1000 + 100 * i
    assert bus.sync_read("Present_Position") == {n: 1000 + 100 * i for n, i in MOTORS.items()}
    bus.enable_torque()
    assert all(s.torque and s.peek((55, 1)) == 1 for s in fake.servos.values())  # torque on, Lock 1
    fake.clear_log()
    bus.sync_write("Goal_Position", {n: 2000 + i for n, i in MOTORS.items()})
    assert bus.sync_read("Present_Position") == {n: 2000 + i for n, i in MOTORS.items()}
    # one broadcast packet each way for six servos
    assert len(fake.instructions(INST_SYNC_WRITE)) == 1
    assert len(fake.instructions(INST_SYNC_READ)) == 1
    bus.disable_torque()
    assert not any(s.torque or s.peek((55, 1)) for s in fake.servos.values())


def test_configure_writes_lerobot_settings(fake, bus):
    bus.configure(follower=True)
    for s in fake.servos.values():
        assert (s.peek((7, 1)), s.peek((85, 1)), s.peek((41, 1)), s.peek((33, 1))) == (0, 254, 254, 0)
        assert (s.peek((21, 1)), s.peek((23, 1)), s.peek((22, 1))) == (16, 0, 32)
    g = fake[6]
    assert (g.peek((16, 2)), g.peek((28, 2)), g.peek((36, 1))) == (500, 250, 25)


def test_missing_port_names_the_port():
    with pytest.raises(FeetechError, match=r"/dev/ttyDOESNOTEXIST.*robot.port"):
        FeetechBus("/dev/ttyDOESNOTEXIST", MOTORS).connect()


def test_silent_servos_are_named_with_the_ids_that_answer():
    with FakeBus(ids=(1, 2, 3, 5, 6)) as fake:
        bus = FeetechBus(fake.port, MOTORS, retries=1, timeout_margin_ms=SLOW_CI_MS)
        with pytest.raises(FeetechError) as e:
            bus.connect()
        msg = str(e.value)
        assert fake.port in msg and "{'wrist_flex': 4}" in msg and "[1, 2, 3, 5, 6]" in msg
        assert not bus.is_connected


def test_wrong_model_is_refused():
    with FakeBus() as fake:
        fake[2].poke((3, 2), 1060)
        with pytest.raises(FeetechError, match=r"'shoulder_lift': 1060.*777"):
            FeetechBus(fake.port, MOTORS, timeout_margin_ms=SLOW_CI_MS).connect()


def test_sync_read_retries_corrupt_replies_then_names_silent_ids(fake, bus):
    fake[1].actual = 1234
    fake.corrupt_replies = 1  # one bad checksum: the retry succeeds
    assert bus.sync_read("Present_Position")["shoulder_pan"] == 1234
    fake.clear_log()
    fake.drop_replies = 1  # one lost reply: retried, and never read as position 0
    assert bus.sync_read("Present_Position")["shoulder_pan"] == 1234
    assert len(fake.instructions(INST_SYNC_READ)) == 2
    fake[5].silent = True  # a servo drops off mid-run
    t0 = time.monotonic()
    with pytest.raises(FeetechError, match=r"ids \[5\] do not answer.*answer: \[1, 2, 3, 4, 6\]"):
        bus.sync_read("Present_Position")
    # bounded: (retries + 1) sync reads and 3 pings, each at most one packet timeout
    assert time.monotonic() - t0 < 7 * (SLOW_CI_MS / 1000) + 1.0
    fake[5].silent = False
    assert bus.sync_read("Present_Position")["wrist_roll"] == 2048  # and the bus recovers


def test_servo_error_byte_is_reported(fake, bus):
    fake[3].error = 0x20 | 0x04
    with pytest.raises(FeetechError, match=r"elbow_flex.*overheat, overload"):
        bus.read("Present_Temperature", "elbow_flex")


def test_packet_timeout_is_lerobots_not_the_sdks(fake):
    """byte time x (length + 3) + 50 ms; the SDK would allow byte time x length + 34 ms."""
    bus = FeetechBus(fake.port, MOTORS, timeout_margin_ms=SLOW_CI_MS)
    bus.connect()
    bus._port.margin_ms = 50.0  # the default
    bus._port.setPacketTimeout(48)  # a 6-servo sync read of 2 bytes: (6 + 2) x 6
    assert bus._port.packet_timeout == pytest.approx(0.01 * 51 + 50)
    sdk = scs.PortHandler(fake.port)
    sdk.tx_time_per_byte = bus._port.tx_time_per_byte
    sdk.setPacketTimeout(48)
    assert sdk.packet_timeout == pytest.approx(0.01 * 48 + 34)
    bus.close()


def test_packet_timeout_long_enough_for_a_slow_reply(fake, bus):
    """A reply 100 ms late: the SDK's own ~34 ms timeout gives up, our bus waits for it."""
    fake.reply_delay = 0.1
    port = scs.PortHandler(fake.port)
    assert port.openPort()
    ph = scs.PacketHandler(0)
    _, result, _ = ph.read2ByteTxRx(port, 1, 56)
    assert result == scs.COMM_RX_TIMEOUT
    port.closePort()
    time.sleep(0.2)  # let the late reply drain
    assert bus.sync_read("Present_Position")["gripper"] == 2048


def test_interrupted_transaction_does_not_wedge_the_bus(fake, bus):
    """Ctrl+C inside the SDK leaves its port 'busy'; the next call (e.g. torque off) must work."""
    bus._port.is_using = True
    bus.disable_torque()
    assert not fake[1].torque


def test_misuse_errors_name_the_problem(fake):
    bus = FeetechBus(fake.port, MOTORS, timeout_margin_ms=SLOW_CI_MS)
    with pytest.raises(FeetechError, match="not connected"):
        bus.sync_read("Present_Position")
    bus.connect()
    with pytest.raises(KeyError, match="unknown STS3215 register 'Present_Positon'"):
        bus.read("Present_Positon", "gripper")
    with pytest.raises(KeyError, match="unknown motor 'elbow'"):
        bus.write("Goal_Position", "elbow", 100)
    with pytest.raises(ValueError, match="Acceleration: 300 does not fit 1"):
        bus.write("Acceleration", "gripper", 300)
    bus.close()


def test_shadowing_sdk_is_refused(monkeypatch):
    """ftservo-python-sdk installs a module named scservo_sdk too: say so instead of failing oddly."""
    import importlib.metadata

    from hilserl_ray.hardware import feetech

    monkeypatch.setattr(feetech, "_SDK_CHECKED", False)
    monkeypatch.setattr(
        importlib.metadata,
        "packages_distributions",
        lambda: {"scservo_sdk": ["feetech-servo-sdk", "ftservo-python-sdk"]},
    )
    with pytest.raises(ImportError, match="pip uninstall -y ftservo-python-sdk"):
        FeetechBus("/dev/null", MOTORS).connect()
