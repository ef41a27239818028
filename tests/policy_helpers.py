"""Specs and batches for the policy tests (the real buffer produces the same Batch format)."""

from __future__ import annotations

import numpy as np
import torch

from hilserl_ray.config import PolicyConfig
from hilserl_ray.features import ACTION, IMAGE_PREFIX, STATE, Feature, FeatureSpec


def make_spec(
    state_dim: int = 3, cont: int = 1, gripper: bool = False, cameras: dict | None = None
) -> FeatureSpec:
    obs = {STATE: Feature(STATE, (state_dim,), "float32", "test")}
    for name, (h, w) in (cameras or {}).items():
        obs[IMAGE_PREFIX + name] = Feature(IMAGE_PREFIX + name, (h, w, 3), "uint8", "test")
    action = Feature(ACTION, (cont + (1 if gripper else 0),), "float32", "test")
    return FeatureSpec(obs, action, continuous_action_dim=cont, discrete_gripper=gripper)


def small_cfg(**kw) -> PolicyConfig:
    base = {"device": "cpu", "hidden_dims": [32, 32], "latent_dim": 32, "batch_size": 16}
    base.update(kw)
    return PolicyConfig(**base)


def random_obs(spec: FeatureSpec, b: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    out = {}
    for k, f in spec.observation.items():
        if f.is_image:
            out[k] = torch.randint(0, 256, (b, *f.shape), dtype=torch.uint8, generator=gen)
        else:
            out[k] = torch.randn((b, *f.shape), generator=gen)
    return out


def random_batch(spec: FeatureSpec, b: int = 16, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    action = torch.rand((b, spec.action.shape[0]), generator=gen) * 2 - 1
    if spec.discrete_gripper:
        action[:, -1] = torch.randint(0, 3, (b,), generator=gen).float()
    return {
        "observation": random_obs(spec, b, gen),
        "next_observation": random_obs(spec, b, gen),
        "action": action,
        "reward": torch.rand(b, generator=gen),
        "terminated": (torch.rand(b, generator=gen) < 0.2).float(),
        "discrete_penalty": torch.zeros(b),
        "is_intervention": torch.zeros(b),
    }


def numpy_obs(spec: FeatureSpec, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        k: rng.integers(0, 256, f.shape, dtype=np.uint8)
        if f.is_image
        else rng.normal(size=f.shape).astype(np.float32)
        for k, f in spec.observation.items()
    }
