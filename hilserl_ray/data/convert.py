"""LeRobot dataset -> one offline Chunk, through the same observation pipeline as the live env.

Rows: each episode's N frames become N transition rows (frame i's observation, action,
reward, done) followed by one `is_last` row. LeRobot stores no observation after the last
frame, so the `is_last` row repeats the last frame's observation: a terminated last step
never bootstraps, and a truncated one bootstraps from that last observation.

The dataset is read as the raw robot reported it (`read_recorded`: joint positions, the first 6
state values; camera frames; the action) and passed through each pipeline step's offline
transform (`envs.pipeline.STEPS`, see `envs.offline`): velocities at the env's control dt and
the FK ee pose, crop and INTER_AREA resize while decoding, joint targets (what LeRobot teleop
records) or joint deltas made the pipeline's action by the function the live leader arm uses
(`formats` decides which, and the units). Actions in the pipeline's format are kept. Output
arrays come from `alloc`, so the cache writes straight into memory-mapped files and peak RAM
stays near the chunk itself. The command (`python -m hilserl_ray.data.convert`) is `hilserl_ray.convert`.
"""

from __future__ import annotations

import json
import logging
import os
import runpy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hilserl_ray.config import TrainConfig
from hilserl_ray.data import cache, formats, mapping
from hilserl_ray.data.lerobot_reader import DatasetError, LeRobotReader
from hilserl_ray.envs import pipeline
from hilserl_ray.envs.joint_actions import JointActionParams
from hilserl_ray.envs.kinematics import DEFAULT_MJCF, Kinematics
from hilserl_ray.envs.offline import ImagePlan, Recorded
from hilserl_ray.envs.pipeline import ENV_STATE, pipeline_spec
from hilserl_ray.features import ACTION, IMAGE_PREFIX, STATE, FeatureSpec
from hilserl_ray.gymenv.spaces import is_gym
from hilserl_ray.hardware.calibration import Normalizer, load_calibration
from hilserl_ray.so101 import JOINT_NAMES, NUM_JOINTS

log = logging.getLogger(__name__)

# Bump when the conversion's output changes for the same inputs: old caches then miss.
CONVERSION_VERSION = 2
CLIP_WARN_FRACTION = 0.05  # more clipped actions than this: the demos outrun the pipeline's step
# Offline episodes get ids far above any actor's, so ids stay unique in a mixed buffer.
OFFLINE_EPISODE_ID_BASE = 1 << 48

Alloc = Callable[[str, tuple[int, ...], str], np.ndarray]
OPTIONAL_COLUMNS = (mapping.REWARD, mapping.DONE, mapping.INTERVENTION, mapping.PENALTY, mapping.TRUNCATED)


def _ram_alloc(name: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return np.empty(shape, dtype=dtype)


def check_dataset(reader: LeRobotReader, cfg: TrainConfig) -> formats.Decision:
    """The action format / joint units decision; DatasetError listing every missing or
    mismatched feature (with the dataset's keys) and pointing to `inspect`."""
    problems = mapping.feature_problems(reader.info, cfg, reader.root, reader)
    if problems:
        lines = "\n".join(f"  - {line}" for line in mapping.problem_lines(problems, reader.root))
        raise DatasetError(f"dataset {reader.root} does not fit the pipeline:\n{lines}")
    decision, _ = formats.decide(reader.root, reader.info, cfg, *formats.state_and_action_keys(cfg), reader)
    return decision


@dataclass(frozen=True)
class RowLayout:
    """Where the dataset's frames land in the chunk: each episode's frames, then its is_last row."""

    lengths: np.ndarray  # frames per episode
    frame_row: np.ndarray  # dataset frame -> chunk row
    last_rows: np.ndarray  # each episode's is_last row

    @classmethod
    def of(cls, lengths: np.ndarray) -> RowLayout:
        ep_of_frame = np.repeat(np.arange(len(lengths)), lengths)
        frame_row = np.arange(int(lengths.sum())) + ep_of_frame
        return cls(lengths, frame_row, np.cumsum(lengths + 1) - 1)

    @property
    def rows(self) -> int:
        return len(self.frame_row) + len(self.lengths)

    @property
    def last_frame_rows(self) -> np.ndarray:
        """Each episode's last transition row."""
        return self.last_rows - 1

    def place(self, name: str, values: np.ndarray, dtype: str, alloc: Alloc) -> np.ndarray:
        """Per-frame values as a chunk field; the is_last row repeats its episode's last frame."""
        arr = alloc(name, (self.rows, *values.shape[1:]), dtype)
        arr[self.frame_row] = values
        arr[self.last_rows] = arr[self.last_frame_rows]
        return arr


def convert(
    cfg: TrainConfig,
    spec: FeatureSpec | None = None,
    reader: LeRobotReader | None = None,
    alloc: Alloc = _ram_alloc,
    progress: bool = True,
    decode: bool = True,
) -> tuple[dict[str, np.ndarray], dict]:
    """Convert one dataset (`reader`, default `cfg.dataset.path`) to a Chunk; returns
    (chunk, report): the report says what was decided and done (see `format_report`).

    The recorded frames pass through every step's offline transform (`envs.pipeline.STEPS`),
    in pipeline order, as the live env's observations pass through its wrappers. Every video
    is checked (`check_videos`) before any is decoded, so a cut file fails in seconds; with
    `decode=False` that check is all, and the chunk has no images (what `check_offline_transitions`
    reads)."""
    spec = spec or pipeline_spec(cfg)
    if reader is None:
        if cfg.dataset.path is None:
            raise ValueError("dataset.path: no dataset configured")
        reader = LeRobotReader(cfg.dataset.path)
    decision = check_dataset(reader, cfg)
    t0 = time.perf_counter()
    if reader.num_frames == 0:
        raise DatasetError(f"dataset {reader.root}: no frames")
    layout = RowLayout.of(np.array([e.length for e in reader.episodes]))
    key = {name: mapping.dataset_key(name, cfg) for name in (STATE, ACTION)}
    opt = {name: mapping.dataset_key(name, cfg) for name in OPTIONAL_COLUMNS}
    present = {name: k for name, k in opt.items() if k in reader.features}
    cols = reader.read([key[STATE], key[ACTION], *present.values()])

    rec = read_recorded(reader, cfg, spec, decision, cols[key[STATE]], cols[key[ACTION]], key)
    for step in pipeline.steps(cfg):
        if step.offline is not None:
            rec = step.offline(rec, cfg)

    out = {
        name: layout.place(name, rec.obs[name], f.dtype, alloc)
        for name, f in spec.observation.items()
        if not f.is_image
    }
    out[ACTION] = alloc(ACTION, (layout.rows, *spec.action.shape), "float32")
    out[ACTION][layout.frame_row] = rec.action
    out[ACTION][layout.last_rows] = 0
    signals, rules = _signals(cfg, reader, cols, present, layout, alloc)
    out.update(signals)
    out.update(_episode_fields(reader, layout, alloc))
    check_videos(reader, cfg, rec.images)
    if decode:
        out.update(decode_images(reader, cfg, spec, rec.images, layout, alloc, progress))
    seconds = time.perf_counter() - t0
    return out, _summary(cfg, spec, reader, decision, rec.clipped, seconds, opt, present, rules)


def read_recorded(
    reader: LeRobotReader,
    cfg: TrainConfig,
    spec: FeatureSpec,
    decision: formats.Decision,
    state_col: np.ndarray,
    action_col: np.ndarray,
    key: dict[str, str],
) -> Recorded:
    """The dataset as the raw robot reported it: joint degrees, privileged sim state, the action
    (joint targets in degrees, or already the pipeline's), images as a decoding plan; every
    value checked finite (and a pipeline action in range), naming the episode and frame."""
    eps = reader.episodes
    joints = joint_degrees(state_col[:, :NUM_JOINTS], cfg, decision.joint_units)
    _check_finite(joints, key[STATE], reader)
    # the SO-101's proprioception step makes the state from the joints; a gym env's is as recorded
    obs = {STATE: state_col.astype(np.float32) if is_gym(cfg) else joints}
    if ENV_STATE in spec.observation:  # privileged sim state (state-only sim tasks): as recorded
        env_key = mapping.dataset_key(ENV_STATE, cfg)
        obs[ENV_STATE] = reader.read([env_key])[env_key].astype(np.float32)
        _check_finite(obs[ENV_STATE], env_key, reader)
    in_pipeline = decision.action_format == "pipeline"
    if in_pipeline:
        action = _check_actions(action_col, key[ACTION], spec, reader)
    else:  # joint targets, or deltas in the dataset's units made targets, in degrees
        raw = action_col[:, :NUM_JOINTS].astype(np.float64)
        _check_finite(raw, key[ACTION], reader)
        if decision.action_format == "joint_deltas":
            raw = state_col[:, :NUM_JOINTS].astype(np.float64) + raw
        action = joint_degrees(raw, cfg, decision.joint_units)
    return Recorded(
        joints=joints,
        episodes=[slice(e.start, e.start + e.length) for e in eps],
        obs=obs,
        images={IMAGE_PREFIX + c.name: ImagePlan() for c in cfg.env.cameras},
        action=action,
        action_in_pipeline=in_pipeline,
        kin=Kinematics(cfg.robot.mjcf),
        clipped=np.zeros(len(joints), bool),
    )


def check_videos(reader: LeRobotReader, cfg: TrainConfig, cameras) -> int:
    """Each camera's video files opened and their frames counted against the episodes, without
    decoding them (`LeRobotReader.check_frames`); returns how many files were checked."""
    return sum(reader.check_frames(mapping.dataset_key(name, cfg)) for name in cameras)


def decode_images(
    reader: LeRobotReader,
    cfg: TrainConfig,
    spec: FeatureSpec,
    plans: dict[str, ImagePlan],
    layout: RowLayout,
    alloc: Alloc,
    progress: bool,
) -> dict[str, np.ndarray]:
    """Each camera's video decoded once, in order, through its plan (the image steps' crop and size)."""
    n_frames = len(layout.frame_row)
    out = {}
    bar = tqdm(
        total=n_frames * len(plans),
        unit="frame",
        desc=f"converting {Path(reader.root).name}",
        disable=not progress or not plans,
        mininterval=0.5,
        smoothing=0.1,
    )
    with bar:
        for name, plan in plans.items():
            imgs = alloc(name, (layout.rows, *spec.observation[name].shape), "uint8")
            seen = np.zeros(n_frames, dtype=bool)
            pending = 0
            for frame, img in reader.frames(mapping.dataset_key(name, cfg), size=plan.size, crop=plan.crop):
                imgs[layout.frame_row[frame]] = img
                seen[frame] = True
                pending += 1
                if pending == 64:
                    bar.update(pending)
                    pending = 0
            bar.update(pending)
            if not seen.all():
                missing = np.flatnonzero(~seen)
                raise DatasetError(
                    f"{reader.root}: {name}: no video frame for {len(missing)} frames (first: row {missing[0]})"
                )
            imgs[layout.last_rows] = imgs[layout.last_frame_rows]
            out[name] = imgs
    return out


def _episode_fields(reader: LeRobotReader, layout: RowLayout, alloc: Alloc) -> dict[str, np.ndarray]:
    episode_id = alloc("episode_id", (layout.rows,), "int64")
    episode_id[:] = OFFLINE_EPISODE_ID_BASE + np.repeat(
        [e.index for e in reader.episodes], layout.lengths + 1
    )
    is_last = alloc("is_last", (layout.rows,), "bool")
    is_last[:] = False
    is_last[layout.last_rows] = True
    return {"episode_id": episode_id, "is_last": is_last}


def _summary(
    cfg: TrainConfig,
    spec: FeatureSpec,
    reader: LeRobotReader,
    decision: formats.Decision,
    clipped: np.ndarray,
    seconds: float,
    optional: dict[str, str],
    present: dict[str, str],
    rules: dict[str, str],
) -> dict:
    """The report `format_report` prints: what was decided (action format, units) and done."""
    n_eps, n_frames = len(reader.episodes), reader.num_frames
    used = {name: mapping.dataset_key(name, cfg) for name in mapping.required_inputs(cfg)}
    g = cfg.pipeline.gripper
    return {
        "dataset": str(reader.root),
        "episodes": n_eps,
        "frames": n_frames,
        "rows": n_frames + n_eps,
        "seconds": round(seconds, 3),
        "frames_per_second": round(n_frames / seconds, 1) if seconds > 0 else None,
        "missing": sorted(set(optional) - set(present)),
        **decision.to_dict(),
        "action": list(spec.action.names or []),
        "gripper": f"discrete close/stay/open, stay within +-{g.command_threshold:g}"
        if g.discrete
        else f"continuous, {g.step_deg:g} per unit",
        "clipped_frames": int(clipped.sum()),
        "clipped_fraction": round(float(clipped.mean()), 4),
        **rules,
        "keys": {**{v: k for k, v in used.items()}, **{v: k for k, v in present.items()}},
    }


def format_report(r: dict) -> str:
    """The conversion report as a few lines a person reads once."""
    lines = [
        f"dataset {r['dataset']}: {r['episodes']} episodes, {r['frames']} frames",
        f"  action: {r['action_format']} ({r['action_reason']}) -> {r['action']}",
        f"  joint units: {r['joint_units']} ({r['units_reason']})",
    ]
    if r["action_format"] != "pipeline":
        lines.append(f"  gripper: {r['gripper']}")
        lines.append(
            f"  clipped to [-1, 1]: {r['clipped_frames']} frames ({100 * r['clipped_fraction']:.1f}%)"
        )
    lines.append(f"  reward: {r['reward_rule']}")
    lines.append(f"  done: {r['done_rule']}")
    lines.append("  keys: " + ", ".join(f"{src} -> {dst}" for src, dst in r["keys"].items()))
    if r["clipped_fraction"] > CLIP_WARN_FRACTION:
        lines.append(
            f"  WARNING: {100 * r['clipped_fraction']:.0f}% of the actions were clipped: the demos move faster per "
            "step than the pipeline allows; raise pipeline.ee_action.step_size_m (EE mode) or "
            "robot.max_relative_target_deg (joint mode), or lower env.fps"
        )
    return "\n".join(lines)


def joint_degrees(values: np.ndarray, cfg: TrainConfig, units: str | None = None) -> np.ndarray:
    """The dataset's 6 joint values in state units (degrees, gripper 0..100), as float64.

    `dataset.joint_units: lerobot_range` undoes LeRobot's default -100..100 normalization with
    the arm's calibration (the same file the real robot uses), so FK sees real angles.
    """
    values = np.asarray(values, dtype=np.float64)
    units = units or cfg.dataset.joint_units
    if units in ("degrees", "auto"):
        return values
    return (
        Normalizer(load_calibration(cfg.robot.calibration, JOINT_NAMES), JOINT_NAMES)
        .from_lerobot_range(values)
        .astype(np.float64)
    )


def _signals(
    cfg: TrainConfig, reader: LeRobotReader, cols: dict, present: dict, layout: RowLayout, alloc: Alloc
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """reward, discrete_penalty, terminated, truncated, is_intervention: from their columns, or
    by the dataset.missing_reward rule, done at each episode's end and every action human."""
    lengths, frame_row = layout.lengths, layout.frame_row
    n_frames = len(frame_row)
    ends = np.zeros(n_frames, dtype=bool)
    ends[np.cumsum(lengths) - 1] = True
    done_key = present.get(mapping.DONE)
    done = cols[done_key].reshape(n_frames).astype(bool) if done_key else ends.copy()
    trunc_key = present.get(mapping.TRUNCATED)
    trunc = cols[trunc_key].reshape(n_frames).astype(bool) if trunc_key else np.zeros(n_frames, bool)
    # an episode whose last frame is not done was cut off: a time limit, bootstrap from its last obs
    trunc |= ends & ~done
    terminated = done & ~trunc

    reward_key = present.get(mapping.REWARD)
    if reward_key:
        reward = cols[reward_key].reshape(n_frames).astype(np.float32)
        if not np.isfinite(reward).all():
            raise DatasetError(f"{reader.root}: column {reward_key!r} has non-finite values")
        reward_rule = f"column {reward_key!r}"
    else:
        reward = np.zeros(n_frames, np.float32)
        rule = cfg.dataset.missing_reward
        if rule == "success_last_frame":
            success = ends & done & ~trunc
            reward[success] = 1.0
            what = f"reward 1 on the last frame of the {int(success.sum())} of {len(lengths)} episodes that end done"
        else:
            what = "reward 0 everywhere"
        reward_rule = f"no {mapping.REWARD!r} column: dataset.missing_reward={rule!r} gives {what}"
    done_rule = (
        f"column {done_key!r}"
        if done_key
        else f"no {mapping.DONE!r} column: episodes end done at their last frame"
    )

    def field(name, dtype, values, last_value=None):
        arr = alloc(name, (layout.rows,), dtype)
        arr[:] = 0
        arr[frame_row] = values
        if last_value is not None:
            arr[layout.last_rows] = last_value
        return arr

    pen_key = present.get(mapping.PENALTY)
    penalty = (
        cols[pen_key].reshape(n_frames).astype(np.float32) if pen_key else np.zeros(n_frames, np.float32)
    )
    int_key = present.get(mapping.INTERVENTION)
    # a dataset without intervention flags is a set of teleoperated demos: every action is human
    intervention = cols[int_key].reshape(n_frames).astype(bool) if int_key else np.ones(n_frames, bool)
    last_int = intervention[np.cumsum(lengths) - 1]
    fields = {
        "reward": field("reward", "float32", reward),
        "discrete_penalty": field("discrete_penalty", "float32", penalty),
        "terminated": field("terminated", "bool", terminated),
        "truncated": field("truncated", "bool", trunc),
        "is_intervention": field("is_intervention", "bool", intervention, last_int),
    }
    return fields, {"reward_rule": reward_rule, "done_rule": done_rule}


def _check_finite(a: np.ndarray, name: str, reader: LeRobotReader) -> None:
    bad = ~np.isfinite(a.reshape(len(a), -1)).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        e = _episode(row, reader.episodes)
        raise DatasetError(
            f"column {name!r}: non-finite value at {_where(row, reader.episodes)}: {_values(a[row])} "
            f"({int(bad.sum())} frame(s) hold NaN or inf)",
            where=str(reader.data_file(e)) if e is not None else str(reader.root),
            fix="repair those values in the parquet file, or record the episode again",
        )


def _check_actions(a: np.ndarray, name: str, spec: FeatureSpec, reader: LeRobotReader) -> np.ndarray:
    a = a.astype(np.float32)
    eps = reader.episodes
    _check_finite(a, name, reader)
    n = spec.continuous_action_dim
    cont = a[:, :n]
    bad = (np.abs(cont) > 1.0 + 1e-4).any(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DatasetError(
            f"column {name!r}: continuous action dims {list(spec.action.names[:n])} must lie in [-1, 1] "
            f"(the pipeline's normalised action); {int(bad.sum())} frames are outside, first at {_where(row, eps)}: {a[row]}. "
            "Record the dataset in the wrapped env's action space (python -m hilserl_ray.record)"
        )
    if spec.discrete_gripper:
        g = a[:, n]
        bad = ~np.isin(g, (0.0, 1.0, 2.0))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DatasetError(
                f"column {name!r}: the gripper command (last dim) must be 0 (close), 1 (stay) or 2 (open); "
                f"got {g[row]} at {_where(row, eps)}"
            )
    a[:, :n] = np.clip(cont, -1.0, 1.0)  # within 1e-4 of the bounds: float noise
    return a


def _values(v: np.ndarray) -> str:
    return np.array2string(np.asarray(v), precision=4, max_line_width=10_000)


def _episode(row: int, eps):
    return next((e for e in eps if e.start <= row < e.start + e.length), None)


def _where(row: int, eps) -> str:
    e = _episode(row, eps)
    return f"row {row}" if e is None else f"episode {e.index} frame {row - e.start}"


# ------------------------------------------------------------------------------- the entry point
def cache_root(cfg: TrainConfig) -> Path:
    """Where converted datasets live: shared by runs, so a new run on the same dataset and
    pipeline loads the conversion instead of redoing it."""
    if cfg.dataset.cache_dir is not None:
        return Path(cfg.dataset.cache_dir)
    env = os.environ.get("HILSERL_RAY_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hilserl_ray" / "offline"


def offline_cache_key(
    cfg: TrainConfig, spec: FeatureSpec, reader: LeRobotReader, decision: formats.Decision
) -> str:
    kin_file = Path(cfg.robot.mjcf) if cfg.robot.mjcf is not None else DEFAULT_MJCF
    if not kin_file.is_file():
        Kinematics(kin_file)  # raises, naming robot.mjcf and the fix
    st = kin_file.stat()
    joint_actions = decision.action_format != "pipeline"
    return cache.cache_key(
        {
            "dataset": cache.files_fingerprint(reader.root, reader.files()),
            "spec": spec.fingerprint(),
            "conversion": CONVERSION_VERSION,
            "rules": {
                "missing_reward": cfg.dataset.missing_reward,
                "rename": dict(sorted(cfg.dataset.rename.items())),
                "action_format": decision.action_format,
                "joint_units": decision.joint_units,
                "joint_actions": JointActionParams.from_config(cfg).__dict__ if joint_actions else None,
                "calibration": _file_stamp(cfg.robot.calibration)
                if decision.joint_units == "lerobot_range"
                else None,
            },
            "mjcf": [str(kin_file.resolve()), st.st_size, st.st_mtime_ns],
        }
    )


def _file_stamp(path) -> list | None:
    if path is None or not Path(path).is_file():
        return None
    st = Path(path).stat()
    return [cache.files_fingerprint(Path(path).parent, [Path(path)]), st.st_size]


def open_dataset(cfg: TrainConfig, root: Path | str | None = None) -> tuple[LeRobotReader, formats.Decision]:
    """A dataset's metadata read and held against the pipeline (`check_dataset`), every file it
    lists present; `root` defaults to `cfg.dataset.path`."""
    root = root if root is not None else cfg.dataset.path
    if root is None:
        raise ValueError(
            "dataset.path: no dataset configured (set dataset.path to a LeRobot dataset directory)"
        )
    reader = LeRobotReader(root)
    decision = check_dataset(reader, cfg)
    missing = [p for p in reader.files() if not p.is_file()]
    if missing:
        shown = ", ".join(str(p.relative_to(reader.root)) for p in missing[:3])
        raise DatasetError(
            f"{reader.root}: {len(missing)} file(s) its metadata lists are missing ({shown}); "
            "copy the whole dataset directory"
        )
    return reader, decision


def offline_cache_path(cfg: TrainConfig, reader: LeRobotReader, key: str) -> Path:
    """The cache directory of this dataset converted under `key`."""
    return cache.cache_dir(cache_root(cfg), key, tag=cache.path_tag(reader.root))


def load_offline_transitions(
    cfg: TrainConfig,
    spec: FeatureSpec | None = None,
    root: Path | str | None = None,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """One dataset (`root`, default `cfg.dataset.path`) as a Chunk, from the shared cache
    (`cache_root(cfg)/offline-<dataset>-<key>/`) when valid, else converted and cached.

    The conversion report is printed once, when it is made, and saved in the cache directory
    (report.txt). Cached arrays are read-only memory maps; `ReplayBuffer.add_chunk` copies.
    """
    spec = spec or pipeline_spec(cfg)
    reader, decision = open_dataset(cfg, root)
    if not cfg.dataset.cache:
        chunk, report = convert(cfg, spec, reader, progress=progress)
        print(format_report(report), flush=True)
        return chunk
    key = offline_cache_key(cfg, spec, reader, decision)
    path = offline_cache_path(cfg, reader, key)
    t0 = time.perf_counter()
    existed = path.exists()

    def build(writer: cache.CacheWriter) -> dict:
        _, report = convert(cfg, spec, reader, alloc=writer.alloc, progress=progress)
        text = format_report(report)
        print(text, flush=True)
        (writer.tmp / "report.txt").write_text(text + "\n")
        (writer.tmp / "report.json").write_text(json.dumps(report, indent=2, default=str))
        return {
            "key": key,
            "spec": spec.to_dict(),
            "summary": report,
            "conversion_version": CONVERSION_VERSION,
        }

    chunk, manifest = cache.load_or_build(path, build)
    if existed and "summary" in manifest:
        log.warning(
            "dataset %s: converted before, %d rows loaded from %s in %.2f s (report: %s)",
            reader.root,
            manifest["summary"]["rows"],
            path,
            time.perf_counter() - t0,
            path / "report.txt",
        )
    return chunk


def check_offline_transitions(
    cfg: TrainConfig, spec: FeatureSpec | None = None, root: Path | str | None = None
) -> str:
    """What `load_offline_transitions` would fail on, found without decoding a frame or writing a
    file (a dry run; a run that converts in its learner): when the cache for this config is valid,
    nothing more (the run loads it); else the conversion without its images (every parquet
    column it uses: rows, order, finite values, action ranges) and every video opened and its
    frames counted (`check_videos`). Returns one line saying what was read."""
    spec = spec or pipeline_spec(cfg)
    reader, decision = open_dataset(cfg, root)
    if cfg.dataset.cache:
        path = offline_cache_path(cfg, reader, offline_cache_key(cfg, spec, reader, decision))
        if cache.is_valid(path):
            return (
                f"dataset {reader.root}: its offline cache for this config is valid ({path}), not read again"
            )
    convert(cfg, spec, reader, progress=False, decode=False)
    cams = [mapping.dataset_key(IMAGE_PREFIX + c.name, cfg) for c in cfg.env.cameras]
    videos = len({e.videos[k][0] for e in reader.episodes for k in cams if k in e.videos})
    return (
        f"dataset {reader.root}: {len(reader.episodes)} episodes, {reader.num_frames} frames read "
        f"(parquet columns and values, {videos} video file(s) opened and their frames counted)"
    )


def check_offline_datasets(cfg: TrainConfig, spec: FeatureSpec | None = None) -> list[str]:
    """`check_offline_transitions` of every configured dataset."""
    spec = spec or pipeline_spec(cfg)
    return [check_offline_transitions(cfg, spec, p) for p in cfg.dataset.all_paths()]


def load_offline_datasets(
    cfg: TrainConfig, spec: FeatureSpec | None = None, progress: bool = True
) -> list[dict[str, np.ndarray]]:
    """Every configured dataset (`dataset.path` and `dataset.paths`) as its own Chunk."""
    spec = spec or pipeline_spec(cfg)
    return [load_offline_transitions(cfg, spec, p, progress) for p in cfg.dataset.all_paths()]


if __name__ == "__main__":  # the command lives above data/ (it runs the preflight checks first)
    runpy.run_module("hilserl_ray.convert", run_name="__main__", alter_sys=True)
