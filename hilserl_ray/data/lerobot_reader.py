"""Read a local LeRobot dataset (v3.0 or v2.1) without lerobot: metadata, columns, video frames.

Frames are exposed in one canonical order: episodes by episode_index, frames by frame_index
("rows" below). Numeric columns come from parquet via pyarrow; camera frames from the mp4s,
each file decoded once front to back, frame time t matched to the episode whose span holds
it and to frame `round((t - from_timestamp) * fps)` of that episode.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hilserl_ray.data.layout import DEFAULT_FEATURES, V21_DATA_PATH, V21_VIDEO_PATH
from hilserl_ray.data.video import PipelineImages, decode_frames, frame_times
from hilserl_ray.envs.transforms import process_image
from hilserl_ray.errors import UserError

TIME_TOLERANCE_S = 1e-4  # LeRobot's own tolerance between a frame's time and its video frame
COPY_AGAIN = (
    "copy the whole dataset directory again from where it was recorded (a copy that stopped cuts files)"
)
VERSIONS = ("v3.0", "v2.1")  # the codebase_version values read here
# LeRobot's own upgrade of a v2.0 dataset to v2.1 (per-episode stats), in its releases that write v2.1
V20_UPGRADE = "python -m lerobot.datasets.v21.convert_dataset_v20_to_v21 --repo-id=<repo>"


class DatasetError(UserError, ValueError):
    """A dataset that cannot be read as LeRobot v2.1/v3.0; the message names the file and the fix."""


@dataclass
class Episode:
    index: int  # episode_index in the dataset
    length: int
    start: int  # first row of this episode in the reader's row order
    tasks: list[str] = field(default_factory=list)
    videos: dict[str, tuple[Path, float]] = field(default_factory=dict)  # key -> (mp4, from_timestamp)
    data_file: tuple[int, int] = (0, 0)  # v3.0: (chunk_index, file_index) of its parquet rows


class LeRobotReader:
    """A LeRobot dataset directory: `info`, `episodes`, `read(columns)`, `frames(key)`."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise DatasetError(f"{self.root}: no meta/info.json; expected a LeRobot dataset directory")
        try:
            self.info = json.loads(info_path.read_text())
        except json.JSONDecodeError as e:
            raise DatasetError(f"{info_path}: not valid JSON ({e})") from None
        problem = info_problem(self.info)
        if problem is not None:
            raise DatasetError(f"{info_path}: {problem}")
        self.version = str(self.info.get("codebase_version", ""))
        if self.version not in VERSIONS:
            raise DatasetError(
                f"{info_path}: codebase_version {self.version!r} is not supported; {_upgrade(self.version)}"
            )
        try:
            self.fps = float(self.info["fps"])
            self.features: dict[str, dict] = dict(self.info["features"])
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(
                f"{info_path}: no usable 'fps' and 'features' ({type(e).__name__}: {e})"
            ) from None
        self.video_keys = [k for k, f in self.features.items() if f.get("dtype") == "video"]
        self.image_keys = [k for k, f in self.features.items() if f.get("dtype") == "image"]
        self.episodes = self._load_episodes_v3() if self.version == "v3.0" else self._load_episodes_v2()
        # an episode without frames has nothing to read (and no final observation to keep)
        self.episodes = sorted((e for e in self.episodes if e.length > 0), key=lambda e: e.index)
        start = 0
        for ep in self.episodes:
            ep.start = start
            start += ep.length
        self.num_frames = start
        self._order: np.ndarray | None = None

    @property
    def keys(self) -> list[str]:
        """The dataset's own features (without the built-in index columns)."""
        return [k for k in self.features if k not in DEFAULT_FEATURES]

    # ------------------------------------------------------------------------ metadata
    def _load_episodes_v3(self) -> list[Episode]:
        paths = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not paths:
            raise DatasetError(
                f"{self.root}/meta/episodes: no episodes parquet files (a v3.0 dataset needs them)"
            )
        cols = ["episode_index", "length", "data/chunk_index", "data/file_index"]
        vcols = [
            f"videos/{k}/{c}"
            for k in self.video_keys
            for c in ("chunk_index", "file_index", "from_timestamp")
        ]
        tables = []
        for p in paths:
            with _readable(p):
                schema = pq.read_schema(p)
                missing = [c for c in cols + vcols if c not in schema.names]
                if missing:
                    raise DatasetError(f"{p}: missing episode columns {missing}")
                extra = ["tasks"] if "tasks" in schema.names else []
                tables.append(pq.read_table(p, columns=cols + vcols + extra))
        t = pa.concat_tables(tables).to_pydict()
        template = self.info.get("video_path") or ""
        episodes = []
        for i in range(len(t["episode_index"])):
            videos = {}
            for k in self.video_keys:
                rel = template.format(
                    video_key=k,
                    chunk_index=t[f"videos/{k}/chunk_index"][i],
                    file_index=t[f"videos/{k}/file_index"][i],
                )
                videos[k] = (self.root / rel, float(t[f"videos/{k}/from_timestamp"][i]))
            episodes.append(
                Episode(
                    index=int(t["episode_index"][i]),
                    length=int(t["length"][i]),
                    start=0,
                    tasks=list(t["tasks"][i] or []) if "tasks" in t else [],
                    videos=videos,
                    data_file=(int(t["data/chunk_index"][i]), int(t["data/file_index"][i])),
                )
            )
        return episodes

    def _load_episodes_v2(self) -> list[Episode]:
        path = self.root / "meta" / "episodes.jsonl"
        if not path.is_file():
            raise DatasetError(f"{path}: missing (a v2.1 dataset lists its episodes there)")
        chunks_size = int(self.info.get("chunks_size", 1000))
        vtemplate = self.info.get("video_path") or V21_VIDEO_PATH
        episodes = []
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                idx = int(row["episode_index"])
                int(row["length"])
            except (ValueError, KeyError, TypeError) as e:
                raise DatasetError(
                    f"{path}: a line is not an episode record ({type(e).__name__}: {e})"
                ) from None
            videos = {
                k: (
                    self.root
                    / vtemplate.format(episode_chunk=idx // chunks_size, episode_index=idx, video_key=k),
                    0.0,
                )
                for k in self.video_keys
            }
            episodes.append(Episode(idx, int(row["length"]), 0, list(row.get("tasks", [])), videos))
        return episodes

    def data_file(self, e: Episode) -> Path:
        """The parquet file that holds episode `e`'s rows."""
        if self.version == "v3.0":
            c, f = e.data_file
            return self.root / self.info.get("data_path").format(chunk_index=c, file_index=f)
        chunks_size = int(self.info.get("chunks_size", 1000))
        template = self.info.get("data_path") or V21_DATA_PATH
        return self.root / template.format(episode_chunk=e.index // chunks_size, episode_index=e.index)

    def data_files(self) -> list[Path]:
        if self.version == "v3.0":
            first: dict[tuple[int, int], Episode] = {}
            for e in self.episodes:
                first.setdefault(e.data_file, e)
            return [self.data_file(first[k]) for k in sorted(first)]
        return [self.data_file(e) for e in self.episodes]

    def files(self) -> list[Path]:
        """Every file the dataset's content depends on (for cache fingerprints)."""
        meta = sorted(p for p in (self.root / "meta").rglob("*") if p.is_file())
        videos = sorted({path for e in self.episodes for path, _ in e.videos.values()})
        return meta + self.data_files() + videos

    # ------------------------------------------------------------------------- columns
    def read(self, columns: list[str]) -> dict[str, np.ndarray]:
        """Columns as numpy arrays (rows, *shape) in row order (episode, then frame)."""
        for c in columns:
            if c not in self.features:
                raise DatasetError(f"{self.root}: no feature {c!r}; the dataset has {self.keys}")
        order = self._row_order()
        cols = self._columns(columns)
        return {c: _to_numpy(cols[c], self.features[c], c)[order] for c in columns}

    def _columns(self, names: list[str]) -> dict[str, pa.Array]:
        """Whole columns in parquet order (data files in order), each file read once per call."""
        if not hasattr(self, "_column_cache"):
            self._column_cache: dict[str, pa.Array] = {}
        need = [c for c in dict.fromkeys(names) if c not in self._column_cache]
        if need:
            parts: dict[str, list[pa.Array]] = {c: [] for c in need}
            for p in self.data_files():
                if not p.is_file():
                    raise DatasetError(f"data file {p} is missing (listed by the episodes metadata)")
                with _readable(p):
                    missing = [c for c in need if c not in pq.read_schema(p).names]
                    if missing:
                        raise DatasetError(
                            f"data file {p} has no columns {missing}, though meta/info.json lists them"
                        )
                    t = pq.read_table(p, columns=need)
                for c in need:
                    _check_width(p, c, t.column(c), self.features[c])
                    parts[c].extend(t.column(c).chunks)
            for c in need:
                self._column_cache[c] = pa.concat_arrays(parts[c]) if parts[c] else pa.array([])
        return {c: self._column_cache[c] for c in names}

    def _row_order(self) -> np.ndarray:
        """Permutation from parquet order to row order; checks episodes against their metadata."""
        if self._order is not None:
            return self._order
        cols = self._columns(["episode_index", "frame_index"])
        ep = cols["episode_index"].to_numpy(zero_copy_only=False).astype(np.int64)
        fi = cols["frame_index"].to_numpy(zero_copy_only=False).astype(np.int64)
        known = np.array([e.index for e in self.episodes], dtype=np.int64)
        keep = np.isin(ep, known)
        idx = np.flatnonzero(keep)
        order = idx[np.lexsort((fi[idx], ep[idx]))]
        if len(order) != self.num_frames:
            raise DatasetError(
                f"{self.root}: the data files hold {len(order)} frames of the listed episodes, "
                f"the episodes metadata says {self.num_frames}"
            )
        eps, fis = ep[order], fi[order]
        for e in self.episodes:
            s = slice(e.start, e.start + e.length)
            if not (np.all(eps[s] == e.index) and np.array_equal(fis[s], np.arange(e.length))):
                raise DatasetError(
                    f"{self.root}: episode {e.index} should have frame_index 0..{e.length - 1} in its data rows"
                )
        self._order = order
        return order

    # -------------------------------------------------------------------------- frames
    def frames(
        self, key: str, size: tuple[int, int] | None = None, crop: tuple[int, int, int, int] | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (row, rgb uint8 image) for every frame of camera `key`; each video file decoded once.

        With `crop` (top, left, height, width) and/or `size` (height, width) the image is what
        the pipeline's `process_image` makes of the frame. Raises if a frame an episode needs
        is not in its video.
        """
        if key in self.image_keys:
            yield from self._image_frames(key, size, crop)
            return
        self.converter = convert = PipelineImages(crop, size)
        for path, match in self._video_files(key):
            convert.new_file()
            for t, frame in _checked_frames(path, key, self.features[key]):
                row = match.row(t)
                if row is not None:
                    yield row, convert(frame)
            match.check_complete()

    def check_frames(self, key: str) -> int:
        """What `frames(key)` would fail on, found without decoding the video: each file opened and
        its first frame decoded (missing, damaged, another size than meta/info.json), then every
        frame's time from the container's packets matched to the episodes (a cut file lacks its
        last frames). Returns the number of video files checked (0 for images in the parquet
        files, which only the conversion decodes)."""
        if key in self.image_keys:
            return 0
        files = self._video_files(key)
        for path, match in files:
            with contextlib.closing(_checked_frames(path, key, self.features[key])) as first:
                next(first, None)
            with _decodable(path, key):
                times = frame_times(path)
            for t in times:
                match.row(t)
            match.check_complete()
        return len(files)

    def _video_files(self, key: str) -> list[tuple[Path, _FileEpisodes]]:
        """Camera `key`'s video files, in order, each with the episodes whose frames it holds."""
        if key not in self.video_keys:
            raise DatasetError(
                f"{self.root}: {key!r} is not a camera; cameras are {self.video_keys + self.image_keys}"
            )
        by_file: dict[Path, list[Episode]] = {}
        for e in self.episodes:
            by_file.setdefault(e.videos[key][0], []).append(e)
        return [(path, _FileEpisodes(path, key, eps, self.fps)) for path, eps in sorted(by_file.items())]

    def _image_frames(self, key: str, size, crop) -> Iterator[tuple[int, np.ndarray]]:
        col = self._columns([key])[key]
        order = self._row_order()
        for row, src in enumerate(order):
            item = col[int(src)].as_py()
            data = item["bytes"] if isinstance(item, dict) else item
            img = cv2.cvtColor(
                cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
            )
            if size is not None or crop is not None:
                img = process_image(img, crop, size or img.shape[:2])
            yield row, img


def _upgrade(version: str) -> str:
    """How to get a dataset of `version` into one read here."""
    if version == "v2.0":
        return (
            f"LeRobot v3.0 and v2.1 datasets are read; upgrade this one to v2.1 with LeRobot's converter: "
            f"{V20_UPGRADE} (lerobot/common/datasets/v21/convert_dataset_v20_to_v21.py in older LeRobot)"
        )
    return "expected 'v3.0' or 'v2.1' (convert older datasets with lerobot's conversion script)"


def info_problem(info: object) -> str | None:
    """What makes a parsed meta/info.json other than LeRobot's layout (an object whose
    `features` maps each name to {dtype, shape, names}), with the fix; None when it is."""
    fix = "restore the meta/info.json LeRobot wrote (or record the dataset again)"
    if not isinstance(info, dict):
        return f"the top level is a {type(info).__name__}, not an object; {fix}"
    features = info.get("features")
    if not isinstance(features, dict):
        got = "missing" if features is None else f"a {type(features).__name__}"
        return (
            f"'features' is {got}; it must map each feature name to its {{dtype, shape, names}} "
            f"(an object, as LeRobot writes it); {fix}"
        )
    for name, f in features.items():
        if not isinstance(f, dict):
            return f"features[{name!r}] is a {type(f).__name__}, not an object {{dtype, shape, names}}; {fix}"
        shape = f.get("shape")
        if shape is not None and not (isinstance(shape, list) and all(isinstance(n, int) for n in shape)):
            return f"features[{name!r}].shape is {shape!r}, not a list of integers such as [6]; {fix}"
    return None


@contextlib.contextmanager
def _readable(path: Path):
    """A parquet file that pyarrow cannot read (truncated, not parquet) as a DatasetError naming it."""
    try:
        yield
    except (pa.ArrowException, OSError) as e:
        raise DatasetError(
            f"unreadable parquet ({' '.join(str(e).split())[:200]}); the file is truncated or damaged",
            where=str(path),
            fix=COPY_AGAIN,
        ) from None


class _FileEpisodes:
    """The episodes one video file holds: a frame's time -> its row, and the frames that never came.

    Frame time t belongs to the episode whose span holds it, as frame `round((t - from_timestamp)
    * fps)` of that episode; times must come in increasing order."""

    def __init__(self, path: Path, key: str, eps: list[Episode], fps: float):
        self.path, self.key, self.fps = path, key, fps
        self.spans = [(e.videos[key][1], e) for e in sorted(eps, key=lambda e: e.videos[key][1])]
        self.found = dict.fromkeys((e.index for _, e in self.spans), 0)
        self.j = 0

    def row(self, t: float) -> int | None:
        """The row of the frame at time `t`, or None for a frame outside every listed episode."""
        tol, spans = TIME_TOLERANCE_S, self.spans
        while self.j + 1 < len(spans) and t >= spans[self.j + 1][0] - tol:
            self.j += 1
        start, e = spans[self.j]
        rel = (t - start) * self.fps
        i = round(rel)
        if i < 0 or i >= e.length or abs(rel - i) / self.fps > tol:
            return None  # a frame outside every listed episode (e.g. an unsaved one)
        self.found[e.index] += 1
        return e.start + i

    def check_complete(self) -> None:
        """Every episode got each of its frames once."""
        short = [
            (e.index, self.found[e.index], e.length) for _, e in self.spans if self.found[e.index] != e.length
        ]
        if short:
            detail = ", ".join(f"episode {i}: {n} of {length}" for i, n, length in short)
            raise DatasetError(
                f"frames missing for {self.key} ({detail}); the video file is truncated or misaligned",
                where=str(self.path),
                fix=f"{COPY_AGAIN}; if the file is whole, its episodes' from_timestamp and length in meta/ "
                "disagree with it: record them again",
            )


def _checked_frames(path: Path, key: str, feature: dict) -> Iterator[tuple[float, object]]:
    """decode_frames, with a missing/damaged file and a frame size other than info.json's named.

    Crop boxes and camera sizes are in the raw image's pixels, so a video of another size than
    meta/info.json states would silently shift every crop."""
    want = image_hw(feature)
    first = True
    with _decodable(path, key):
        for t, frame in decode_frames(path):
            if first and want is not None and (frame.height, frame.width) != want:
                raise DatasetError(
                    f"{path}: frames are {frame.height}x{frame.width} (HxW), meta/info.json says {key} is "
                    f"{want[0]}x{want[1]}; fix info.json's shape or re-encode the video (crops are in raw pixels)"
                )
            first = False
            yield t, frame


@contextlib.contextmanager
def _decodable(path: Path, key: str):
    """A video file that PyAV cannot open or read (missing, cut, not a video) as a DatasetError naming it."""
    try:
        yield
    except DatasetError:
        raise
    except (FileNotFoundError, ValueError, av.error.FFmpegError) as e:
        raise DatasetError(
            f"cannot decode {key} ({' '.join(str(e).split())[:200]}); the video is missing or damaged",
            where=str(path),
            fix=COPY_AGAIN,
        ) from None


def image_hw(feature: dict) -> tuple[int, int] | None:
    """(height, width) of a camera feature as info.json states it ([h, w, c] or [c, h, w])."""
    shape = list(feature.get("shape") or [])
    names = list(feature.get("names") or [])
    if len(shape) != 3:
        return None
    if names[:1] in (["channel"], ["channels"]) or (shape[0] == 3 and shape[2] != 3):
        return int(shape[1]), int(shape[2])
    return int(shape[0]), int(shape[1])


def _check_width(path: Path, name: str, col: pa.ChunkedArray, feature: dict) -> None:
    """A vector column's rows hold the values meta/info.json's shape says (conversion and the
    networks size every input from info.json, so a shorter row would shift every value)."""
    shape = feature.get("shape") or []
    kind = col.type
    if len(shape) != 1 or not (
        pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    ):
        return
    if pa.types.is_fixed_size_list(kind):
        sizes = {kind.list_size}
    else:
        lengths = pc.list_value_length(col).drop_null().to_numpy(zero_copy_only=False)
        sizes = set(np.unique(lengths).tolist())
    want = int(shape[0])
    wrong = sorted(int(n) for n in sizes if n != want)
    if wrong:
        got = " to ".join(map(str, dict.fromkeys([wrong[0], wrong[-1]])))
        raise DatasetError(
            f"{path}: {name!r} rows hold {got} values, meta/info.json says {want} (shape {list(shape)}); "
            f"the data and meta/info.json must agree: record the dataset again, or set features[{name!r}].shape "
            "in meta/info.json to what was recorded"
        )


def _to_numpy(col: pa.Array, feature: dict, name: str) -> np.ndarray:
    shape = tuple(feature.get("shape") or (1,))
    if (
        pa.types.is_list(col.type)
        or pa.types.is_fixed_size_list(col.type)
        or pa.types.is_large_list(col.type)
    ):
        if col.null_count:
            raise DatasetError(f"column {name!r} has {col.null_count} empty rows")
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths.min() != lengths.max()):
            raise DatasetError(
                f"column {name!r}: rows of different lengths ({lengths.min()}..{lengths.max()})"
            )
        flat = col.flatten().to_numpy(zero_copy_only=False)
        width = int(lengths[0]) if len(lengths) else int(np.prod(shape))
        return flat.reshape(len(col), width)
    arr = col.to_numpy(zero_copy_only=False)
    return arr if shape in ((1,), ()) else arr.reshape(len(col), *shape)
