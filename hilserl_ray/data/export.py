"""`python -m hilserl_ray.data.export --run OUTPUT_DIR --out DIR [--only-interventions] [--codec av1|h264]`.

Writes a run's online transitions as a LeRobot v3.0 dataset (the project's writer: LeRobot's
layout, AV1 video by default), so a run can be shared, trained on offline or fed to the next
run. Per frame: the pipeline's observations as the run stored them (`observation.state` with
its proprioception, cameras at the pipeline's image size, as video), `action` in the pipeline's
format, `next.reward`, `next.done` (terminated or truncated), `complementary_info.truncated`,
`complementary_info.is_intervention`, `complementary_info.discrete_penalty` and
`complementary_info.episode_success` (the episode ended terminated with a positive reward).

Only whole episodes are written: one still running, or whose start the ring buffer already
overwrote, is skipped. LeRobot keeps no observation after an episode's last frame, so the
final observation is dropped (the reader repeats the last frame's, as for any LeRobot data).
`--only-interventions` keeps the human's stretches, each run of intervention steps as an episode
(cut ones end truncated).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hilserl_ray.buffer import ReplayBuffer
from hilserl_ray.buffer.store import StoreError
from hilserl_ray.configio import load_config
from hilserl_ray.data.lerobot_writer import LeRobotWriter
from hilserl_ray.data.mapping import DONE, INTERVENTION, PENALTY, REWARD, TRUNCATED
from hilserl_ray.errors import UserError, command
from hilserl_ray.features import ACTION, FeatureSpec
from hilserl_ray.runtime.rundir import replay_dir

SUCCESS = "complementary_info.episode_success"


class ExportError(UserError, ValueError):
    """A run that cannot be exported; the message names the directory and the fix."""


def read_run_replay(run_dir: Path) -> tuple[FeatureSpec, dict[str, np.ndarray], list[np.ndarray]]:
    """(spec, the run's online replay rows oldest first, the row indices of each whole episode).

    The one place that knows where a run keeps its replay data: the learner's replay store
    `<run>/replay/online/` (`buffer/store.py`), opened read-only as of its last commit, also while
    the run goes on. Arrays are memory maps, rows gathered only when indexed.
    """
    d = replay_dir(run_dir) / "online"
    try:
        buf = ReplayBuffer.open(d)
    except StoreError:
        raise ExportError(
            f"{run_dir}: no replay store in {d}",
            fix="pass the output_dir of a run that collected transitions",
        ) from None
    order = buf.live_positions()  # global row order -> ring position
    arrays = {name: _Ordered(buf.column(name), order) for name in buf.fields}
    wrapped = buf.written > buf.capacity
    return buf.spec, arrays, whole_episodes(arrays["episode_id"][:], arrays["is_last"][:], wrapped)


class _Ordered:
    """Rows of a memory-mapped array in another order, read only when indexed."""

    def __init__(self, a: np.ndarray, order: np.ndarray):
        self.a, self.order = a, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, idx) -> np.ndarray:
        return np.asarray(self.a[self.order[idx]])


def whole_episodes(eid: np.ndarray, last: np.ndarray, wrapped: bool) -> list[np.ndarray]:
    """Row indices of each finished episode, in the order they started.

    An episode without its final (is_last) row is still running. After the ring wrapped, the
    oldest surviving episode of each robot-actor incarnation (episode ids are
    `incarnation << 23 | count`) may have lost its start, so it is left out.
    """
    rows: dict[int, list[int]] = {}
    for i, e in enumerate(eid.tolist()):
        rows.setdefault(e, []).append(i)
    doubtful = set()
    if wrapped:
        oldest: dict[int, int] = {}
        for e in rows:
            oldest[e >> 23] = min(e, oldest.get(e >> 23, e))
        doubtful = set(oldest.values())
    out = []
    for e, r in rows.items():  # dicts keep insertion order: by first row
        r = np.asarray(r)
        if e in doubtful or not last[r[-1]] or last[r[:-1]].any():
            continue
        out.append(r)
    return out


def dataset_features(spec: FeatureSpec) -> dict[str, dict]:
    feats: dict[str, dict] = {}
    for key, f in spec.observation.items():
        if f.is_image:
            feats[key] = {"dtype": "video", "shape": list(f.shape), "names": ["height", "width", "channels"]}
        else:
            feats[key] = {"dtype": "float32", "shape": list(f.shape), "names": list(f.names or []) or None}
    feats[ACTION] = {
        "dtype": "float32",
        "shape": list(spec.action.shape),
        "names": list(spec.action.names or []),
    }
    for key, dtype in (
        (REWARD, "float32"),
        (DONE, "bool"),
        (TRUNCATED, "bool"),
        (INTERVENTION, "bool"),
        (PENALTY, "float32"),
        (SUCCESS, "bool"),
    ):
        feats[key] = {"dtype": dtype, "shape": [1], "names": None}
    return feats


def _segments(rows: np.ndarray, arrays: dict, only_interventions: bool) -> Iterator[tuple[np.ndarray, bool]]:
    """(transition rows, ends the episode) pieces of one episode."""
    trans = rows[:-1]
    if not only_interventions:
        yield trans, True
        return
    human = arrays["is_intervention"][trans].astype(bool)
    edges = np.flatnonzero(np.diff(np.r_[0, human.astype(np.int8), 0]))
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        yield trans[a:b], b == len(trans)


def export_run(
    run_dir: Path, out: Path, only_interventions: bool = False, codec: str = "av1", progress: bool = True
) -> dict:
    """Write the dataset; returns {episodes, frames, skipped, successes}."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ExportError(
            f"{run_dir}: not a run's output_dir (no config.yaml)",
            fix="pass --run <the output_dir of a train run>",
        )
    cfg = load_config(run_dir)
    spec, arrays, eps = read_run_replay(run_dir)
    if only_interventions:
        eps = [r for r in eps if arrays["is_intervention"][r[:-1]].any()]
    if not eps:
        what = "episode with an intervention" if only_interventions else "finished episode"
        raise ExportError(f"{run_dir}: its last checkpoint holds no {what}; nothing to export")
    feats = dataset_features(spec)
    obs_keys = list(spec.observation)
    stats = {"episodes": 0, "frames": 0, "successes": 0, "skipped": 0}
    if not only_interventions:
        stats["skipped"] = len(set(arrays["episode_id"][:].tolist())) - len(eps)
    robot = "so101_follower" if cfg.robot.type == "so101" else f"so101_{cfg.robot.type}"
    writer = LeRobotWriter(out, cfg.env.fps, feats, robot_type=robot, codec=codec)
    n_frames = sum(len(r) - 1 for r in eps)
    with writer, tqdm(total=n_frames, unit="frame", desc="exporting", disable=not progress) as bar:
        for rows in eps:
            t_last = rows[-2] if len(rows) > 1 else None
            success = bool(
                t_last is not None and arrays["terminated"][t_last] and arrays["reward"][t_last] > 0
            )
            for seg, ends in _segments(rows, arrays, only_interventions):
                if len(seg) == 0:
                    continue
                cols = {k: arrays[k][seg] for k in (*obs_keys, ACTION, "reward", "terminated", "truncated")}
                cols.update({k: arrays[k][seg] for k in ("is_intervention", "discrete_penalty")})
                for i in range(len(seg)):
                    is_end = i == len(seg) - 1
                    term = bool(cols["terminated"][i]) and is_end and ends
                    trunc = bool(cols["truncated"][i]) or (is_end and not ends)
                    frame = {k: cols[k][i] for k in obs_keys}
                    frame[ACTION] = cols[ACTION][i]
                    frame[REWARD] = np.float32(cols["reward"][i])
                    frame[DONE] = bool(is_end and (term or trunc))
                    frame[TRUNCATED] = bool(is_end and trunc)
                    frame[INTERVENTION] = bool(cols["is_intervention"][i])
                    frame[PENALTY] = np.float32(cols["discrete_penalty"][i])
                    frame[SUCCESS] = success
                    writer.add_frame(frame, task=cfg.env.task)
                writer.save_episode()
                stats["episodes"] += 1
                stats["frames"] += len(seg)
                stats["successes"] += int(success)
                bar.update(len(seg))
    return stats


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hilserl_ray.data.export", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a run's output_dir (config.yaml + checkpoints/)")
    p.add_argument("--out", required=True, help="a new directory for the LeRobot dataset")
    p.add_argument("--only-interventions", action="store_true", help="only the human's steps")
    p.add_argument("--codec", choices=["av1", "h264"], default="av1", help="video codec (LeRobot: av1)")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(
            f"{out} exists and is not an empty directory", where="--out", fix="choose a new directory"
        )
    stats = export_run(Path(args.run), out, args.only_interventions, args.codec)
    what = "intervention stretches" if args.only_interventions else "episodes"
    print(
        f"{stats['episodes']} {what}, {stats['frames']} frames ({stats['successes']} from successful episodes; "
        f"{stats['skipped']} unfinished or partly overwritten episodes skipped) written to {out}\n"
        f"inspect it: python -m hilserl_ray.data.inspect {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
