"""Who owns an output dir: a run claims it with a marker file once it has started, and
`--overwrite` deletes only a directory that is recognisably a run's, never anything else.

Refused for `--overwrite`: the current or home directory (or a parent of either), the dataset
directory or a parent of it, and any directory holding a file a run does not make. A start that
fails before the claim leaves nothing that stops the same command from running again.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from hilserl_ray.config import TrainConfig
from hilserl_ray.errors import ConfigError
from hilserl_ray.fsutil import unwritable

MARKER = ".hilserl_run"
# What a run, its evaluation and its plots write into the output dir (one list, extend it here).
REPLAY_DIR = "replay"  # the durable replay store (buffer/store.py), written as chunks arrive
RUN_ENTRIES = frozenset(
    {
        MARKER,
        REPLAY_DIR,
        "config.yaml",
        "metrics.jsonl",
        "tb",
        "cache",
        "checkpoints",
        "eval.json",
        "eval.mp4",
        "curves.png",
        "console.json",
    }
)
RUN_TRACES = frozenset({MARKER, "checkpoints", "metrics.jsonl"})  # any of these: a run happened here


def replay_dir(output_dir: str | Path) -> Path:
    """Where a run's replay store lives: `online/` and `interventions/` stores under it."""
    return Path(output_dir) / REPLAY_DIR


def _ours(name: str) -> bool:
    return name in RUN_ENTRIES or name.startswith(".config.")  # write_config's temp file


def foreign_entries(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if not _ours(p.name))


def holds_run(out: Path) -> bool:
    return out.is_dir() and any((out / name).exists() for name in RUN_TRACES)


def _is_same_or_parent(a: Path, b: Path) -> bool:
    """True when `a` is `b` or contains it."""
    return a == b or a in b.parents


def check_output_dir(cfg: TrainConfig, resume: bool, overwrite: bool) -> list[str]:
    """Problems with `output_dir` for this start (nothing is touched): one line each."""
    raw = cfg.output_dir
    out = Path(raw).expanduser().resolve()
    key = f"output_dir: got '{raw}'"
    if out.exists() and not out.is_dir():
        return [f"{key}, which is a file; a directory for the run (--output_dir=outputs/<name>)"]
    existing = unwritable(out)
    if existing is not None:
        return [f"{key}; '{existing}' is not writable by this user: pick a directory you can write"]
    if resume or not out.exists():
        return []
    foreign = foreign_entries(out)
    if not overwrite:
        if foreign:
            return [
                f"{key}, which is not empty: it holds files that are not a run's ({_show(foreign)}); "
                "pick a new or empty directory (--output_dir=<new dir>)"
            ]
        if holds_run(out):
            return [
                f"{key}, which is not empty (it holds a run); pass --resume to continue that run, "
                "--overwrite to start over (deletes it), or --output_dir=<new dir>"
            ]
        return []  # empty, or what a start that failed before its claim left (a reusable cache)
    return overwrite_refusals(cfg, out, foreign)


def overwrite_refusals(cfg: TrainConfig, out: Path, foreign: list[str]) -> list[str]:
    key = f"output_dir: got '{cfg.output_dir}'"
    fix = "--overwrite deletes only a run's own directory; pick another --output_dir"
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if _is_same_or_parent(out, cwd):
        return [f"{key}, which is the current directory or holds it; {fix}"]
    if _is_same_or_parent(out, home):
        return [f"{key}, which is the home directory or holds it; {fix}"]
    if cfg.dataset.path is not None and _is_same_or_parent(
        out, Path(cfg.dataset.path).expanduser().resolve()
    ):
        return [f"{key}, which is dataset.path or holds it: --overwrite would delete the dataset; {fix}"]
    if foreign:
        return [f"{key}: --overwrite refuses, it holds files that are not a run's ({_show(foreign)}); {fix}"]
    return []


def _show(names: list[str], n: int = 4) -> str:
    more = f", ... {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def prepare(cfg: TrainConfig, resume: bool, overwrite: bool) -> None:
    """Refuse (exit 2) or clear the output dir for this start; the run claims it later."""
    problems = check_output_dir(cfg, resume, overwrite)
    if problems:
        raise ConfigError("command line", problems)
    out = Path(cfg.output_dir)
    if overwrite and not resume and out.is_dir():
        for entry in out.iterdir():  # every entry is a run's own (checked above)
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def claim(cfg: TrainConfig) -> None:
    """Mark the output dir as this run's: called once the run has actually started."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    marker = out / MARKER
    if not marker.exists():
        marker.write_text(json.dumps({"name": cfg.name, "claimed": time.time()}) + "\n")
