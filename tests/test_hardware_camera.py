"""Cameras: a video file stands in for the sensor (OpenCV decodes it like a device)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from fake_sts3215 import write_video

from hilserl_ray import find_cameras as find_cameras_cli
from hilserl_ray.hardware import camera as camera_mod
from hilserl_ray.hardware.camera import CameraError, OpenCVCamera


def test_video_file_camera_delivers_fresh_rgb_frames_and_loops(tmp_path):
    video = write_video(tmp_path / "cam.avi", frames=5)
    cam = OpenCVCamera("wrist", str(video), width=64, height=48, fps=50)
    cam.start()
    try:
        frame, t0 = cam.latest()
        assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
        seen = set()
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            f, t = cam.latest()
            seen.add(int(round(f.mean() / 10)))
            time.sleep(0.01)
        assert t > t0  # the background reader keeps the newest frame
        assert seen == {0, 1, 2, 3, 4}  # every frame of the 5-frame clip, looped at 50 fps
        assert cam.frames_read > 5
    finally:
        cam.stop()


def test_bgr_is_converted_to_rgb(tmp_path):
    import cv2

    path = tmp_path / "red.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 48))
    for _ in range(3):
        w.write(np.dstack([np.zeros((48, 64)), np.zeros((48, 64)), np.full((48, 64), 255)]).astype(np.uint8))
    w.release()
    cam = OpenCVCamera("front", str(path), 64, 48, 30)
    cam.start()
    r, g, b = cam.latest()[0].reshape(-1, 3).mean(0)
    cam.stop()
    assert r > 200 and g < 40 and b < 40


def test_wrong_size_is_an_error_naming_both_sizes(tmp_path):
    video = write_video(tmp_path / "cam.avi", width=64, height=48)
    cam = OpenCVCamera("wrist", str(video), width=640, height=480, fps=30)
    with pytest.raises(CameraError, match=r"'wrist'.*delivers 64x48, configured 640x480.*env.cameras.wrist"):
        cam.start()


def test_unopenable_camera_lists_the_devices_that_open(tmp_path, monkeypatch):
    good = write_video(tmp_path / "good.avi")
    monkeypatch.setattr(camera_mod, "candidate_devices", lambda: [str(good), "/dev/video99"])
    cam = OpenCVCamera("wrist", "/dev/video99", 64, 48, 30)
    with pytest.raises(CameraError) as e:
        cam.start()
    msg = str(e.value)
    assert "cannot open device '/dev/video99'" in msg
    assert f"{good} (64x48)" in msg and "find_cameras" in msg


def test_find_cameras_cli(tmp_path, capsys):
    video = write_video(tmp_path / "cam.avi")
    assert find_cameras_cli.main([str(video), "--save-dir", str(tmp_path / "shots")]) == 0
    out = capsys.readouterr().out
    assert f"{video}\t64x48" in out
    assert len(list((tmp_path / "shots").glob("*.png"))) == 1
    assert find_cameras_cli.main([str(tmp_path / "missing.avi")]) == 2  # a user error: no traceback
