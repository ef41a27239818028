"""The Chunk format (K rows of transitions, what actors send) and its validation.

A bad chunk must fail loudly at the learner's door, naming the field, the expected and the actual
value: once a NaN reward or a float image is in the buffer, training silently degrades.
"""

from __future__ import annotations

import difflib

import numpy as np

from hilserl_ray.features import ACTION, FeatureSpec

# Per-row fields besides the observation features and the action: name -> numpy dtype.
SCALAR_FIELDS: dict[str, str] = {
    "reward": "float32",
    "discrete_penalty": "float32",
    "terminated": "bool",
    "truncated": "bool",
    "is_intervention": "bool",
    "episode_id": "int64",
    "is_last": "bool",
}


class ChunkError(ValueError):
    """A chunk that does not match the spec or the Chunk format."""


def chunk_layout(spec: FeatureSpec) -> dict[str, tuple[tuple[int, ...], str]]:
    """field -> (per-row shape, dtype) for every field a chunk must carry."""
    layout = {k: (f.shape, f.dtype) for k, f in spec.observation.items()}
    layout[ACTION] = (spec.action.shape, "float32")
    layout.update({k: ((), dt) for k, dt in SCALAR_FIELDS.items()})
    return layout


def validate_chunk(spec: FeatureSpec, chunk: dict[str, np.ndarray]) -> tuple[int, dict[str, np.ndarray]]:
    """Check `chunk` against the spec; return (K, arrays in the spec's dtypes).

    Float fields may arrive as another float type and are cast; images must be uint8 and flags bool,
    since a cast there would hide a bug upstream (0..1 float images, 0/1 int flags).
    """
    layout = chunk_layout(spec)
    missing = [k for k in layout if k not in chunk]
    extra = [k for k in chunk if k not in layout]
    if missing or extra:
        hints = []
        for k in extra:
            close = difflib.get_close_matches(k, missing or list(layout), n=1)
            hints.append(f"'{k}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise ChunkError(
            f"chunk keys differ from the spec: missing {missing}, unexpected [{', '.join(hints)}]; "
            f"a chunk carries exactly {list(layout)}"
        )
    lengths = {k: len(np.asarray(chunk[k])) if np.ndim(chunk[k]) else None for k in layout}
    k0 = lengths["episode_id"]
    if k0 is None or any(n != k0 for n in lengths.values()):
        raise ChunkError(f"every chunk field needs the same number of rows K; got {lengths}")
    out: dict[str, np.ndarray] = {}
    for name, (shape, dtype) in layout.items():
        a = np.asarray(chunk[name])
        want = (k0, *shape)
        if a.shape != want:
            raise ChunkError(f"chunk field '{name}': expected shape {want} (K={k0} rows), got {a.shape}")
        if a.dtype != np.dtype(dtype):
            castable = np.dtype(dtype).kind in "fi" and np.can_cast(a.dtype, dtype, "same_kind")
            if not castable:
                fix = {"uint8": "images are 0..255 uint8", "bool": "use .astype(bool)"}.get(dtype, "")
                raise ChunkError(
                    f"chunk field '{name}': expected dtype {dtype}, got {a.dtype}. {fix}".rstrip()
                )
            a = a.astype(dtype)
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            row = int(np.flatnonzero(~np.isfinite(a.reshape(k0, -1)).all(axis=1))[0])
            raise ChunkError(f"chunk field '{name}': non-finite value at row {row}: {a[row]}")
        out[name] = a
    if k0:
        eid, last = out["episode_id"], out["is_last"]
        after_last = np.flatnonzero((eid[1:] == eid[:-1]) & last[:-1])
        if after_last.size:
            r = int(after_last[0]) + 1
            raise ChunkError(
                f"chunk row {r}: episode {eid[r]} continues after its is_last row {r - 1}; "
                "an episode ends with exactly one is_last row (its final observation)"
            )
        run_ids = eid[np.r_[True, eid[1:] != eid[:-1]]]
        if np.unique(run_ids).size != run_ids.size:
            ids, counts = np.unique(run_ids, return_counts=True)
            raise ChunkError(
                f"chunk: episode {int(ids[counts > 1][0])} appears in separate runs of rows; a chunk holds "
                "each episode's rows contiguously, in time order"
            )
    return k0, out
