"""`--resume`, checked before Ray starts: which checkpoint loads, whether it fits the config, and
whether the run's replay store reads back.

The newest complete checkpoint whose agent files read back is used; a damaged one is skipped
with a warning naming the file (the learner falls back the same way for what only a full load
finds, such as a truncated buffer). A checkpoint whose feature spec or network shape differs
from the config is refused, every difference listed as checkpoint -> config.
"""

from __future__ import annotations

import json
from pathlib import Path

from hilserl_ray.buffer.chunk import chunk_layout
from hilserl_ray.buffer.persist import spec_diff
from hilserl_ray.buffer.store import check_store
from hilserl_ray.config import TrainConfig
from hilserl_ray.envs.pipeline import pipeline_spec
from hilserl_ray.errors import ConfigError, UserError
from hilserl_ray.features import FeatureSpec
from hilserl_ray.runtime.checkpoint import COMPLETE, POINTER, complete_checkpoints, damaged_file, pointed_at
from hilserl_ray.runtime.rundir import replay_dir

# policy fields that change the networks' shapes: a checkpoint cannot be loaded into others
NETWORK_FIELDS = ("hidden_dims", "latent_dim", "num_critics", "encoder", "image_head")


class CheckpointLoadError(UserError):
    """A checkpoint that cannot be loaded; the message names the damaged file."""


def loadable_checkpoints(root: Path, warn=print) -> list[Path]:
    """Complete checkpoints whose files read back, newest first; each damaged one warned about."""
    good, bad = [], []
    for ckpt in complete_checkpoints(root):
        problem = damaged_file(ckpt)
        if problem is None:
            good.append(ckpt)
        else:
            bad.append(problem)
            warn(f"warning: checkpoint {ckpt.name} is damaged: {problem}; trying the previous one")
    if bad and not good:
        raise CheckpointLoadError(
            f"no checkpoint in {root} can be loaded: {'; '.join(bad)}",
            fix="start over with --overwrite, or restore the files",
        )
    named = pointed_at(root)
    if named is not None and not (root / named / COMPLETE).is_file():
        what = "missing" if not (root / named).exists() else "incomplete (no COMPLETE marker)"
        instead = f"using {good[0].name} instead" if good else "no other complete checkpoint"
        warn(f"warning: {root / POINTER} names checkpoint {named!r}, which is {what}; {instead}")
    return good


def compatibility_problems(ckpt: Path, cfg: TrainConfig) -> list[str]:
    """What differs between the checkpoint's features/networks and the config, as old -> new."""

    meta = json.loads((ckpt / "agent" / "agent.json").read_text())
    saved, now = FeatureSpec.from_dict(meta["spec"]), pipeline_spec(cfg)
    problems = []
    if saved.fingerprint() != now.fingerprint():
        diff = spec_diff(saved, now, names=("checkpoint", "config"))
        problems += [f"features: {d}" for d in diff.split("; ")]
    old = meta["policy_config"]
    new = cfg.policy.model_dump(mode="json")
    for key in NETWORK_FIELDS:
        if key in old and old[key] != new[key]:
            problems.append(f"policy.{key}: checkpoint {old[key]!r} -> config {new[key]!r}")
    return problems


def changed_settings(ckpt: Path, cfg: TrainConfig) -> list[str]:
    """The policy's training settings that differ from the checkpoint's: the config's apply."""
    old = json.loads((ckpt / "agent" / "agent.json").read_text())["policy_config"]
    new = cfg.policy.model_dump(mode="json")
    skip = {*NETWORK_FIELDS, "device", "encoder_weights"}  # checked above / where it runs
    return [
        f"policy.{k}: {old[k]!r} -> {new[k]!r}"
        for k in new
        if k in old and k not in skip and old[k] != new[k]
    ]


def choose_checkpoint(cfg: TrainConfig, warn=print) -> list[Path]:
    """Checkpoints to resume from, best first; raises when the config no longer fits them."""
    root = Path(cfg.output_dir) / "checkpoints"
    candidates = loadable_checkpoints(root, warn)
    if candidates:
        problems = compatibility_problems(candidates[0], cfg)
        if problems:
            raise ConfigError(
                f"--resume from {candidates[0]}",
                [
                    *problems,
                    "the checkpoint's networks cannot take these; restore the old settings, or start a new run "
                    "(--overwrite, or another --output_dir)",
                ],
            )
        for change in changed_settings(candidates[0], cfg):
            warn(f"resume: {change} (the config's setting applies from now on)")
    return candidates


def check_replay(cfg: TrainConfig) -> str | None:
    """A resumed run's replay stores, their files checked against each other (StoreDamaged naming
    the file and the fix) as the learner would find them; what was read, or None (not durable)."""
    if not cfg.storage.durable:
        return None
    spec = pipeline_spec(cfg)
    layout, root = chunk_layout(spec), replay_dir(cfg.output_dir)
    sizes = {"online": cfg.buffer.online_capacity, "interventions": 0}  # 0: sized by the datasets
    found = [n for n, cap in sizes.items() if check_store(root / n, spec.fingerprint(), cap, layout)]
    what = " and ".join(found) + " checked (manifest, commit record, ring files)" if found else "none yet"
    return f"replay store {root}: {what}"
