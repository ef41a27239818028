"""Video files through PyAV: append-only encoding and strictly sequential decoding.

Decoding never seeks per frame: a file is read front to back once with frame threading.
Frame times come from each frame's pts (never from counting frames), so frame i of an
episode is matched to `from_timestamp + i / fps` even across episodes sharing a file.

`pipeline_image` turns a decoded frame into the pipeline's image. The exact route converts
the full frame to RGB and calls `process_image` (crop, INTER_AREA resize) like the live env.
For uncropped yuv420p frames the fast route area-resizes the Y, U and V planes (zero-copy
views) and converts only the small result to RGB with the frame's own matrix and range:
the same linear operations in the other order, about 0.5 levels from the exact route,
where libswscale's one-step resize+convert differs by about 2 and is no faster. The first
frame of every file checks the fast route against the exact one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from hilserl_ray.envs.transforms import process_image

# As LeRobot encodes: a keyframe every 2 frames, CRF 30, yuv420p; SVT-AV1 preset 12 (its default
# codec). h264 adds the "veryfast" preset so recording keeps up with the cameras.
CODECS = {
    "av1": ("libsvtav1", {"g": "2", "crf": "30", "preset": "12"}),
    "h264": ("libx264", {"g": "2", "crf": "30", "preset": "veryfast"}),
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
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (time in seconds, rgb24 frame) for every frame of `path`, in order.

    `size` = (height, width) resizes inside the same libswscale call that converts the
    pixel format (the raw-decoding baseline of the benchmarks).
    """
    kwargs: dict = {"format": "rgb24"}
    if size is not None:
        kwargs.update(height=int(size[0]), width=int(size[1]))
        if interpolation:
            kwargs["interpolation"] = interpolation
    for t, frame in decode_frames(path):
        yield t, frame.to_ndarray(**kwargs)


@contextlib.contextmanager
def _video_stream(path: Path) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """`path` opened, and its first video stream; a missing file or one without video is named."""
    try:
        container = av.open(str(path))
    except (av.error.FileNotFoundError, FileNotFoundError):
        raise FileNotFoundError(f"video file {path} does not exist") from None
    with container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        yield container, container.streams.video[0]


def decode_frames(path: Path) -> Iterator[tuple[float, av.VideoFrame]]:
    """Yield (time in seconds, decoded frame) for every frame of `path`, in order.

    Times are pts * time_base in float64: exact to ~1e-11 s for hours of video.
    """
    with _video_stream(path) as (container, stream):
        stream.thread_type = "AUTO"
        tb = float(stream.time_base)
        for frame in container.decode(stream):
            if frame.pts is None:
                raise ValueError(f"{path}: a frame without a timestamp (pts); re-encode the file")
            yield frame.pts * tb, frame


def frame_times(path: Path) -> list[float]:
    """Every frame's time in seconds, sorted, from the container's packets without decoding them:
    what `decode_frames` would yield times for (a cut file lists fewer), read in a fraction of its time."""
    with _video_stream(path) as (container, stream):
        tb = float(stream.time_base)
        times = []
        for packet in container.demux(stream):
            if not packet.size:  # the flush packet at the end
                continue
            if packet.pts is None:
                raise ValueError(f"{path}: a frame without a timestamp (pts); re-encode the file")
            times.append(packet.pts * tb)
    return sorted(times)


def count_frames(path: Path) -> int:
    """Decode-free frame count from the container's packets."""
    return len(frame_times(path))


# Y'CbCr -> R'G'B' by (Kr, Kb) of the frame's colorspace; swscale's default (unspecified) is BT.601.
_KRKB = {1: (0.2126, 0.0722), 2: (0.299, 0.114), 5: (0.299, 0.114), 6: (0.299, 0.114)}
_FAST_FORMATS = {"yuv420p": False, "yuvj420p": True}  # pix_fmt -> full range by definition
FAST_CHECK_LEVELS = 1.5  # mean |fast - exact| above this on a file's first frame: use the exact route


def _yuv_to_rgb_matrix(colorspace: int, full_range: bool) -> np.ndarray | None:
    """3x4 affine map from (Y, U, V, 1) in 0..255 to RGB 0..255, or None if the colorspace is unknown."""
    if colorspace not in _KRKB:
        return None
    kr, kb = _KRKB[colorspace]
    kg = 1.0 - kr - kb
    m = np.array(
        [
            [1.0, 0.0, 2 * (1 - kr)],
            [1.0, -2 * kb * (1 - kb) / kg, -2 * kr * (1 - kr) / kg],
            [1.0, 2 * (1 - kb), 0.0],
        ]
    )
    if full_range:
        scale, offset = np.array([1.0, 1.0, 1.0]), np.array([0.0, 128.0, 128.0])
    else:
        scale, offset = np.array([255 / 219, 255 / 224, 255 / 224]), np.array([16.0, 128.0, 128.0])
    m = m * scale
    return np.concatenate([m, (-m @ offset)[:, None]], axis=1).astype(np.float32)


def _plane(frame: av.VideoFrame, i: int) -> np.ndarray:
    p = frame.planes[i]
    return np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[: p.height, : p.width]


class PipelineImages:
    """Decoded frame -> pipeline image (crop, then resize to `size` = (height, width)), per file."""

    def __init__(self, crop: tuple[int, int, int, int] | None, size: tuple[int, int] | None):
        self.crop, self.size = crop, tuple(size) if size is not None else None
        self._fast: bool | None = None  # decided on the first frame of each file
        self.fast_frames = self.exact_frames = 0

    def new_file(self) -> None:
        self._fast = None

    def exact(self, frame: av.VideoFrame) -> np.ndarray:
        img = frame.to_ndarray(format="rgb24")
        self.exact_frames += 1
        return (
            img
            if self.size is None and self.crop is None
            else process_image(img, self.crop, self.size or img.shape[:2])
        )

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if self._fast is None:
            self._fast = self._decide(frame)
        if not self._fast:
            return self.exact(frame)
        self.fast_frames += 1
        return self._resize_yuv(frame)

    def _decide(self, frame: av.VideoFrame) -> bool:
        fmt = frame.format.name
        if (
            self.crop is not None
            or self.size is None
            or fmt not in _FAST_FORMATS
            or frame.width % 2
            or frame.height % 2
        ):
            return False
        full = _FAST_FORMATS[fmt] or frame.color_range == 2
        self._matrix = _yuv_to_rgb_matrix(frame.colorspace, full)
        if self._matrix is None:
            return False
        diff = np.abs(self._resize_yuv(frame).astype(np.int16) - self.exact(frame)).mean()
        self.exact_frames -= 1
        return bool(diff <= FAST_CHECK_LEVELS)

    def _resize_yuv(self, frame: av.VideoFrame) -> np.ndarray:
        h, w = self.size
        planes = [cv2.resize(_plane(frame, i), (w, h), interpolation=cv2.INTER_AREA) for i in range(3)]
        return cv2.transform(cv2.merge(planes), self._matrix)
