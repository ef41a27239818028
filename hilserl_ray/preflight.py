"""Start-up checks after the config loads: the rules of `hilserl_ray.checks`, run the one way
every command runs them, and reported all at once as one `ConfigError` (exit 2).

`preflight` runs the file and dataset stages (the static stage ran in `load_config`); the driver
adds `check_dataset_readable` and, once Ray is up, `check_cluster`. `--dry-run` runs all but those.
"""

from __future__ import annotations

from pathlib import Path

from hilserl_ray.checks.cluster import check_ray_address, cluster_problems
from hilserl_ray.checks.files import check_files, check_fleet
from hilserl_ray.config import TrainConfig
from hilserl_ray.errors import HINT, ConfigError, Problem
from hilserl_ray.reward.spec import check_classifier

__all__ = ["check_cluster", "check_dataset_readable", "preflight"]


def preflight(cfg: TrainConfig, source: str = "config") -> None:
    """Every file, device, dataset and classifier problem of `cfg`, or nothing."""
    problems = (
        check_files(cfg)
        + check_fleet(cfg)
        + dataset_problems(cfg)
        + check_classifier(cfg)
        + check_ray_address(cfg)
    )
    if problems:
        config = source if Path(source).exists() else "<your config>"
        hints = [
            Problem(HINT, p.found, p.fix.replace("<your config>", config)) if p.key == HINT else p
            for p in problems
        ]
        raise ConfigError.of(source, hints)


def dataset_problems(cfg: TrainConfig) -> list[Problem]:
    """The dataset stage, when the config names a dataset."""
    if not cfg.dataset.all_paths():
        return []
    from hilserl_ray.checks.dataset import check_dataset  # heavy (av, cv2, pyarrow): only with datasets

    return check_dataset(cfg)


def check_cluster(cfg: TrainConfig, resources: dict) -> None:
    """The cluster can place the learner and every robot actor (else Ray would wait forever)."""
    problems = cluster_problems(cfg, resources)
    if problems:
        raise ConfigError.of("the Ray cluster", problems)


def check_dataset_readable(cfg: TrainConfig) -> None:
    """Read and convert the dataset (into the offline cache the learner then loads), so every problem
    the reader can name (truncated parquet or video, missing files or columns, NaN, gaps, video size)
    is a DatasetError here, before Ray, not a dead learner actor."""
    from hilserl_ray.data.convert import load_offline_datasets  # heavy (mujoco, av): only to convert

    load_offline_datasets(cfg, progress=cfg.logging.progress_bar)
