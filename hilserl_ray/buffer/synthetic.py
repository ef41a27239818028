"""Synthetic chunks whose values name their own row, for tests and benchmarks.

Row `t` of episode `e` has state[0] = e, state[1] = t, every image pixel = (t % 256, e % 256, 7),
action[0] = t, reward = 1000 * e + t and discrete_penalty = -0.02 when t % 3 == 0, so any wrong pairing of an observation with its next
observation, action or reward is visible in a sampled batch.
"""

from __future__ import annotations

import numpy as np

from hilserl_ray.features import ACTION, STATE, FeatureSpec


def episodes_chunk(
    spec: FeatureSpec,
    lengths: list[int],
    first_episode_id: int = 0,
    intervention: np.ndarray | None = None,
    truncated: bool = False,
) -> dict[str, np.ndarray]:
    """Complete episodes: each `T` transition rows then its final `is_last` row (T+1 rows)."""
    eid = np.concatenate([np.full(t + 1, first_episode_id + i, np.int64) for i, t in enumerate(lengths)])
    step = np.concatenate([np.arange(t + 1) for t in lengths])
    last = np.concatenate([np.r_[np.zeros(t, bool), True] for t in lengths])
    end = np.concatenate(
        [np.r_[np.zeros(t - 1, bool), True, False] if t else np.zeros(1, bool) for t in lengths]
    )
    k = eid.size
    chunk: dict[str, np.ndarray] = {}
    for name, f in spec.observation.items():
        if f.is_image:
            img = np.empty((k, *f.shape), np.uint8)
            img[..., 0] = (step % 256)[:, None, None]
            img[..., 1] = (eid % 256)[:, None, None]
            img[..., 2] = 7
            chunk[name] = img
        else:
            v = np.zeros((k, *f.shape), np.float32)
            v[:, 0] = eid
            if f.shape[0] > 1:
                v[:, 1] = step
            chunk[name] = v
    action = np.zeros((k, *spec.action.shape), np.float32)
    action[:, 0] = np.where(last, 0, step)
    chunk[ACTION] = action
    chunk["reward"] = np.where(last, 0, 1000.0 * eid + step).astype(np.float32)
    chunk["discrete_penalty"] = np.where(~last & (step % 3 == 0), -0.02, 0.0).astype(np.float32)
    chunk["terminated"] = end & (not truncated)
    chunk["truncated"] = end & truncated
    chunk["is_intervention"] = (
        np.zeros(k, bool) if intervention is None else np.asarray(intervention, bool) & ~last
    )
    chunk["episode_id"] = eid
    chunk["is_last"] = last
    return chunk


def split_rows(chunk: dict[str, np.ndarray], sizes: list[int]) -> list[dict[str, np.ndarray]]:
    """Cut a chunk into consecutive pieces of the given row counts (as an actor would send it)."""
    bounds = np.cumsum([0, *sizes])
    if bounds[-1] != len(chunk["episode_id"]):
        raise ValueError(
            f"split_rows: sizes sum to {bounds[-1]}, the chunk has {len(chunk['episode_id'])} rows"
        )
    return [{k: v[a:b] for k, v in chunk.items()} for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def identity(batch: dict, key: str = STATE) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(episode, step) of the observations and next observations of a sampled batch."""
    o, n = batch["observation"][key].numpy(), batch["next_observation"][key].numpy()
    return o[:, 0].astype(int), o[:, 1].astype(int), n[:, 0].astype(int), n[:, 1].astype(int)
