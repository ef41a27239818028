"""RLPD / HIL-SERL batch mixing: a fixed share from the online buffer, the rest from the offline one.

Human interventions are the most informative online data, so a chunk goes to the online buffer
whole and its intervention transitions also to the offline (demo) buffer, as HIL-SERL does.
"""

from __future__ import annotations

import numpy as np

from hilserl_ray.buffer import batch as batching
from hilserl_ray.buffer.persist import spec_diff
from hilserl_ray.buffer.replay import ReplayBuffer


class MixedSampler:
    """Sample `online_ratio` of each batch online and the rest offline, into one set of arrays."""

    def __init__(self, online: ReplayBuffer, offline: ReplayBuffer, online_ratio: float = 0.5):
        if not 0.0 <= online_ratio <= 1.0:
            raise ValueError(f"online_ratio: expected a share in [0, 1], got {online_ratio}")
        if online.spec.fingerprint() != offline.spec.fingerprint():
            raise ValueError(
                "the online and offline buffers hold different features: "
                f"{spec_diff(offline.spec, online.spec, ('offline', 'online'))}; build both from pipeline_spec(cfg)"
            )
        if online.device != offline.device:
            raise ValueError(f"online buffer on {online.device}, offline on {offline.device}: use one device")
        self.online, self.offline, self.online_ratio = online, offline, float(online_ratio)

    def add_chunk(self, chunk: dict[str, np.ndarray]) -> tuple[int, int]:
        """All rows to the online buffer, intervention transitions to the offline one."""
        return self.online.add_chunk(chunk), self.offline.add_chunk(chunk, only_interventions=True)

    def __len__(self) -> int:
        return len(self.online) + len(self.offline)

    def split(self, batch_size: int) -> tuple[int, int]:
        """(online, offline) counts for a batch; all from one side while the other is empty."""
        has_on, has_off = len(self.online) > 0, len(self.offline) > 0
        if not (has_on or has_off):
            raise RuntimeError("both replay buffers are empty: nothing to sample yet")
        if not has_off:
            return batch_size, 0
        if not has_on:
            return 0, batch_size
        n_on = round(batch_size * self.online_ratio)
        return n_on, batch_size - n_on

    def sample(self, batch_size: int) -> dict:
        """One Batch: online rows first, then offline rows."""
        n_on, n_off = self.split(batch_size)
        spec, device = self.online.spec, self.online.device
        host = batching.allocate(spec, batch_size, device)
        out = batching.as_numpy(host)
        self.online.fill(out, 0, n_on, batch_size)
        self.offline.fill(out, n_on, n_off, batch_size)
        return batching.to_batch(spec, host, batch_size, device)
