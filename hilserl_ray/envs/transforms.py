"""Pure numpy transforms shared by the online wrappers and the offline dataset conversion.

The same functions produce the pipeline's image and state features online (one step at a time)
and offline (a whole episode at once), so a policy trained on converted demos sees exactly what
the env gives it.
"""

from __future__ import annotations

import cv2
import numpy as np

from hilserl_ray.config import ProprioConfig
from hilserl_ray.envs.kinematics import Kinematics


def process_image(
    img: np.ndarray, crop: tuple[int, int, int, int] | None, size: tuple[int, int]
) -> np.ndarray:
    """Crop (top, left, height, width), then resize to size=(height, width) with INTER_AREA.

    img: (H, W, 3) or (N, H, W, 3) uint8. Returns uint8 of shape (..., size[0], size[1], 3).
    """
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim not in (3, 4) or img.shape[-1] != 3:
        raise ValueError(
            f"process_image: expected (H, W, 3) or (N, H, W, 3) uint8, got {img.shape} {img.dtype}"
        )
    if img.ndim == 4:
        out = np.empty((len(img), size[0], size[1], 3), np.uint8)
        for i, frame in enumerate(img):
            out[i] = process_image(frame, crop, size)
        return out
    if crop is not None:
        top, left, h, w = crop
        if top < 0 or left < 0 or h <= 0 or w <= 0 or top + h > img.shape[0] or left + w > img.shape[1]:
            raise ValueError(
                f"pipeline.image.crop: (top, left, height, width) = {tuple(crop)} is not inside the "
                f"{img.shape[0]}x{img.shape[1]} image"
            )
        img = img[top : top + h, left : left + w]
    if img.shape[:2] == tuple(size):
        return np.ascontiguousarray(img)
    return cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def proprio_state(
    joint_deg: np.ndarray,
    kin: Kinematics,
    dt: float,
    cfg: ProprioConfig,
    first_velocity: np.ndarray | None = None,
) -> np.ndarray:
    """Full proprioception for consecutive steps of ONE episode: (T, 6) joints -> (T, D) float32.

    Columns: joint positions (6), then joint velocities (6, finite difference over `dt`, state
    units per second; row 0 gets `first_velocity`, default 0) if `cfg.joint_velocity`, then ee
    xyz (3, m) and ee roll/pitch/yaw (3, rad) of site `gripperframe` if `cfg.ee_pose`.
    """
    q = np.asarray(joint_deg, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] != 6:
        raise ValueError(
            f"proprio_state: joint_deg must be (T, 6) joint positions in state units, got {q.shape}"
        )
    cols = [q]
    if cfg.joint_velocity:
        if dt <= 0:
            raise ValueError(f"proprio_state: dt must be > 0 seconds (1 / env.fps), got {dt}")
        vel = np.zeros_like(q)
        vel[1:] = np.diff(q, axis=0) / dt
        if first_velocity is not None:
            vel[0] = first_velocity
        cols.append(vel)
    if cfg.ee_pose:
        pos, euler = kin.fk(q)
        cols += [pos, euler]
    return np.concatenate(cols, axis=1).astype(np.float32)
