"""`python -m hilserl_ray.convert --config X [--a.b=value ...]`: build (or check) the offline cache.

The command of `data.convert` (also run as `python -m hilserl_ray.data.convert`): it sits above
data/ because it runs the preflight checks before converting.
"""

from __future__ import annotations

import argparse
import logging
import time

from hilserl_ray.configio import ConfigError, load_config
from hilserl_ray.data.convert import load_offline_datasets
from hilserl_ray.errors import command
from hilserl_ray.preflight import preflight


@command
def main(argv: list[str] | None = None) -> int:
    """`python -m hilserl_ray.data.convert --config X [--a.b=value ...]`: build (or check) the offline cache."""
    p = argparse.ArgumentParser(prog="python -m hilserl_ray.data.convert", description=main.__doc__)
    p.add_argument("--config", required=True)
    args, rest = p.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_config(args.config, rest)
    if not cfg.dataset.all_paths():
        raise ConfigError(args.config, ["dataset.path: not set; nothing to convert (--dataset.path=DIR)"])
    preflight(cfg, source=args.config)
    t0 = time.perf_counter()
    for chunk in load_offline_datasets(cfg, progress=cfg.logging.progress_bar):
        mb = sum(v.nbytes for v in chunk.values()) / 1e6
        n = int((~chunk["is_last"]).sum())
        print(
            f"{n} transitions, {int(chunk['is_last'].sum())} episodes, {mb:.0f} MB, ready in {time.perf_counter() - t0:.1f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
