"""Write episodes as a LeRobot dataset (v3.0 by default, v2.1 on request) that lerobot itself loads.

Frames stream straight into the video encoders (one open file per camera; episodes are
appended back to back, so an episode's `from_timestamp` is the file's duration when it
started) and into one parquet row group per episode. Nothing but the current episode's
numeric columns is held in memory. `finalize()` closes the files and writes the metadata
(info.json, stats.json, tasks, episodes); a dataset is only complete after it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hilserl_ray.data.layout import (
    DEFAULT_FEATURES,
    V21_DATA_PATH,
    V21_VIDEO_PATH,
    V30_DATA_PATH,
    V30_EPISODES_PATH,
    V30_VIDEO_PATH,
    arrow_type,
    tasks_table,
)
from hilserl_ray.data.video import VideoEncoder, video_info

IMAGE_STATS_STRIDE = 10  # image stats from every 10th frame, at 1/8 resolution: cheap and close enough


class LeRobotWriter:
    """Record frames -> episodes -> a LeRobot dataset directory.

    `features` are the dataset's own features (LeRobot form: {key: {dtype, shape, names}}),
    without the built-ins (timestamp, frame_index, episode_index, index, task_index); image
    features use dtype "video" and shape (height, width, 3).
    """

    def __init__(
        self,
        root: Path,
        fps: float,
        features: dict[str, dict],
        robot_type: str | None = None,
        codec: str = "av1",
        version: str = "v3.0",
        chunks_size: int = 1000,
        data_files_size_in_mb: float = 100,
        video_files_size_in_mb: float = 200,
    ):
        if version not in ("v3.0", "v2.1"):
            raise ValueError(f"dataset version {version!r}: expected 'v3.0' or 'v2.1'")
        self.root = Path(root)
        if (self.root / "meta" / "info.json").exists():
            raise FileExistsError(f"{self.root} already holds a dataset; choose a new --out directory")
        bad = [k for k in features if k in DEFAULT_FEATURES or "/" in k]
        if bad:
            raise ValueError(f"feature names {bad} are reserved or contain '/'")
        self.fps = fps
        self.version = version
        self.codec = codec
        self.robot_type = robot_type
        self.chunks_size = chunks_size
        self.data_mb, self.video_mb = data_files_size_in_mb, video_files_size_in_mb
        self.features = {k: {**v, "shape": list(v["shape"])} for k, v in features.items()}
        self.video_keys = [k for k, f in features.items() if f["dtype"] == "video"]
        self.numeric_keys = [k for k, f in features.items() if f["dtype"] != "video"]
        self.tasks: dict[str, int] = {}
        self.episodes: list[dict] = []
        self.total_frames = 0
        self._buf: dict[str, list] = {}
        self._img_stats: dict[str, list[np.ndarray]] = {}
        self._task: str | None = None
        self._count = 0
        self._encoders: dict[str, VideoEncoder] = {}
        self._video_file: dict[str, tuple[int, int]] = {}
        self._video_infos: dict[str, dict] = {}
        self._data_writer: pq.ParquetWriter | None = None
        self._data_file = (0, 0)
        self._data_file_rows = 0
        self._schema = pa.schema(
            [(k, arrow_type(f)) for k, f in self.features.items() if f["dtype"] != "video"]
            + [(k, arrow_type(f)) for k, f in DEFAULT_FEATURES.items()]
        )
        self._finalized = False

    # ------------------------------------------------------------------------------ frames
    def add_frame(self, frame: dict[str, np.ndarray], task: str = "") -> None:
        """One time step: every feature of `features`, numeric as arrays, images (H, W, 3) uint8."""
        missing = sorted(set(self.features) - set(frame))
        extra = sorted(set(frame) - set(self.features))
        if missing or extra:
            raise ValueError(
                f"frame keys differ from the dataset features: missing {missing}, unexpected {extra}"
            )
        values = {}
        for key in self.numeric_keys:
            f = self.features[key]
            value = np.asarray(frame[key], dtype=f["dtype"]).reshape(-1)
            if value.size != math.prod(f["shape"]):
                raise ValueError(
                    f"feature '{key}': expected shape {tuple(f['shape'])}, got {np.shape(frame[key])}"
                )
            values[key] = value
        for key in self.video_keys:
            img = np.asarray(frame[key])
            h, w, _ = self.features[key]["shape"]
            if img.shape != (h, w, 3) or img.dtype != np.uint8:
                raise ValueError(
                    f"feature '{key}': expected a ({h}, {w}, 3) uint8 image, got {img.shape} {img.dtype}"
                )
            values[key] = img
        if self._task is None:
            self._task = task
        for key in self.numeric_keys:
            self._buf.setdefault(key, []).append(values[key])
        for key in self.video_keys:
            self._encoder(key).add(values[key])
            if self._count % IMAGE_STATS_STRIDE == 0:
                self._img_stats.setdefault(key, []).append(values[key][::8, ::8].reshape(-1, 3))
        self._count += 1

    def _frames_in_episode(self) -> int:
        return self._count

    def _encoder(self, key: str) -> VideoEncoder:
        enc = self._encoders.get(key)
        if enc is None:
            chunk, file = self._video_file.get(key, (0, 0))
            ep = len(self.episodes)
            if self.version == "v3.0":
                rel = V30_VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)
            else:
                rel = V21_VIDEO_PATH.format(
                    video_key=key, episode_chunk=ep // self.chunks_size, episode_index=ep
                )
            h, w, _ = self.features[key]["shape"]
            enc = self._encoders[key] = VideoEncoder(self.root / rel, w, h, self.fps, self.codec)
            enc.chunk_file = (chunk, file)
        return enc

    # ---------------------------------------------------------------------------- episodes
    def save_episode(self) -> int:
        """Close the current episode; returns its index."""
        length = self._frames_in_episode()
        if length == 0:
            raise ValueError("save_episode() with no frames: call add_frame() first")
        ep = len(self.episodes)
        task = self._task or ""
        task_index = self.tasks.setdefault(task, len(self.tasks))
        start = self.total_frames
        cols = {k: np.stack(v) for k, v in self._buf.items()}
        cols["timestamp"] = (np.arange(length) / self.fps).astype(np.float32)
        cols["frame_index"] = np.arange(length, dtype=np.int64)
        cols["episode_index"] = np.full(length, ep, dtype=np.int64)
        cols["index"] = np.arange(start, start + length, dtype=np.int64)
        cols["task_index"] = np.full(length, task_index, dtype=np.int64)
        meta: dict = {"episode_index": ep, "tasks": [task], "length": length}
        meta.update(self._write_data(cols, ep))
        meta["dataset_from_index"], meta["dataset_to_index"] = start, start + length
        for key in self.video_keys:
            meta.update(self._close_video_episode(key, length))
        meta["meta/episodes/chunk_index"], meta["meta/episodes/file_index"] = 0, 0
        meta["stats"] = self._episode_stats(cols)
        self.episodes.append(meta)
        self.total_frames += length
        self._buf, self._img_stats, self._task, self._count = {}, {}, None, 0
        return ep

    def discard_episode(self) -> None:
        """Drop the current episode. v3.0: its frames stay in the video files, outside every episode's span."""
        if self.version == "v2.1" and self._count:
            for key in list(self._encoders):  # one file per episode: start it again
                enc = self._encoders.pop(key)
                enc.close()
                enc.path.unlink(missing_ok=True)
        self._buf, self._img_stats, self._task, self._count = {}, {}, None, 0

    def _write_data(self, cols: dict[str, np.ndarray], ep: int) -> dict:
        arrays = []
        for field in self._schema:
            v = cols[field.name]
            if pa.types.is_fixed_size_list(field.type):
                arrays.append(
                    pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), field.type.list_size)
                )
            else:
                arrays.append(pa.array(v.reshape(-1), type=field.type))
        table = pa.Table.from_arrays(arrays, schema=self._schema)
        if self.version == "v2.1":
            path = self.root / V21_DATA_PATH.format(episode_chunk=ep // self.chunks_size, episode_index=ep)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path)
            return {}
        if self._data_writer is not None and _size(self._data_path()) > self.data_mb * 1e6:
            self._data_writer.close()
            self._data_writer = None
            self._data_file = _next_file(*self._data_file, self.chunks_size)
        if self._data_writer is None:
            self._data_path().parent.mkdir(parents=True, exist_ok=True)
            self._data_writer = pq.ParquetWriter(self._data_path(), self._schema, compression="snappy")
        self._data_writer.write_table(table)
        return {"data/chunk_index": self._data_file[0], "data/file_index": self._data_file[1]}

    def _data_path(self) -> Path:
        return self.root / V30_DATA_PATH.format(chunk_index=self._data_file[0], file_index=self._data_file[1])

    def _close_video_episode(self, key: str, length: int) -> dict:
        enc = self._encoders[key]
        to_ts = enc.frames / float(enc.rate)
        from_ts = (enc.frames - length) / float(enc.rate)
        chunk, file = enc.chunk_file
        done = self.version == "v2.1" or _size(enc.path) > self.video_mb * 1e6
        if done:  # v2.1: one file per episode; v3.0: roll over to the next file
            enc.close()
            self._video_infos.setdefault(key, video_info(enc.path))
            del self._encoders[key]
            self._video_file[key] = _next_file(chunk, file, self.chunks_size)
        if self.version == "v2.1":
            return {}
        return {
            f"videos/{key}/chunk_index": chunk,
            f"videos/{key}/file_index": file,
            f"videos/{key}/from_timestamp": from_ts,
            f"videos/{key}/to_timestamp": to_ts,
        }

    def _episode_stats(self, cols: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
        stats = {}
        for key, v in cols.items():
            v = v.reshape(len(v), -1).astype(np.float64)
            stats[key] = _stats(v)
        for key, chunks in self._img_stats.items():
            px = np.concatenate(chunks).astype(np.float64) / 255.0
            stats[key] = {k: s.reshape(3, 1, 1) if k != "count" else s for k, s in _stats(px).items()}
            stats[key]["count"] = np.array([self._frames_in_episode()])
        return stats

    # ---------------------------------------------------------------------------- metadata
    def finalize(self) -> Path:
        """Close every file and write the metadata. Returns the dataset root."""
        if self._finalized:
            return self.root
        if self._frames_in_episode():
            raise RuntimeError(f"{self._frames_in_episode()} frames were added after the last save_episode()")
        for key in list(self._encoders):
            enc = self._encoders.pop(key)
            enc.close()
            self._video_infos.setdefault(key, video_info(enc.path))
        if self._data_writer is not None:
            self._data_writer.close()
        meta = self.root / "meta"
        meta.mkdir(parents=True, exist_ok=True)
        features = dict(self.features)
        for key in self.video_keys:
            features[key] = {**features[key], "names": ["height", "width", "channels"]}
            if key in self._video_infos:
                features[key]["info"] = self._video_infos[key]
        features.update({k: {**f, "shape": list(f["shape"])} for k, f in DEFAULT_FEATURES.items()})
        n = len(self.episodes)
        info = {
            "codebase_version": self.version,
            "robot_type": self.robot_type,
            "total_episodes": n,
            "total_frames": self.total_frames,
            "total_tasks": len(self.tasks),
            "chunks_size": self.chunks_size,
            "fps": int(self.fps) if float(self.fps).is_integer() else self.fps,
            "splits": {"train": f"0:{n}"},
            "features": features,
        }
        if self.version == "v3.0":
            info["data_files_size_in_mb"] = self.data_mb
            info["video_files_size_in_mb"] = self.video_mb
            info["data_path"] = V30_DATA_PATH
            info["video_path"] = V30_VIDEO_PATH if self.video_keys else None
            pq.write_table(tasks_table(self.tasks), meta / "tasks.parquet")
            self._write_episodes_parquet()
        else:
            info["total_chunks"] = max(1, math.ceil(n / self.chunks_size))
            info["total_videos"] = n * len(self.video_keys)
            info["data_path"] = V21_DATA_PATH
            info["video_path"] = V21_VIDEO_PATH if self.video_keys else None
            _write_jsonl(meta / "tasks.jsonl", [{"task_index": i, "task": t} for t, i in self.tasks.items()])
            _write_jsonl(
                meta / "episodes.jsonl",
                [{k: e[k] for k in ("episode_index", "tasks", "length")} for e in self.episodes],
            )
            _write_jsonl(
                meta / "episodes_stats.jsonl",
                [
                    {"episode_index": e["episode_index"], "stats": _jsonable(e["stats"])}
                    for e in self.episodes
                ],
            )
        (meta / "info.json").write_text(json.dumps(info, indent=4))
        (meta / "stats.json").write_text(json.dumps(_jsonable(self._aggregate_stats()), indent=4))
        self._finalized = True
        return self.root

    def _write_episodes_parquet(self) -> None:
        rows = []
        for e in self.episodes:
            row = {k: v for k, v in e.items() if k != "stats"}
            for feat, st in e["stats"].items():
                for name, value in st.items():
                    row[f"stats/{feat}/{name}"] = np.asarray(value).tolist()
            rows.append(row)
        columns = {k: [r[k] for r in rows] for k in rows[0]} if rows else {"episode_index": []}
        path = self.root / V30_EPISODES_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pydict(columns), path)

    def _aggregate_stats(self) -> dict:
        """Dataset stats from the per-episode ones (count-weighted mean, pooled variance)."""
        out: dict = {}
        if not self.episodes:
            return out
        for key in self.episodes[0]["stats"]:
            eps = [e["stats"][key] for e in self.episodes]
            w = np.array([float(np.asarray(s["count"]).reshape(-1)[0]) for s in eps])
            means = np.stack([s["mean"] for s in eps])
            var = np.stack([s["std"] ** 2 for s in eps])
            shape = (-1,) + (1,) * (means.ndim - 1)
            mean = (means * w.reshape(shape)).sum(0) / w.sum()
            pooled = ((var + (means - mean) ** 2) * w.reshape(shape)).sum(0) / w.sum()
            out[key] = {
                "min": np.min(np.stack([s["min"] for s in eps]), 0),
                "max": np.max(np.stack([s["max"] for s in eps]), 0),
                "mean": mean,
                "std": np.sqrt(pooled),
                "count": np.array([int(w.sum())]),
            }
        return out

    def __enter__(self) -> LeRobotWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.discard_episode()  # an interrupted episode is dropped from the metadata
        self.finalize()


def _stats(v: np.ndarray) -> dict[str, np.ndarray]:
    return {"min": v.min(0), "max": v.max(0), "mean": v.mean(0), "std": v.std(0), "count": np.array([len(v)])}


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0  # a muxer creates its file on the first packet


def _next_file(chunk: int, file: int, chunks_size: int) -> tuple[int, int]:
    return (chunk + 1, 0) if file + 1 >= chunks_size else (chunk, file + 1)


def _jsonable(d):
    if isinstance(d, dict):
        return {k: _jsonable(v) for k, v in d.items()}
    if isinstance(d, np.ndarray | np.generic):
        return d.tolist()
    return d


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
