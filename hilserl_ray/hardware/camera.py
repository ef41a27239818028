"""OpenCV cameras with a background reader: `latest()` never waits for the sensor.

A camera is an index (0), a device path (/dev/video0, /dev/v4l/by-id/...) or, for tests and
replays, a video file, which is played at the configured fps and looped. Frames are RGB uint8
at exactly the configured (height, width); a camera that delivers another size is an error
naming the modes to configure, not a silent resize that would change what the policy sees.
"""

from __future__ import annotations

import glob
import logging
import os
import sys
import threading
import time

import cv2
import numpy as np

from hilserl_ray.errors import UserError

log = logging.getLogger(__name__)


class CameraError(UserError, RuntimeError):
    pass


def _is_file(device: int | str) -> bool:
    return isinstance(device, str) and os.path.isfile(device) and not device.startswith("/dev/")


def _parse(device: int | str) -> int | str:
    if isinstance(device, str) and device.isdigit():
        return int(device)
    return device


def _open(device: int | str) -> cv2.VideoCapture:
    """V4L2 first for devices on Linux (OpenCV's default backend may pick GStreamer), else any."""
    device = _parse(device)
    is_device = isinstance(device, int) or str(device).startswith("/dev/")
    if is_device and sys.platform.startswith("linux"):
        cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
        if cap.isOpened():
            return cap
        cap.release()
    return cv2.VideoCapture(device if isinstance(device, int) else str(device))


def candidate_devices(max_index: int = 10) -> list[int | str]:
    """Devices worth trying: every /dev/video* (stable by-id links first), else indices."""
    paths = sorted(glob.glob("/dev/v4l/by-id/*")) + sorted(glob.glob("/dev/video*"))
    return paths if paths else list(range(max_index))


def probe(device: int | str) -> dict | None:
    """Open briefly and read one frame: {device, width, height, fps} or None."""
    cap = _open(device)
    try:
        if not cap.isOpened():
            return None
        ok, frame = cap.read()
        if not ok or frame is None:
            return None
        return {
            "device": device,
            "width": int(frame.shape[1]),
            "height": int(frame.shape[0]),
            "fps": float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
        }
    finally:
        cap.release()


def find_cameras(devices: list[int | str] | None = None) -> list[dict]:
    return [info for d in (devices if devices is not None else candidate_devices()) if (info := probe(d))]


class OpenCVCamera:
    """One camera; `start()` opens it and starts the reader thread, `latest()` returns the newest
    frame (RGB, configured size) and its monotonic timestamp."""

    def __init__(
        self, name: str, device: int | str, width: int, height: int, fps: float, key: str | None = None
    ):
        self.name, self.device = name, _parse(device)
        self.key = key or f"env.cameras.{name}"  # the config key in hints (env.cameras.<index> pastes)
        self.width, self.height, self.fps = width, height, fps
        self._cap: cv2.VideoCapture | None = None
        self._frame: np.ndarray | None = None
        self._stamp = 0.0
        self._count = 0
        self._error: str | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def is_file(self) -> bool:
        return _is_file(self.device)

    def start(self, timeout_s: float = 5.0) -> None:
        if self._thread is not None:
            return
        cap = _open(self.device)
        if not cap.isOpened():
            cap.release()
            working = [f"{i['device']} ({i['width']}x{i['height']})" for i in find_cameras()]
            raise CameraError(
                f"camera {self.name!r}: cannot open device {self.device!r}. Devices that open: "
                f"{working or 'none'} (python -m hilserl_ray.find_cameras); set {self.key}.device"
            )
        if not self.is_file:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        self._cap = cap
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()
        try:
            self.latest(timeout_s=timeout_s)
        except Exception:
            self.stop()
            raise

    def _run(self) -> None:
        period = 1.0 / self.fps if self.is_file else 0.0  # a file plays in real time; a sensor paces itself
        next_t = time.monotonic()
        failures = 0
        while not self._stop.is_set():
            ok, frame = self._cap.read()
            if not ok and self.is_file:  # loop the video
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, frame = self._cap.read()
            if not ok or frame is None:
                failures += 1
                if failures >= 50:
                    with self._cond:
                        self._error = f"camera {self.name!r} ({self.device!r}) stopped delivering frames"
                        self._cond.notify_all()
                    return
                time.sleep(0.01)
                continue
            failures = 0
            if frame.shape[:2] != (self.height, self.width):
                with self._cond:
                    self._error = (
                        f"camera {self.name!r} ({self.device!r}) delivers {frame.shape[1]}x{frame.shape[0]}, "
                        f"configured {self.width}x{self.height}; set {self.key}.width/height to a "
                        "mode the camera supports"
                    )
                    self._cond.notify_all()
                return
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            with self._cond:
                self._frame, self._stamp = rgb, time.monotonic()
                self._count += 1
                self._cond.notify_all()
            if period:
                next_t += period
                delay = next_t - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_t = time.monotonic()

    @property
    def frames_read(self) -> int:
        return self._count

    def latest(self, timeout_s: float = 1.0, max_age_s: float | None = None) -> tuple[np.ndarray, float]:
        """(frame, timestamp). Waits only for the first frame; errors if the camera died or the
        newest frame is older than `max_age_s` (a frozen camera must not feed the policy)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._frame is None and self._error is None:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    raise CameraError(
                        f"camera {self.name!r} ({self.device!r}) gave no frame within {timeout_s} s"
                    )
                self._cond.wait(left)
            if self._error is not None:
                raise CameraError(self._error)
            age = time.monotonic() - self._stamp
            if max_age_s is not None and age > max_age_s:
                raise CameraError(
                    f"camera {self.name!r}: newest frame is {age:.2f} s old (limit {max_age_s} s)"
                )
            return self._frame, self._stamp

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None
