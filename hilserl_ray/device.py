"""The one place a configured torch device name becomes a `torch.device`.

`auto` picks CUDA when torch sees a GPU, else the CPU. A CUDA device on a machine without one is
the user's to fix (the config, or where the learner runs), so it is a `UserError`; it is also a
`ValueError`, for code that builds an agent or a buffer directly.
"""

from __future__ import annotations

import torch

from hilserl_ray.errors import UserError


class DeviceError(UserError, ValueError):
    """A device this machine does not have."""


def resolve_device(device: str | torch.device | None, where: str = "policy.device") -> torch.device:
    """`device` ('auto', 'cpu', 'cuda', 'cuda:1', a torch.device; None = 'auto') as a torch.device.

    `where` names the setting it came from, for the error."""
    name = "auto" if device is None else str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(name)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"{name!r} requested, but CUDA is not available here; use device='cpu' (or 'auto')",
            where=where,
            fix=f"set {where} to cpu (or auto), or run the learner on a GPU node (learner.num_gpus)",
        )
    return resolved
