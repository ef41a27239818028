"""Synthetic LeRobot datasets whose frames name themselves, for tests and benchmarks.

Every camera frame carries its global frame index as a 16-bit block code (a 2 x 8 grid of
black/white cells, large enough to survive lossy video and resizing), so any misalignment
between a frame's row and its image is detectable after decoding. Joint positions are a
smooth, plausible SO-101 trajectory in degrees with joint 0 = the frame index / 100.

`write_teleop_dataset` writes what LeRobot records when a person teleoperates an so101_follower
with a leader arm: `observation.state` and `action` named `<joint>.pos`, the action being the
absolute joint targets (the leader's pose), in degrees or LeRobot's -100..100 range units, no
reward or done columns.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from hilserl_ray.data.lerobot_writer import LeRobotWriter
from hilserl_ray.data.mapping import DONE, INTERVENTION, PENALTY, REWARD
from hilserl_ray.hardware.calibration import Normalizer, load_calibration
from hilserl_ray.so101 import JOINT_NAMES

CODE_ROWS, CODE_COLS = 2, 8
RESET_POSE_DEG = np.array([0.0, -20.0, 30.0, 70.0, 0.0, 30.0])


def code_image(index: int, height: int, width: int, texture: np.ndarray | None = None) -> np.ndarray:
    """(height, width, 3) uint8 image whose cells spell `index` in binary (cell k = bit k).

    With `texture` (an (height, width, 3) uint8 image) the code covers the top third and the
    texture the rest, which decodes at about the speed of real camera footage.
    """
    img = np.empty((height, width, 3), np.uint8)
    code_h = height if texture is None else height // 3
    bits = (index >> np.arange(CODE_ROWS * CODE_COLS)) & 1
    cells = (bits.reshape(CODE_ROWS, CODE_COLS) * 255).astype(np.uint8)
    ys = np.arange(code_h) * CODE_ROWS // code_h
    xs = np.arange(width) * CODE_COLS // width
    img[:code_h] = cells[ys][:, xs][..., None]
    if texture is not None:
        img[code_h:] = texture[code_h:]
    return img


def read_code(img: np.ndarray, textured: bool = False) -> int:
    """Inverse of `code_image` for a (possibly lossy, resized) image: the mean of each cell's centre."""
    h, w = img.shape[:2]
    code_h = h if not textured else h // 3
    value = 0
    for k in range(CODE_ROWS * CODE_COLS):
        r, c = divmod(k, CODE_COLS)
        y0, y1 = (r * code_h) // CODE_ROWS, ((r + 1) * code_h) // CODE_ROWS
        x0, x1 = (c * w) // CODE_COLS, ((c + 1) * w) // CODE_COLS
        cy, cx = (y1 - y0) // 4, (x1 - x0) // 4
        cell = img[y0 + cy : y1 - cy, x0 + cx : x1 - cx]
        if cell.mean() > 127:
            value |= 1 << k
    return value


def joint_trajectory(index: np.ndarray) -> np.ndarray:
    """(N, 6) degrees / gripper 0..100 inside the SO-101's range; joint 0 = index / 100."""
    t = np.asarray(index, dtype=np.float64)[:, None]
    q = RESET_POSE_DEG + 10.0 * np.sin(t * np.array([0.0, 0.05, 0.07, 0.03, 0.11, 0.13]))
    q[:, 0] = t[:, 0] / 100.0
    q[:, 5] = np.clip(q[:, 5], 0, 100)
    return q.astype(np.float32)


def write_dataset(
    root: Path,
    lengths: list[int],
    cameras: dict[str, tuple[int, int]] | None = None,
    fps: float = 10,
    codec: str = "av1",
    version: str = "v3.0",
    reward: bool = True,
    done: bool = True,
    complementary: bool = True,
    state_dim: int = 6,
    action_dim: int = 4,
    textured: bool = False,
    last_done: bool = True,
    video_files_size_in_mb: float = 200,
    progress=None,
) -> Path:
    """A LeRobot dataset of `len(lengths)` episodes; see the module docstring for the values.

    `cameras` maps a camera name to (height, width). `reward`: next.reward = 1 on each
    episode's last frame; `done`: next.done on the last frame (False there if not `last_done`).
    """
    cameras = {"front": (48, 64)} if cameras is None else cameras
    features = dataset_features(cameras, state_dim, action_dim, reward, done, complementary)
    textures = _textures(cameras) if textured else {}
    writer = LeRobotWriter(
        root,
        fps,
        features,
        robot_type="so101",
        codec=codec,
        version=version,
        video_files_size_in_mb=video_files_size_in_mb,
    )
    g = 0
    for length in lengths:
        q = joint_trajectory(np.arange(g, g + length))
        for i in range(length):
            frame: dict = {
                "observation.state": np.resize(q[i], state_dim).astype(np.float32),
                "action": np.array([np.sin(0.1 * g), np.cos(0.1 * g), 0.0, g % 3][:action_dim], np.float32),
            }
            frame.update(code_images(g, cameras, textures))
            frame.update(_label_columns(i, length, reward, done, last_done, complementary))
            writer.add_frame(frame, task="pick the cube")
            g += 1
            if progress is not None:
                progress(1)
        writer.save_episode()
    return writer.finalize()


def camera_features(cameras: dict[str, tuple[int, int]]) -> dict[str, dict]:
    """The video features of cameras given as name -> (height, width)."""
    return {
        f"observation.images.{cam}": {"dtype": "video", "shape": [h, w, 3], "names": None}
        for cam, (h, w) in cameras.items()
    }


def dataset_features(
    cameras: dict[str, tuple[int, int]],
    state_dim: int,
    action_dim: int,
    reward: bool,
    done: bool,
    complementary: bool,
) -> dict[str, dict]:
    """The features `write_dataset` writes: state, action, cameras and the chosen label columns."""
    features: dict[str, dict] = {
        "observation.state": {"dtype": "float32", "shape": [state_dim], "names": None},
        "action": {"dtype": "float32", "shape": [action_dim], "names": None},
        **camera_features(cameras),
    }
    if reward:
        features[REWARD] = {"dtype": "float32", "shape": [1], "names": None}
    if done:
        features[DONE] = {"dtype": "bool", "shape": [1], "names": None}
    if complementary:
        features[INTERVENTION] = {"dtype": "bool", "shape": [1], "names": None}
        features[PENALTY] = {"dtype": "float32", "shape": [1], "names": None}
    return features


def _textures(cameras: dict[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    """Blurred noise twice each camera's width; a window sliding over it frame by frame makes the
    video decode at about the speed of camera footage (see `code_image`)."""
    rng = np.random.default_rng(0)
    textures = {}
    for cam, (h, w) in cameras.items():
        noise = (rng.random((h, 2 * w, 3)) * 255).astype(np.uint8)
        textures[cam] = cv2.GaussianBlur(noise, (0, 0), 3)
    return textures


def code_images(
    g: int, cameras: dict[str, tuple[int, int]], textures: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Every camera's image of global frame `g` (`code_image`), over its sliding texture if any."""
    images = {}
    for cam, (h, w) in cameras.items():
        tex = None
        if textures:
            shift = (g * 4) % w
            tex = textures[cam][:, shift : shift + w]
        images[f"observation.images.{cam}"] = code_image(g, h, w, tex)
    return images


def _label_columns(
    i: int, length: int, reward: bool, done: bool, last_done: bool, complementary: bool
) -> dict:
    """Frame i's label columns: success reward and done on the last frame, an intervention every
    5th frame and a penalty every 7th."""
    last = i == length - 1
    frame: dict = {}
    if reward:
        frame[REWARD] = np.float32(1.0 if last else 0.0)
    if done:
        frame[DONE] = bool(last and last_done)
    if complementary:
        frame[INTERVENTION] = bool(i % 5 == 0)
        frame[PENALTY] = np.float32(-0.02 if i % 7 == 3 else 0.0)
    return frame


def teleop_motion(n: int, roll_peak: float = 60.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(present, target): (n, 6) follower joints and the leader's targets, degrees / gripper 0..100.

    The follower lags the leader by about a step; the gripper target closes 20 further than
    the jaws get (an object in the way), and a few fast moves outrun one control step.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n + 1, dtype=np.float64)[:, None]
    amp = np.array([20.0, 15.0, 15.0, 15.0, roll_peak, 45.0])
    base = np.array([0.0, -20.0, 30.0, 40.0, 0.0, 50.0])
    q = base + amp * np.sin(t * np.array([0.05, 0.07, 0.09, 0.04, 0.06, 0.08]) + rng.uniform(0, 1, 6))
    q[:, :5] += rng.normal(0, 0.05, (n + 1, 5))
    present, nxt = q[:-1], q[1:]
    target = nxt + 0.5 * (nxt - present)
    closing = nxt[:, 5] < present[:, 5]
    target[closing, 5] = np.clip(target[closing, 5] - 20.0, 0.0, 100.0)
    target[::17, 1] += 12.0  # a quick jerk now and then: more than one step allows
    return present.astype(np.float32), target.astype(np.float32)


def write_teleop_dataset(
    root: Path,
    lengths: list[int],
    cameras: dict[str, tuple[int, int]] | None = None,
    fps: float = 30,
    units: str = "degrees",
    calibration: Path | None = None,
    roll_peak: float = 110.0,
    codec: str = "av1",
) -> Path:
    """A LeRobot v3.0 teleop dataset as an so101_follower records it (see the module docstring).

    units "lerobot_range" stores LeRobot's default units, converted with `calibration`.
    """
    cameras = {"wrist": (48, 64)} if cameras is None else cameras
    names = [f"{j}.pos" for j in JOINT_NAMES]
    features: dict[str, dict] = {
        "action": {"dtype": "float32", "shape": [6], "names": names},
        "observation.state": {"dtype": "float32", "shape": [6], "names": names},
        **camera_features(cameras),
    }
    convert = None
    if units == "lerobot_range":
        convert = Normalizer(load_calibration(calibration, JOINT_NAMES), JOINT_NAMES).to_lerobot_range
    writer = LeRobotWriter(root, fps, features, robot_type="so101_follower", codec=codec)
    g = 0
    for e, length in enumerate(lengths):
        present, target = teleop_motion(length, roll_peak, seed=e)
        if convert is not None:
            present, target = convert(present), convert(target)
        for i in range(length):
            frame: dict = {"observation.state": present[i], "action": target[i], **code_images(g, cameras)}
            writer.add_frame(frame, task="pick the cube")
            g += 1
        writer.save_episode()
    return writer.finalize()
