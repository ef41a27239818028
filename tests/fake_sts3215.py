"""Test fixtures around the byte-level STS3215 bus (`hilserl_ray.twin.sts3215`, shared with the twin).

`FakeBus` is that bus on a pseudo-terminal; tests move a passive arm by setting `actual`, make
servos silent, flip error bits, or corrupt replies. Plus calibration, video and config helpers.
"""

from __future__ import annotations

# The byte-level servo lives in the package (the twin runs the same one); tests use these names.
from hilserl_ray.twin.sts3215 import (  # noqa: F401
    BROADCAST,
    INST_PING,
    INST_READ,
    INST_SYNC_READ,
    INST_SYNC_WRITE,
    INST_WRITE,
    checksum,
    sm_decode,
    sm_encode,
)
from hilserl_ray.twin.sts3215 import Servo as FakeServo  # noqa: F401
from hilserl_ray.twin.sts3215 import ServoBus as FakeBus  # noqa: F401

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
    from hilserl_ray.checks.config import require_valid
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
    return require_valid(TrainConfig.model_validate(data))
