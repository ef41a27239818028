"""Start-up checks after the config loads: the rules of `hilserl_ray.checks`, run the one way
every command runs them, and reported all at once as one `ConfigError` (exit 2).

`preflight` runs the file and dataset stages (the static stage ran in `load_config`). A training
start then reads its inputs (`check_inputs`: a resumed run's replay store, every dataset's files)
and, once Ray is up, checks the cluster (`check_cluster`). `--dry-run` runs all but the last,
reading the datasets without decoding or converting them; `RUN_ONLY` says what it cannot check.
"""

from __future__ import annotations

from pathlib import Path

from hilserl_ray.checks.cluster import check_ray_address, cluster_problems
from hilserl_ray.checks.files import check_files, check_fleet
from hilserl_ray.config import TrainConfig
from hilserl_ray.errors import HINT, ConfigError, Problem
from hilserl_ray.reward.spec import check_classifier
from hilserl_ray.runtime.resume import check_replay

__all__ = ["RUN_ONLY", "check_cluster", "check_dataset_readable", "check_inputs", "preflight"]

# What only a real run finds, as `--dry-run` prints it: each is checked where it happens.
RUN_ONLY = (
    "every video frame decoded (the conversion into the offline cache, before Ray: a video damaged "
    "inside rather than cut, images stored in the parquet files)",
    "the cluster's resources once Ray is up (CPUs, GPUs, each arm's node)",
    "the learner loading the checkpoint's weights and buffers (a damaged one falls back to the previous)",
    "each robot actor opening its env: serial bus and servos, cameras, leader arm, gamepad or "
    "keyboard, the classifier's weights in its network, the console's port",
)


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


def check_inputs(cfg: TrainConfig, resume: bool, convert: bool = True) -> list[str]:
    """What a training start reads before Ray, after `preflight` (and `--resume`'s checkpoint
    choice): a resumed run's replay store, then every dataset (`check_dataset_readable`). The run
    and `--dry-run` (`convert=False`) both call this. Returns what was read, a line each."""
    store = check_replay(cfg) if resume else None
    return ([store] if store else []) + check_dataset_readable(cfg, convert)


def check_dataset_readable(cfg: TrainConfig, convert: bool = True) -> list[str]:
    """Every dataset read before Ray, so that every problem the reader can name (truncated parquet
    or video, missing files or columns, NaN, gaps, video size) is a DatasetError here, not a dead
    learner actor. With `convert` and the cache on, each is converted into the offline cache the
    learner then loads; else (a dry run, or no cache: the learner converts) each is read without
    decoding a frame or writing a file (`check_offline_datasets`), which says what it read."""
    if not cfg.dataset.all_paths():
        return []
    from hilserl_ray.data import convert as conversion  # heavy (mujoco, av): only with datasets

    if convert and cfg.dataset.cache:
        conversion.load_offline_datasets(cfg, progress=cfg.logging.progress_bar)
        return []
    return conversion.check_offline_datasets(cfg)
