"""Calibration: the guided procedure over the fake bus, LeRobot's JSON and normalization."""

from __future__ import annotations

import io
import json
import os
import threading
import time

import numpy as np
import pytest
from fake_sts3215 import JOINTS, LEROBOT_FILE, FakeBus, write_calibration

from hilserl_ray import calibrate as calibrate_cli
from hilserl_ray.hardware.calibration import (
    CalibrationError,
    MotorCalibration,
    Normalizer,
    apply_calibration,
    calibrate,
    load_calibration,
    save_calibration,
)
from hilserl_ray.hardware.feetech import FeetechBus

MOTORS = dict(zip(JOINTS, range(1, 7), strict=True))


def test_lerobot_file_loads_and_normalizes_like_lerobot(tmp_path):
    path = tmp_path / "so101_follower.json"
    path.write_text(json.dumps(LEROBOT_FILE, indent=4))
    cal = load_calibration(path, JOINTS)
    assert cal["elbow_flex"] == MotorCalibration(3, 0, 1367, 880, 3153)
    norm = Normalizer(cal, JOINTS)
    raw = {
        "shoulder_pan": 2025,
        "shoulder_lift": 900,
        "elbow_flex": 3000,
        "wrist_flex": 2026,
        "wrist_roll": 100,
        "gripper": 4000,
    }
    got = norm.to_user(raw)
    # LeRobot: degrees = (raw - mid) * 360 / 4095 (not clipped); gripper = clipped 0..100
    want = [(raw[m] - (c["range_min"] + c["range_max"]) / 2) * 360 / 4095 for m, c in LEROBOT_FILE.items()]
    want[5] = 100.0  # 4000 is past range_max: clipped
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert got.dtype == np.float32
    # mid-range reads 0 degrees; a quarter turn from mid reads ~90
    assert abs(norm.to_user({**raw, "shoulder_pan": (758 + 3292) // 2 + 1024})[0] - 90.02) < 0.05


def test_lerobot_range_units_convert_to_degrees(tmp_path):
    """Datasets recorded with LeRobot's default use_degrees=False (-100..100) line up with ours."""
    path = tmp_path / "so101_follower.json"
    path.write_text(json.dumps(LEROBOT_FILE))
    norm = Normalizer(load_calibration(path), JOINTS)
    raw = {
        "shoulder_pan": 2025,
        "shoulder_lift": 900,
        "elbow_flex": 3000,
        "wrist_flex": 2026,
        "wrist_roll": 100,
        "gripper": 2500,
    }
    # what LeRobot stores with use_degrees=False: (raw - min) / (max - min) * 200 - 100
    recorded = [
        (raw[m] - c["range_min"]) / (c["range_max"] - c["range_min"]) * 200 - 100
        for m, c in LEROBOT_FILE.items()
    ]
    recorded[5] = (2500 - 2023) / (3542 - 2023) * 100  # gripper 0..100 either way
    np.testing.assert_allclose(norm.from_lerobot_range(np.array([recorded])), [norm.to_user(raw)], atol=1e-3)


def test_round_trip_and_limits():
    cal = {m: MotorCalibration(i, 0, 0, 1024, 3072) for m, i in MOTORS.items()}
    cal["gripper"] = MotorCalibration(6, 0, 0, 2000, 3000)
    norm = Normalizer(cal, JOINTS)
    q = np.array([-45.0, 10.0, 33.3, 0.0, 89.9, 25.0])
    raw = norm.to_raw(q)
    assert raw["gripper"] == 2250 and raw["wrist_flex"] == 2048
    np.testing.assert_allclose(norm.to_user(raw), q, atol=360 / 4095)
    low, high = norm.limits()
    np.testing.assert_allclose(low, [-90.02] * 5 + [0.0], atol=0.01)
    np.testing.assert_allclose(high, [90.02] * 5 + [100.0], atol=0.01)
    # drive_mode 1 mirrors the gripper's 0..100 scale
    flipped = Normalizer({**cal, "gripper": MotorCalibration(6, 1, 0, 2000, 3000)}, JOINTS)
    assert flipped.to_user({**raw, "gripper": 2250})[5] == pytest.approx(75.0)
    assert flipped.to_raw(np.array([*q[:5], 75.0]))["gripper"] == 2250


def test_load_errors_name_file_motor_and_fix(tmp_path):
    with pytest.raises(CalibrationError, match=r"python -m hilserl_ray.calibrate"):
        load_calibration(tmp_path / "nope.json")
    bad = dict(LEROBOT_FILE)
    bad.pop("gripper")
    (tmp_path / "a.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"a.json has no entry for motors \['gripper'\]"):
        load_calibration(tmp_path / "a.json", JOINTS)
    bad = {**LEROBOT_FILE, "elbow_flex": {**LEROBOT_FILE["elbow_flex"], "range_max": 700}}
    (tmp_path / "b.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"b.json, motor 'elbow_flex'.*880..700"):
        load_calibration(tmp_path / "b.json", JOINTS)
    (tmp_path / "c.json").write_text("{")
    with pytest.raises(ValueError, match="c.json is not valid JSON"):
        load_calibration(tmp_path / "c.json")


def _sweep(fake: FakeBus, moves: list[dict[int, int]]):
    """A `stop()` that plays one pose per call (a person moving the joints), then stops."""
    it = iter(moves)

    def stop() -> bool:
        pose = next(it, None)
        if pose is None:
            return True
        for i, raw in pose.items():
            fake[i].set_present(raw)
        return False

    return stop


def test_guided_calibration_writes_servos_and_lerobot_json(tmp_path):
    mid_actual = {1: 3000, 2: 1500, 3: 2048, 4: 100, 5: 2500, 6: 1000}
    with FakeBus(actual=mid_actual) as fake:
        bus = FeetechBus(fake.port, MOTORS, timeout_margin_ms=250.0)
        bus.connect()
        fake[1].poke((40, 1), 1)  # torque on from an earlier session: calibration must turn it off
        prompts = []
        moves = [{1: 1000, 2: 900, 3: 800, 4: 700, 6: 2000}, {1: 3100, 2: 3200, 3: 3300, 4: 3400, 6: 3000}]
        cal = calibrate(bus, wait=prompts.append, stop=_sweep(fake, moves), say=prompts.append)
        assert "middle" in prompts[0]
        assert not any(s.torque for s in fake.servos.values())
        for m, i in MOTORS.items():
            assert cal[m].homing_offset == mid_actual[i] - 2047  # mid pose now reads 2047
            # written into the servo's EEPROM registers (Homing_Offset sign-magnitude, bit 11)
            assert fake[i].homing_offset == cal[m].homing_offset
            assert (fake[i].peek((9, 2)), fake[i].peek((11, 2))) == (cal[m].range_min, cal[m].range_max)
        assert (cal["shoulder_pan"].range_min, cal["shoulder_pan"].range_max) == (1000, 3100)
        assert (cal["gripper"].range_min, cal["gripper"].range_max) == (2000, 3000)
        assert (cal["wrist_roll"].range_min, cal["wrist_roll"].range_max) == (0, 4095)
        save_calibration(tmp_path / "f.json", cal)
        data = json.loads((tmp_path / "f.json").read_text())
        assert set(data) == set(JOINTS)
        assert set(data["gripper"]) == {"id", "drive_mode", "homing_offset", "range_min", "range_max"}
        assert load_calibration(tmp_path / "f.json") == cal
        bus.close()


def test_a_joint_left_unmoved_is_an_error():
    with FakeBus() as fake:
        bus = FeetechBus(fake.port, MOTORS, timeout_margin_ms=250.0)
        bus.connect()
        with pytest.raises(ValueError, match=r"\['elbow_flex'\] moved less than"):
            calibrate(
                bus, wait=lambda m: None, stop=_sweep(fake, [{1: 1000, 2: 1000, 4: 1000, 6: 2500}]), say=print
            )
        bus.close()


def test_apply_calibration_only_writes_on_mismatch(tmp_path):
    with FakeBus() as fake:
        bus = FeetechBus(fake.port, MOTORS, timeout_margin_ms=250.0)
        bus.connect()
        cal = load_calibration(write_calibration(tmp_path / "c.json", offsets={"elbow_flex": -100}))
        assert apply_calibration(bus, cal) is True
        assert fake[3].homing_offset == -100 and fake[3].peek((9, 2)) == 2048 - 1101
        assert apply_calibration(bus, cal) is False
        bus.close()


def test_calibrate_cli_end_to_end(tmp_path):
    """`python -m hilserl_ray.calibrate`: Enter, move the joints, Enter; file written."""
    with FakeBus(actual={i: 2100 for i in range(1, 7)}) as fake:
        r, w = os.pipe()
        stdin = os.fdopen(r, "r")
        out = io.StringIO()
        result = {}

        def run():
            result["rc"] = calibrate_cli.main(
                [
                    "--port",
                    fake.port,
                    "--out",
                    str(tmp_path / "cal" / "follower.json"),
                    "--timeout-ms",
                    "250",
                ],
                stdin=stdin,
                out=out,
            )

        t = threading.Thread(target=run)
        t.start()
        os.write(w, b"\n")  # "arm is mid-range"
        deadline = time.monotonic() + 5
        while "Recording" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        for lo, hi in ((1500, 2600), (1400, 2700)):
            for i in range(1, 7):
                fake[i].set_present(lo)
            time.sleep(0.1)
            for i in range(1, 7):
                fake[i].set_present(hi)
            time.sleep(0.1)
        os.write(w, b"\n")  # "done moving"
        t.join(timeout=10)
        os.close(w)
        assert result.get("rc") == 0, out.getvalue()
        cal = load_calibration(tmp_path / "cal" / "follower.json", JOINTS)
        assert cal["elbow_flex"].homing_offset == 2100 - 2047
        assert (cal["elbow_flex"].range_min, cal["elbow_flex"].range_max) == (1400, 2700)
