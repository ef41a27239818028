"""Dataset rules: every configured dataset is there, fits the offline buffer and the pipeline, and
its conversion can be cached.

`check_dataset` reads only each dataset's metadata (meta/info.json, the episode list) and the
values `formats.decide` needs; `preflight.check_dataset_readable` then reads everything (a run
converts it, a dry run reads it without decoding), so a damaged file is named before Ray starts
instead of killing the learner.
"""

from __future__ import annotations

import json
from pathlib import Path

from hilserl_ray.config import TrainConfig
from hilserl_ray.data import formats
from hilserl_ray.data.convert import cache_root
from hilserl_ray.data.lerobot_reader import DatasetError, LeRobotReader, info_problem
from hilserl_ray.data.mapping import feature_problems
from hilserl_ray.errors import HINT, Problem
from hilserl_ray.fsutil import unwritable


def check_dataset(cfg: TrainConfig) -> list[Problem]:
    """Datasets present, together fitting the offline buffer, each carrying every pipeline feature
    with an action format and joint units that can be decided."""
    problems: list[Problem] = []
    rows = 0
    roots = list(map(Path, cfg.dataset.all_paths()))
    for root in roots:
        key = "dataset.path" if root == cfg.dataset.path else "dataset.paths"
        info, found = _read_info(key, root)
        if info is None:
            problems += found
            continue
        rows += int(info.get("total_frames", 0)) + int(info.get("total_episodes", 0))
        try:
            reader = LeRobotReader(root)  # the version, the episode list
        except DatasetError as e:
            problems.append(Problem(key, str(root), f"a readable LeRobot dataset ({e})"))
            continue
        problems += _fits(reader, cfg, key, several=len(roots) > 1)
    return problems + _capacity(cfg, rows) + _cache(cfg)


def _read_info(key: str, root: Path) -> tuple[dict | None, list[Problem]]:
    info_path = root / "meta" / "info.json"
    if not info_path.is_file():
        return None, [Problem(key, str(root), "a LeRobot dataset directory containing meta/info.json")]
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError as e:
        return None, [Problem(key, str(info_path), f"valid JSON ({e})")]
    problem = info_problem(info)
    if problem is not None:
        return None, [Problem(key, str(info_path), problem)]
    return info, []


def _fits(reader: LeRobotReader, cfg: TrainConfig, key: str, several: bool) -> list[Problem]:
    """The dataset against the pipeline's features, with a hint to the command that prints the fix;
    then its joint and action rows against meta/info.json's shapes (the conversion reads them)."""
    root = reader.root
    try:
        found = feature_problems(reader.info, cfg, root, reader)
    except ValueError as e:  # DatasetError: an unreadable dataset
        found = [Problem(key, str(root), f"a readable LeRobot dataset ({e})")]
    if found:
        where = f" [dataset {root}]" if several else ""
        inspect = (
            f"python -m hilserl_ray.data.inspect {root} --config <your config> prints the overrides that fit"
        )
        return [Problem(p, v, m + where) for p, v, m in found] + [Problem(HINT, str(root), inspect)]
    try:
        reader.read([k for k in formats.state_and_action_keys(cfg) if k in reader.features])
    except DatasetError as e:
        return [Problem(key, str(root), f"a readable LeRobot dataset ({e})")]
    return []


def _cache(cfg: TrainConfig) -> list[Problem]:
    """The converted datasets are cached before Ray starts: this user must be able to write there."""
    if not cfg.dataset.cache:
        return []
    root = cache_root(cfg)
    blocked = unwritable(root)
    if blocked is None:
        return []
    return [
        Problem(
            "dataset.cache_dir",
            str(root),
            f"a directory this user can write for the converted datasets ('{blocked}' is not): "
            "--dataset.cache_dir=<dir> (or HILSERL_RAY_CACHE_DIR)",
        )
    ]


def _capacity(cfg: TrainConfig, rows: int) -> list[Problem]:
    """The buffer stores each episode's final observation as one more row than its frames."""
    cap = cfg.buffer.offline_capacity
    if isinstance(cap, int) and cap <= rows:
        return [
            Problem(
                "buffer.offline_capacity",
                cap,
                f"> {rows} (the datasets' frames + one row per episode end, plus room for online "
                "interventions), or 'auto'",
            )
        ]
    return []
