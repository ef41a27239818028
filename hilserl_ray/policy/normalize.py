"""Input normalization: user stats -> (shift, scale) buffers stored with the weights.

Stats arrive per feature as {"mean", "std"} or {"min", "max"} (LeRobot dataset stats have both,
plus extra keys that are ignored). Image stats are in 0..1 pixel units, per channel (shape (3,),
(3, 1, 1) or (1, 1, 3)), as LeRobot computes them. A feature is normalized as
`(x - shift) * scale`; images are uint8 0..255, so their shift/scale absorb the /255.

Without stats, defaults come from the spec: images /255 (ImageNet mean/std for a pretrained
backbone) and `observation.state` elements by their pipeline names (degrees, gripper 0..100,
metres, radians), so the arm's raw units never reach a tanh unscaled. A vector feature whose
names the spec does not know (a gym env's `agent_pos.3`, whose space is unbounded) gets its
range from the demos instead (`data_stats`): left raw, a block's 1 cm move is 0.01 next to
joint velocities of several units, and the critic cannot tell where the block is.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from hilserl_ray.features import Feature, FeatureSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_EPS = 1e-6

# (name suffix or full name) -> (min, max) in the pipeline's units; first match wins.
_STATE_RANGES: list[tuple[str, tuple[float, float]]] = [
    ("gripper.pos", (0.0, 100.0)),  # 0 closed .. 100 open
    ("shoulder_pan.pos", (-110.0, 110.0)),  # degrees: the SO-101 joint ranges
    ("shoulder_lift.pos", (-100.0, 100.0)),
    ("elbow_flex.pos", (-97.0, 97.0)),
    ("wrist_flex.pos", (-95.0, 95.0)),
    ("wrist_roll.pos", (-157.0, 163.0)),
    (".pos", (-180.0, 180.0)),  # any other joint, degrees
    (".vel", (-100.0, 100.0)),  # degrees/s: 10 deg/step at 10 Hz
    ("ee.x", (0.0, 0.5)),  # metres, in the arm's base frame: what the SO-101 can reach
    ("ee.y", (-0.4, 0.4)),
    ("ee.z", (-0.05, 0.45)),
    ("object.x", (0.0, 0.5)),  # the sim's privileged target / cube position, same frame
    ("object.y", (-0.4, 0.4)),
    ("object.z", (-0.05, 0.45)),
    ("ee.roll", (-math.pi, math.pi)),  # radians
    ("ee.pitch", (-math.pi, math.pi)),
    ("ee.yaw", (-math.pi, math.pi)),
]


def _range_for(name: str) -> tuple[float, float] | None:
    for suffix, rng in _STATE_RANGES:
        if name == suffix or name.endswith(suffix):
            return rng
    return None


def has_known_range(feature: Feature) -> bool:
    """Whether every element of a vector feature has a range from its pipeline name."""
    return bool(feature.names) and all(_range_for(n) is not None for n in feature.names)


# An element that spans less than this in the data (a constant, such as a goal on the table) keeps
# its raw units around its value instead of being blown up by 2 / (max - min).
_MIN_DATA_SPAN = 1e-3


def data_stats(spec: FeatureSpec, datasets: list[dict[str, np.ndarray]]) -> dict[str, dict[str, list[float]]]:
    """{"min", "max"} over the rows of `datasets` (the offline demos, pipeline features) for each
    vector feature without a known range (`has_known_range`); {} when there are no rows."""
    out: dict[str, dict[str, list[float]]] = {}
    for key, f in spec.observation.items():
        if f.is_image or has_known_range(f):
            continue
        rows = [
            np.asarray(d[key], np.float64).reshape(-1, f.shape[0]) for d in datasets if len(d.get(key, ()))
        ]
        if not rows:
            continue
        x = np.concatenate(rows)
        lo, hi = x.min(axis=0), x.max(axis=0)
        flat = (hi - lo) < _MIN_DATA_SPAN
        mid = (hi + lo) / 2
        lo, hi = np.where(flat, mid - 1.0, lo), np.where(flat, mid + 1.0, hi)
        out[key] = {"min": lo.tolist(), "max": hi.tolist()}
    return out


def default_stats(spec: FeatureSpec, pretrained: bool = False) -> dict[str, dict[str, list[float]]]:
    """Stats for every observation feature from the spec alone (used when none are given)."""
    out: dict[str, dict[str, list[float]]] = {}
    for key, f in spec.observation.items():
        if f.is_image:
            mean, std = (IMAGENET_MEAN, IMAGENET_STD) if pretrained else ((0.0,) * 3, (1.0,) * 3)
            out[key] = {"mean": list(mean), "std": list(std)}
        elif has_known_range(f):
            ranges = [_range_for(n) for n in f.names]
            out[key] = {"min": [r[0] for r in ranges], "max": [r[1] for r in ranges]}
        else:  # any unknown element: keep raw units rather than guess (`data_stats` knows better)
            out[key] = {"mean": [0.0] * f.shape[0], "std": [1.0] * f.shape[0]}
    return out


def _as_vector(feature: Feature, key: str, value, expected: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 1 and expected > 1:
        arr = np.full(expected, float(arr.reshape(())))
    if arr.size != expected:
        raise ValueError(
            f"normalization stats for '{feature.name}': '{key}' has shape {arr.shape}, expected {expected} "
            f"values ({'one per RGB channel, in 0..1 units' if feature.is_image else f'one per element of {feature.shape}'}); "
            "recompute the stats for this feature spec"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"normalization stats for '{feature.name}': '{key}' has non-finite values {arr.tolist()}"
        )
    return arr.reshape(expected)


def resolve_stats(
    spec: FeatureSpec, stats: dict | None, pretrained: bool = False
) -> dict[str, dict[str, list[float]]]:
    """Validated stats for exactly the spec's observation features, as JSON-ready lists.

    Images prefer mean/std, vectors prefer min/max (LeRobot's SAC mapping); features missing from
    `stats` get the spec defaults; stats for features not in the spec (actions, rewards) are ignored.
    """
    defaults = default_stats(spec, pretrained)
    if stats is None:
        return defaults
    if not isinstance(stats, dict):
        raise TypeError(
            f"stats must be a dict feature -> {{'mean','std'}} or {{'min','max'}}, got {type(stats).__name__}"
        )
    out = {}
    for key, f in spec.observation.items():
        s = stats.get(key)
        if s is None:
            out[key] = defaults[key]
            continue
        n = 3 if f.is_image else f.shape[0]
        has_ms = "mean" in s and "std" in s
        has_mm = "min" in s and "max" in s
        if not (has_ms or has_mm):
            raise ValueError(
                f"normalization stats for '{key}': got keys {sorted(s)}, expected 'mean' and 'std' or 'min' and 'max'"
            )
        use_ms = has_ms if f.is_image else not has_mm
        if use_ms:
            mean, std = _as_vector(f, "mean", s["mean"], n), _as_vector(f, "std", s["std"], n)
            if np.any(std < 0):
                raise ValueError(f"normalization stats for '{key}': 'std' must be >= 0, got {std.tolist()}")
            out[key] = {"mean": mean.tolist(), "std": std.tolist()}
        else:
            lo, hi = _as_vector(f, "min", s["min"], n), _as_vector(f, "max", s["max"], n)
            if np.any(hi < lo):
                raise ValueError(
                    f"normalization stats for '{key}': 'max' < 'min' at {np.nonzero(hi < lo)[0].tolist()}"
                )
            out[key] = {"min": lo.tolist(), "max": hi.tolist()}
    return out


def shift_scale(feature: Feature, s: dict[str, list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(shift, scale) with `(x - shift) * scale`: mean/std -> standardize, min/max -> [-1, 1]."""
    if "mean" in s:
        shift = torch.tensor(s["mean"], dtype=torch.float64)
        scale = 1.0 / torch.tensor(s["std"], dtype=torch.float64).clamp_min(_EPS)
    else:
        lo, hi = torch.tensor(s["min"], dtype=torch.float64), torch.tensor(s["max"], dtype=torch.float64)
        shift = (hi + lo) / 2
        scale = 2.0 / (hi - lo).clamp_min(_EPS)
    if feature.is_image:  # raw pixels are 0..255, stats are 0..1; shapes broadcast over (B, 3, H, W)
        shift, scale = (shift * 255.0).view(1, 3, 1, 1), (scale / 255.0).view(1, 3, 1, 1)
    return shift.float(), scale.float()


class Normalizer(nn.Module):
    """Holds (shift, scale) buffers per feature so they travel with the weights."""

    def __init__(self, spec: FeatureSpec, stats: dict[str, dict[str, list[float]]]):
        super().__init__()
        self.keys = list(spec.observation)
        for i, key in enumerate(self.keys):
            shift, scale = shift_scale(spec.observation[key], stats[key])
            self.register_buffer(f"shift_{i}", shift)
            self.register_buffer(f"scale_{i}", scale)

    def image(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> normalized float (B, 3, H, W) in channels_last memory (what oneDNN likes)."""
        i = self.keys.index(key)
        x = x.permute(0, 3, 1, 2).float()
        return (x - getattr(self, f"shift_{i}")) * getattr(self, f"scale_{i}")

    def image_shift_scale(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        i = self.keys.index(key)
        return getattr(self, f"shift_{i}"), getattr(self, f"scale_{i}")

    def vector(self, key: str, x: torch.Tensor) -> torch.Tensor:
        i = self.keys.index(key)
        return (x.float() - getattr(self, f"shift_{i}")) * getattr(self, f"scale_{i}")
