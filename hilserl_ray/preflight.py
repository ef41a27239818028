"""Start-up checks that need the disk: run after the config validates, before Ray starts.

Each check returns (dotted path, value, what is needed) problems, reported all at once like
config errors, so a run never dies minutes in on a missing file or a mismatched dataset.
"""

from __future__ import annotations

import json
from pathlib import Path

from hilserl_ray.config import TrainConfig
from hilserl_ray.configio import ConfigError

Problem = tuple[str, object, str]


def check_files(cfg: TrainConfig) -> list[Problem]:
    problems: list[Problem] = []
    if cfg.robot.mjcf is not None and not Path(cfg.robot.mjcf).is_file():
        problems.append(("robot.mjcf", str(cfg.robot.mjcf), "an existing MJCF file"))
    if (
        cfg.robot.type != "sim"
        and not cfg.robots  # a fleet's arms are checked one by one (check_fleet)
        and cfg.robot.calibration is not None
        and not Path(cfg.robot.calibration).is_file()
    ):
        problems.append(
            (
                "robot.calibration",
                str(cfg.robot.calibration),
                "an existing calibration JSON (python -m hilserl_ray.calibrate)",
            )
        )
    if cfg.policy.encoder_weights is not None and not Path(cfg.policy.encoder_weights).is_file():
        problems.append(
            ("policy.encoder_weights", str(cfg.policy.encoder_weights), "an existing local weights file")
        )
    return problems


def check_dataset(cfg: TrainConfig) -> list[Problem]:
    """Datasets present, together fitting the offline buffer, each carrying every pipeline feature
    with an action format and joint units that can be decided."""
    problems: list[Problem] = []
    rows = 0
    for root in map(Path, cfg.dataset.all_paths()):
        key = "dataset.path" if root == cfg.dataset.path else "dataset.paths"
        info_path = root / "meta" / "info.json"
        if not info_path.is_file():
            problems.append((key, str(root), "a LeRobot dataset directory containing meta/info.json"))
            continue
        try:
            info = json.loads(info_path.read_text())
        except json.JSONDecodeError as e:
            problems.append((key, str(info_path), f"valid JSON ({e})"))
            continue
        frames, episodes = int(info.get("total_frames", 0)), int(info.get("total_episodes", 0))
        rows += frames + episodes  # the buffer stores each episode's final observation as one more row
        from hilserl_ray.data.mapping import feature_problems

        try:
            found = feature_problems(info, cfg, root)
        except ValueError as e:  # DatasetError: an unreadable dataset
            found = [(key, str(root), f"a readable LeRobot dataset ({e})")]
        if found:
            where = f" [dataset {root}]" if len(cfg.dataset.all_paths()) > 1 else ""
            problems += [(p, v, m + where) for p, v, m in found]
            problems.append(
                (
                    "hint",
                    str(root),
                    f"python -m hilserl_ray.data.inspect {root} --config <your config> prints the overrides that fit",
                )
            )
    cap = cfg.buffer.offline_capacity
    if isinstance(cap, int) and cap < rows:
        problems.append(
            (
                "buffer.offline_capacity",
                cap,
                f">= {rows} (the datasets' frames + one row per episode end), or 'auto'",
            )
        )
    return problems


def check_reward_classifier(cfg: TrainConfig) -> list[Problem]:
    """A configured reward classifier exists and was trained for this pipeline's features."""
    from hilserl_ray.reward.spec import check_classifier

    return check_classifier(cfg)


def check_fleet(cfg: TrainConfig) -> list[Problem]:
    """Each arm's own files (calibration) and the one feature spec every arm must give."""
    from hilserl_ray.config import arm_path
    from hilserl_ray.fleet import fleet_spec_problems

    problems: list[Problem] = []
    for i, a in enumerate(cfg.robots):
        for path, value, allowed in check_files(cfg.arm_config(i)):
            if path != "robot.mjcf" and path != "policy.encoder_weights":  # shared: reported once
                problems.append((arm_path(i, path), value, f"{allowed} (arm '{a.name}')"))
    return problems + fleet_spec_problems(cfg)


def preflight(cfg: TrainConfig, source: str = "config") -> None:
    problems = check_files(cfg) + check_fleet(cfg) + check_dataset(cfg) + check_reward_classifier(cfg)
    if problems:
        config = source if Path(source).exists() else "<your config>"
        lines = [
            m.replace("<your config>", config) if p == "hint" else f"{p}: got {v!r}; {m}"
            for p, v, m in problems
        ]
        raise ConfigError(source, lines)
