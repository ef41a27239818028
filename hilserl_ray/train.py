"""`python -m hilserl_ray.train --config X [--resume] [--overwrite] [--dry-run] [--a.b=value ...]`.

Validates everything before Ray starts: a config problem prints one line per field and exits 2,
never a traceback (`--debug` shows it). `--dry-run` makes the same checks, reading the datasets
without converting them, prints the resolved config, the feature table, what it read and what
only the real run can check, then exits.
"""

from __future__ import annotations

import argparse
import json
import sys

from hilserl_ray.configio import ConfigError, load_config, to_yaml
from hilserl_ray.data import formats
from hilserl_ray.envs.pipeline import pipeline_spec
from hilserl_ray.errors import command
from hilserl_ray.fleet import fleet
from hilserl_ray.preflight import RUN_ONLY, check_inputs, preflight
from hilserl_ray.runtime.resume import choose_checkpoint
from hilserl_ray.runtime.rundir import check_output_dir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hilserl_ray.train",
        description="Train a HIL-SERL policy. Any config field can be overridden: --policy.batch_size=128",
    )
    p.add_argument("--config", required=True, help="YAML file, or a run's output dir (its config.yaml)")
    p.add_argument("--resume", action="store_true", help="continue from <output_dir>/checkpoints/last")
    p.add_argument("--overwrite", action="store_true", help="start fresh in a non-empty output dir")
    p.add_argument("--dry-run", action="store_true", help="validate, print config and features, exit")
    p.add_argument("--debug", action="store_true", help="show the traceback of a user error")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    if args.resume and args.overwrite:
        raise ConfigError("command line", ["--resume and --overwrite exclude each other: pick one"])
    cfg = load_config(args.config, rest)
    preflight(cfg, source=args.config)
    problems = check_output_dir(cfg, args.resume, args.overwrite)
    if problems:
        raise ConfigError("command line", problems)
    spec = pipeline_spec(cfg)
    if args.dry_run:
        if args.resume:
            choose_checkpoint(cfg)  # a damaged or incompatible checkpoint is named here too
        read = check_inputs(cfg, args.resume, convert=False)
        print(to_yaml(cfg))
        print(spec.table())
        _print_dataset_decisions(cfg)

        for arm in fleet(cfg):
            print(f"robot actor '{arm.name}' ({arm.cfg.robot.type}) -> {arm.where()}")
        named = "the config and the files it names (MJCF, calibrations, devices, weights, reward classifier)"
        print(f"\nread as the run would before Ray: {named}", *read, sep="\n  ")
        print("only the real run checks:", *RUN_ONLY, sep="\n  ")
        print(f"\nconfig OK (feature fingerprint {spec.fingerprint()})")
        return 0
    from hilserl_ray.runtime.driver import run  # Ray and torch: not loaded by --dry-run

    return run(cfg, resume=args.resume, overwrite=args.overwrite)


def _print_dataset_decisions(cfg) -> None:
    """What conversion will decide for each dataset (preflight has checked it can)."""
    from pathlib import Path

    for root in map(Path, cfg.dataset.all_paths()):
        info = json.loads((root / "meta" / "info.json").read_text())
        d, _ = formats.decide(root, info, cfg, *formats.state_and_action_keys(cfg))
        if d is not None:
            print(
                f"\ndataset {root}: action {d.action_format} ({d.action_reason}); joints in {d.joint_units} ({d.units_reason})"
            )


if __name__ == "__main__":
    sys.exit(main())
