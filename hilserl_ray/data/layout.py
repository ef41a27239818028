"""LeRobot dataset layout constants and the parquet column types (v3.0 and v2.1)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

V30_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V30_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
V30_EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V21_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V21_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"

DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": (1,), "names": None},
    "frame_index": {"dtype": "int64", "shape": (1,), "names": None},
    "episode_index": {"dtype": "int64", "shape": (1,), "names": None},
    "index": {"dtype": "int64", "shape": (1,), "names": None},
    "task_index": {"dtype": "int64", "shape": (1,), "names": None},
}


def arrow_type(feature: dict) -> pa.DataType:
    """Shape (1,) -> a scalar column; (n,) -> a fixed-size list (what LeRobot's HF features expect)."""
    dtype = pa.from_numpy_dtype(np.dtype(feature["dtype"]))
    shape = tuple(feature["shape"])
    if shape in ((1,), ()):
        return dtype
    if len(shape) != 1:
        raise ValueError(f"numeric features must be 1-D; got shape {shape}")
    return pa.list_(dtype, shape[0])


def tasks_table(tasks: dict[str, int]) -> pa.Table:
    """meta/tasks.parquet as pandas writes it: the task string is the (named) index, as lerobot reads it."""
    names = sorted(tasks, key=tasks.get)
    table = pa.table(
        {"task_index": pa.array([tasks[t] for t in names], pa.int64()), "task": pa.array(names, pa.string())}
    )
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": "task",
                "field_name": "task",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
