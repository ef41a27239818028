"""Video files through PyAV: append-only encoding and strictly sequential decoding.

Decoding never seeks per frame: a file is read front to back once with frame threading,
and each frame is converted (and resized, in the same libswscale call) straight to rgb24.
Frame times are exact rationals (pts * time_base), so frame i of an episode is matched to
`from_timestamp + i / fps` without float drift.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# LeRobot's defaults: AV1 via SVT-AV1, a keyframe every 2 frames, CRF 30, yuv420p.
CODECS = {
    "av1": ("libsvtav1", {"g": "2", "crf": "30", "preset": "12"}),
    "h264": ("libx264", {"g": "2", "crf": "23", "preset": "veryfast"}),
}
PIX_FMT = "yuv420p"

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its config banner to stderr otherwise


def fps_fraction(fps: float) -> Fraction:
    """30 -> 30/1, 29.97 -> 30000/1001: the exact rate a container can carry."""
    return Fraction(fps).limit_denominator(1001)


class VideoEncoder:
    """Append RGB frames (H, W, 3) uint8 to one mp4; frame k gets time k / fps."""

    def __init__(self, path: Path, width: int, height: int, fps: float, codec: str = "av1"):
        if codec not in CODECS:
            raise ValueError(f"video codec {codec!r}: expected one of {sorted(CODECS)}")
        if width % 2 or height % 2:
            raise ValueError(f"{path}: {PIX_FMT} needs even frame sizes, got {width}x{height}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.width, self.height = width, height
        self.rate = fps_fraction(fps)
        self.frames = 0
        name, options = CODECS[codec]
        self._container = av.open(str(self.path), "w")
        self._stream = self._container.add_stream(name, rate=self.rate)
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, PIX_FMT
        self._stream.options = dict(options)

    def add(self, image: np.ndarray) -> None:
        if image.shape != (self.height, self.width, 3) or image.dtype != np.uint8:
            raise ValueError(
                f"{self.path}: expected a ({self.height}, {self.width}, 3) uint8 frame, got {image.shape} {image.dtype}"
            )
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = self.frames
        frame.time_base = 1 / self.rate
        self._container.mux(self._stream.encode(frame))
        self.frames += 1

    @property
    def duration(self) -> Fraction:
        """Seconds of video written so far: where the next episode's frames start."""
        return self.frames / self.rate

    def close(self) -> None:
        if self._container is not None:
            self._container.mux(self._stream.encode(None))
            self._container.close()
            self._container = None


def video_info(path: Path) -> dict:
    """The `info` block LeRobot stores per video feature in meta/info.json."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return {
            "video.height": s.height,
            "video.width": s.width,
            "video.codec": s.codec_context.codec.canonical_name,
            "video.pix_fmt": s.pix_fmt,
            "video.is_depth_map": False,
            "video.fps": float(s.average_rate) if s.average_rate else None,
            "video.channels": 3,
            "has_audio": len(c.streams.audio) > 0,
        }


def decode(
    path: Path, size: tuple[int, int] | None = None, interpolation: str | None = None
) -> Iterator[tuple[Fraction, np.ndarray]]:
    """Yield (time in seconds, rgb24 frame) for every frame of `path`, in order.

    `size` = (height, width) resizes inside the same libswscale call that converts the
    pixel format, which is far cheaper than converting at full size and resizing after.
    """
    kwargs: dict = {"format": "rgb24"}
    if size is not None:
        kwargs.update(height=int(size[0]), width=int(size[1]))
        if interpolation:
            kwargs["interpolation"] = interpolation
    try:
        container = av.open(str(path))
    except (av.error.FileNotFoundError, FileNotFoundError):
        raise FileNotFoundError(f"video file {path} does not exist") from None
    with container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = stream.time_base
        for frame in container.decode(stream):
            if frame.pts is None:
                raise ValueError(f"{path}: a frame without a timestamp (pts); re-encode the file")
            yield frame.pts * tb, frame.to_ndarray(**kwargs)


def count_frames(path: Path) -> int:
    """Decode-free frame count from the container's packets."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return sum(1 for p in c.demux(s) if p.size)
