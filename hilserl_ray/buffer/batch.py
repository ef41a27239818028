"""Batch assembly: one preallocated set of arrays per sample, filled in place, then torch views.

Each observation feature gets ONE (2B, ...) array: rows [0, B) are the observations, rows [B, 2B)
the next observations, so a batch costs one allocation, one `torch.from_numpy` and (on CUDA) one
host-to-device copy per feature. With CUDA the arrays live in pinned memory so that copy is async.
Several buffers (the online/offline mixer) fill disjoint row ranges of the same arrays.
"""

from __future__ import annotations

import numpy as np
import torch

from hilserl_ray.features import ACTION, FeatureSpec

# Batch scalars (all float32 in the batch) -> the stored field they come from.
BATCH_SCALARS = ("reward", "terminated", "discrete_penalty", "is_intervention")


def allocate(spec: FeatureSpec, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Host tensors for one batch (pinned when the batch goes to CUDA); fill them via `as_numpy`."""
    pin = device.type == "cuda"

    def empty(shape: tuple[int, ...], dtype: str) -> torch.Tensor:
        return torch.empty(shape, dtype=getattr(torch, dtype), pin_memory=pin)

    out = {k: empty((2 * batch_size, *f.shape), f.dtype) for k, f in spec.observation.items()}
    out[ACTION] = empty((batch_size, *spec.action.shape), "float32")
    for k in BATCH_SCALARS:
        out[k] = empty((batch_size,), "float32")
    return out


def as_numpy(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Numpy views of the host tensors, for `ReplayBuffer.fill` (np.take writes into them)."""
    return {k: t.numpy() for k, t in tensors.items()}


def to_batch(spec: FeatureSpec, host: dict[str, torch.Tensor], batch_size: int, device: torch.device) -> dict:
    """The Batch dict: views of the host tensors on CPU, one async copy per field to CUDA.

    The copies start from the pinned tensors themselves, so the caching host allocator keeps each
    block until its copy has finished.
    """

    def move(t: torch.Tensor) -> torch.Tensor:
        return t.to(device, non_blocking=True) if device.type != "cpu" else t

    obs, nxt = {}, {}
    for k in spec.observation:
        t = move(host[k])
        obs[k], nxt[k] = t[:batch_size], t[batch_size:]
    batch = {"observation": obs, "next_observation": nxt, ACTION: move(host[ACTION])}
    for k in BATCH_SCALARS:
        batch[k] = move(host[k])
    return batch
