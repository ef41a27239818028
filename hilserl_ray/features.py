"""Feature specs: the names, shapes and dtypes that the pipeline produces.

One `FeatureSpec` is computed from the config by `envs.pipeline.pipeline_spec`; the env checks
its observations against it, the policy sizes its encoders from it, the dataset conversion
maps dataset columns onto it and the offline-buffer cache is keyed by its fingerprint.
Images are (H, W, 3) uint8 everywhere outside the network (the policy permutes to CHW).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np

STATE = "observation.state"
ENV_STATE = "observation.environment_state"  # privileged task state (object, goal), sim only
IMAGE_PREFIX = "observation.images."
ACTION = "action"


@dataclass(frozen=True)
class Feature:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name: "float32", "uint8"
    step: str  # the pipeline step that gave the feature its final shape
    names: tuple[str, ...] | None = None  # element names of a vector feature

    @property
    def is_image(self) -> bool:
        return self.name.startswith(IMAGE_PREFIX)

    def check(self, value: np.ndarray) -> None:
        """Raise a ValueError naming the feature if `value` does not match the spec."""
        if tuple(value.shape) != self.shape or value.dtype != np.dtype(self.dtype):
            raise ValueError(
                f"feature '{self.name}' (from pipeline step '{self.step}'): expected shape {self.shape} "
                f"{self.dtype}, got {tuple(value.shape)} {value.dtype}"
            )


@dataclass(frozen=True)
class FeatureSpec:
    """Observation features, the action feature and the parameters that shape their values."""

    observation: dict[str, Feature]
    action: Feature
    continuous_action_dim: int  # the first dims of `action`; a discrete gripper index follows if any
    discrete_gripper: bool
    params: dict = field(default_factory=dict)  # config values that change feature *values*

    @property
    def image_keys(self) -> list[str]:
        return [k for k, f in self.observation.items() if f.is_image]

    @property
    def state_dim(self) -> int:
        return self.observation[STATE].shape[0] if STATE in self.observation else 0

    def check_observation(self, obs: dict[str, np.ndarray]) -> None:
        missing = sorted(set(self.observation) - set(obs))
        extra = sorted(set(obs) - set(self.observation))
        if missing or extra:
            raise ValueError(
                f"observation keys differ from the pipeline spec: missing {missing}, unexpected {extra}"
            )
        for k, f in self.observation.items():
            f.check(np.asarray(obs[k]))

    def to_dict(self) -> dict:
        return {
            "observation": {k: _feature_dict(f) for k, f in self.observation.items()},
            "action": _feature_dict(self.action),
            "continuous_action_dim": self.continuous_action_dim,
            "discrete_gripper": self.discrete_gripper,
            "params": self.params,
        }

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        return cls(
            observation={k: _feature(v) for k, v in d["observation"].items()},
            action=_feature(d["action"]),
            continuous_action_dim=d["continuous_action_dim"],
            discrete_gripper=d["discrete_gripper"],
            params=d.get("params", {}),
        )

    def fingerprint(self) -> str:
        """Stable hash of names, shapes, dtypes and value-shaping params (cache keys use it)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def table(self) -> str:
        rows = [("feature", "shape", "dtype", "produced by")]
        for f in [*self.observation.values(), self.action]:
            rows.append((f.name, str(f.shape), f.dtype, f.step))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


def _feature_dict(f: Feature) -> dict:
    d = asdict(f)
    d["shape"] = list(f.shape)
    d["names"] = list(f.names) if f.names else None
    return d


def _feature(d: dict) -> Feature:
    return Feature(
        d["name"], tuple(d["shape"]), d["dtype"], d["step"], tuple(d["names"]) if d.get("names") else None
    )
