"""LeRobot dataset -> one offline Chunk, through the same observation pipeline as the live env.

Rows: each episode's N frames become N transition rows (frame i's observation, action,
reward, done) followed by one `is_last` row. LeRobot stores no observation after the last
frame, so the `is_last` row repeats the last frame's observation: a terminated last step
never bootstraps, and a truncated one bootstraps from that last observation.

Observations are rebuilt from the raw robot features: joint positions (first 6 state values)
-> `proprio_state` (velocities at the env's control dt, FK ee pose), camera frames ->
`process_image` (crop, INTER_AREA resize). Output arrays come from `alloc`, so the cache
writes straight into memory-mapped files and peak RAM stays near the chunk itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hilserl_ray.config import TrainConfig
from hilserl_ray.data import cache, mapping
from hilserl_ray.data.lerobot_reader import DatasetError, LeRobotReader
from hilserl_ray.envs.kinematics import DEFAULT_MJCF, Kinematics
from hilserl_ray.envs.pipeline import ENV_STATE, pipeline_spec
from hilserl_ray.envs.transforms import proprio_state
from hilserl_ray.errors import command
from hilserl_ray.features import ACTION, IMAGE_PREFIX, STATE, FeatureSpec

log = logging.getLogger(__name__)

# Bump when the conversion's output changes for the same inputs: old caches then miss.
CONVERSION_VERSION = 1
# Offline episodes get ids far above any actor's, so ids stay unique in a mixed buffer.
OFFLINE_EPISODE_ID_BASE = 1 << 48

Alloc = Callable[[str, tuple[int, ...], str], np.ndarray]


def _ram_alloc(name: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return np.empty(shape, dtype=dtype)


def check_dataset(reader: LeRobotReader, cfg: TrainConfig) -> None:
    """Raise DatasetError listing every missing/mismatched feature (with the dataset's keys)."""
    problems = mapping.feature_problems(reader.info, cfg)
    if problems:
        lines = "\n".join(f"  - {p}: got {v!r}; {m}" for p, v, m in problems)
        raise DatasetError(f"dataset {reader.root} does not fit the pipeline:\n{lines}")


def convert(
    cfg: TrainConfig,
    spec: FeatureSpec | None = None,
    reader: LeRobotReader | None = None,
    alloc: Alloc = _ram_alloc,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], dict]:
    """Convert `cfg.dataset.path` to a Chunk; returns (chunk, summary)."""
    spec = spec or pipeline_spec(cfg)
    if reader is None:
        if cfg.dataset.path is None:
            raise ValueError("dataset.path: no dataset configured")
        reader = LeRobotReader(cfg.dataset.path)
    check_dataset(reader, cfg)
    t0 = time.perf_counter()
    eps = reader.episodes
    n_eps, n_frames = len(eps), reader.num_frames
    if n_frames == 0:
        raise DatasetError(f"dataset {reader.root}: no frames")
    lengths = np.array([e.length for e in eps])
    rows = n_frames + n_eps
    ep_of_frame = np.repeat(np.arange(n_eps), lengths)
    frame_row = np.arange(n_frames) + ep_of_frame  # dataset frame -> chunk row
    last_rows = np.cumsum(lengths + 1) - 1  # each episode's is_last row
    last_frame_rows = last_rows - 1  # its last transition row

    key = {name: mapping.dataset_key(name, cfg) for name in (STATE, ACTION)}
    opt = {
        name: mapping.dataset_key(name, cfg)
        for name in (mapping.REWARD, mapping.DONE, mapping.INTERVENTION, mapping.PENALTY, mapping.TRUNCATED)
    }
    present = {name: k for name, k in opt.items() if k in reader.features}
    cols = reader.read([key[STATE], key[ACTION], *present.values()])

    out: dict[str, np.ndarray] = {}

    # ---- state: full proprioception per episode, from the joint positions
    joints = joint_degrees(cols[key[STATE]][:, : mapping.NUM_JOINTS], cfg)
    _check_finite(joints, key[STATE], eps)
    kin = Kinematics(cfg.robot.mjcf)
    state = alloc(STATE, (rows, *spec.observation[STATE].shape), "float32")
    dt = 1.0 / cfg.env.fps
    for e in eps:
        s = slice(e.start, e.start + e.length)
        r0 = int(frame_row[e.start])
        state[r0 : r0 + e.length] = proprio_state(joints[s], kin, dt, cfg.pipeline.proprio)
    state[last_rows] = state[last_frame_rows]
    out[STATE] = state

    # ---- privileged sim state (state-only sim tasks): copied as recorded
    if ENV_STATE in spec.observation:
        env_key = mapping.dataset_key(ENV_STATE, cfg)
        values = reader.read([env_key])[env_key].astype(np.float32)
        _check_finite(values, env_key, eps)
        out[ENV_STATE] = alloc(ENV_STATE, (rows, *spec.observation[ENV_STATE].shape), "float32")
        out[ENV_STATE][frame_row] = values
        out[ENV_STATE][last_rows] = out[ENV_STATE][last_frame_rows]

    # ---- action
    action = _check_actions(cols[key[ACTION]], key[ACTION], spec, eps)
    out[ACTION] = alloc(ACTION, (rows, *spec.action.shape), "float32")
    out[ACTION][frame_row] = action
    out[ACTION][last_rows] = 0

    # ---- reward, done, flags
    out.update(_signals(cfg, reader, cols, present, lengths, frame_row, last_frame_rows, rows, alloc))
    episode_id = alloc("episode_id", (rows,), "int64")
    episode_id[:] = OFFLINE_EPISODE_ID_BASE + np.repeat([e.index for e in eps], lengths + 1)
    out["episode_id"] = episode_id
    is_last = alloc("is_last", (rows,), "bool")
    is_last[:] = False
    is_last[last_rows] = True
    out["is_last"] = is_last

    # ---- images: each video file decoded once, in order
    cams = [c.name for c in cfg.env.cameras]
    bar = tqdm(
        total=n_frames * len(cams),
        unit="frame",
        desc=f"converting {Path(reader.root).name}",
        disable=not progress or not cams,
        mininterval=0.5,
        smoothing=0.1,
    )
    with bar:
        for cam in cams:
            name = IMAGE_PREFIX + cam
            size = tuple(spec.observation[name].shape[:2])
            crop = cfg.pipeline.image.crop.get(cam)
            imgs = alloc(name, (rows, *spec.observation[name].shape), "uint8")
            seen = np.zeros(n_frames, dtype=bool)
            pending = 0
            for frame, img in reader.frames(mapping.dataset_key(name, cfg), size=size, crop=crop):
                imgs[frame_row[frame]] = img
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
            imgs[last_rows] = imgs[last_frame_rows]
            out[name] = imgs
    seconds = time.perf_counter() - t0
    summary = {
        "dataset": str(reader.root),
        "episodes": n_eps,
        "frames": n_frames,
        "rows": rows,
        "seconds": round(seconds, 3),
        "frames_per_second": round(n_frames / seconds, 1) if seconds > 0 else None,
        "missing": sorted(set(opt) - set(present)),
    }
    return out, summary


def joint_degrees(values: np.ndarray, cfg: TrainConfig) -> np.ndarray:
    """The dataset's 6 joint values in state units (degrees, gripper 0..100), as float64.

    `dataset.joint_units: lerobot_range` undoes LeRobot's default -100..100 normalization with
    the arm's calibration (the same file the real robot uses), so FK sees real angles.
    """
    values = np.asarray(values, dtype=np.float64)
    if cfg.dataset.joint_units == "degrees":
        return values
    from hilserl_ray.config import JOINT_NAMES
    from hilserl_ray.hardware.calibration import Normalizer, load_calibration

    return (
        Normalizer(load_calibration(cfg.robot.calibration), JOINT_NAMES)
        .from_lerobot_range(values)
        .astype(np.float64)
    )


def _signals(
    cfg, reader, cols, present, lengths, frame_row, last_frame_rows, rows, alloc
) -> dict[str, np.ndarray]:
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
    else:
        reward = np.zeros(n_frames, np.float32)
        rule = cfg.dataset.missing_reward
        if rule == "success_last_frame":
            success = ends & done & ~trunc
            reward[success] = 1.0
            what = f"reward 1 on the last frame of the {int(success.sum())} of {len(lengths)} episodes that end done"
        else:
            what = "reward 0 everywhere"
        log.warning(
            "dataset %s has no %r column: dataset.missing_reward=%r gives %s",
            reader.root,
            mapping.REWARD,
            rule,
            what,
        )
    if not done_key:
        log.info(
            "dataset %s has no %r column: episodes end done at their last frame", reader.root, mapping.DONE
        )

    def field(name, dtype, values, last_value=None):
        arr = alloc(name, (rows,), dtype)
        arr[:] = 0
        arr[frame_row] = values
        if last_value is not None:
            arr[last_frame_rows + 1] = last_value
        return arr

    pen_key = present.get(mapping.PENALTY)
    penalty = (
        cols[pen_key].reshape(n_frames).astype(np.float32) if pen_key else np.zeros(n_frames, np.float32)
    )
    int_key = present.get(mapping.INTERVENTION)
    # a dataset without intervention flags is a set of teleoperated demos: every action is human
    intervention = cols[int_key].reshape(n_frames).astype(bool) if int_key else np.ones(n_frames, bool)
    last_int = intervention[np.cumsum(lengths) - 1]
    return {
        "reward": field("reward", "float32", reward),
        "discrete_penalty": field("discrete_penalty", "float32", penalty),
        "terminated": field("terminated", "bool", terminated),
        "truncated": field("truncated", "bool", trunc),
        "is_intervention": field("is_intervention", "bool", intervention, last_int),
    }


def _check_finite(a: np.ndarray, name: str, eps) -> None:
    bad = ~np.isfinite(a.reshape(len(a), -1)).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DatasetError(f"column {name!r}: non-finite value at {_where(row, eps)}: {a[row]}")


def _check_actions(a: np.ndarray, name: str, spec: FeatureSpec, eps) -> np.ndarray:
    a = a.astype(np.float32)
    _check_finite(a, name, eps)
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


def _where(row: int, eps) -> str:
    for e in eps:
        if e.start <= row < e.start + e.length:
            return f"episode {e.index} frame {row - e.start}"
    return f"row {row}"


# ------------------------------------------------------------------------------- the entry point
def offline_cache_key(cfg: TrainConfig, spec: FeatureSpec, reader: LeRobotReader) -> str:
    kin_file = Path(cfg.robot.mjcf) if cfg.robot.mjcf is not None else DEFAULT_MJCF
    if not kin_file.is_file():
        Kinematics(kin_file)  # raises, naming robot.mjcf and the fix
    st = kin_file.stat()
    return cache.cache_key(
        {
            "dataset": cache.files_fingerprint(reader.root, reader.files()),
            "spec": spec.fingerprint(),
            "conversion": CONVERSION_VERSION,
            "rules": {
                "missing_reward": cfg.dataset.missing_reward,
                "rename": dict(sorted(cfg.dataset.rename.items())),
            },
            "mjcf": [str(kin_file.resolve()), st.st_size, st.st_mtime_ns],
        }
    )


def _file_stamp(path) -> list | None:
    if path is None or not Path(path).is_file():
        return None
    st = Path(path).stat()
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]


def load_offline_transitions(
    cfg: TrainConfig,
    spec: FeatureSpec | None = None,
    out_dir: Path | str | None = None,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """The dataset as one Chunk, from `<out_dir>/cache/offline-<key>/` when valid, else converted (and cached).

    Cached arrays are read-only memory maps; `ReplayBuffer.add_chunk` copies what it keeps.
    """
    if cfg.dataset.path is None:
        raise ValueError(
            "dataset.path: no dataset configured (set dataset.path to a LeRobot dataset directory)"
        )
    spec = spec or pipeline_spec(cfg)
    reader = LeRobotReader(cfg.dataset.path)
    check_dataset(reader, cfg)
    if not cfg.dataset.cache:
        chunk, summary = convert(cfg, spec, reader, progress=progress)
        log.info("converted %s: %s", reader.root, summary)
        return chunk
    out_dir = Path(out_dir if out_dir is not None else cfg.output_dir)
    key = offline_cache_key(cfg, spec, reader)
    path = cache.cache_dir(out_dir, key)
    t0 = time.perf_counter()
    existed = path.exists()

    def build(writer: cache.CacheWriter) -> dict:
        _, summary = convert(cfg, spec, reader, alloc=writer.alloc, progress=progress)
        log.info("converted %s: %s", reader.root, summary)
        return {
            "key": key,
            "spec": spec.to_dict(),
            "summary": summary,
            "conversion_version": CONVERSION_VERSION,
        }

    chunk, manifest = cache.load_or_build(path, build)
    if existed and "summary" in manifest:
        log.info(
            "offline cache %s: %d rows loaded in %.2f s",
            path,
            manifest["summary"]["rows"],
            time.perf_counter() - t0,
        )
    return chunk


@command
def main(argv: list[str] | None = None) -> int:
    """`python -m hilserl_ray.data.convert --config X [--a.b=value ...]`: build (or check) the offline cache."""
    import argparse

    from hilserl_ray.configio import ConfigError, load_config
    from hilserl_ray.preflight import preflight

    p = argparse.ArgumentParser(prog="python -m hilserl_ray.data.convert", description=main.__doc__)
    p.add_argument("--config", required=True)
    args, rest = p.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_config(args.config, rest)
    if cfg.dataset.path is None:
        raise ConfigError(args.config, ["dataset.path: not set; nothing to convert (--dataset.path=DIR)"])
    preflight(cfg, source=args.config)
    t0 = time.perf_counter()
    chunk = load_offline_transitions(cfg, progress=True)
    mb = sum(v.nbytes for v in chunk.values()) / 1e6
    n = int((~chunk["is_last"]).sum())
    print(
        f"{n} transitions, {int(chunk['is_last'].sum())} episodes, {mb:.0f} MB, ready in {time.perf_counter() - t0:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
