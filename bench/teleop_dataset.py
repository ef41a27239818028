"""A LeRobot teleop dataset of the seed user's size, brought in as it is: how long each step takes.

Writes (in a temp dir) 15,858 frames of so101_follower teleop in LeRobot's layout (`action` =
absolute joint targets in LeRobot's -100..100 range units, no reward column, no camera so the
numbers isolate the action/state work), then prints:
  - `inspect` with a config: seconds to describe it and find the overrides that fit;
  - cold conversion: seconds and frames/s (units + action format decided, FK of every state and
    target, the report, the memory-mapped cache);
  - a second run in another output dir: seconds to load the shared cache (no conversion);
  - the report's clipped share at the sim config's step size.

    .venv/bin/python bench/teleop_dataset.py [--frames 15858] [--episodes 50]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the reach config without the sim's privileged object position (a recorded dataset has none)
STATE_ONLY = ["--env.environment_state=false", "--buffer.online_ratio=0.5"]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fake_sts3215 import write_calibration  # noqa: E402

from hilserl_ray.configio import load_config, parse_overrides  # noqa: E402
from hilserl_ray.data import convert, inspect  # noqa: E402
from hilserl_ray.data.synthetic import write_teleop_dataset  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=15_858)
    p.add_argument("--episodes", type=int, default=50)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cal = write_calibration(tmp / "follower.json", ranges={"wrist_flex": (1348, 2748)})
        per = args.frames // args.episodes
        lengths = [per] * (args.episodes - 1) + [args.frames - per * (args.episodes - 1)]
        t0 = time.perf_counter()
        ds = write_teleop_dataset(
            tmp / "teleop", lengths, cameras={}, units="lerobot_range", calibration=cal, roll_peak=60.0
        )
        print(f"wrote {args.frames} frames, {args.episodes} episodes in {time.perf_counter() - t0:.1f} s")
        config = str(ROOT / "configs" / "sim_reach.yaml")
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()) as out:
            rc = inspect.main([str(ds), "--config", config, f"--robot.calibration={cal}", *STATE_ONLY])
        print(f"inspect --config: {time.perf_counter() - t0:.2f} s (exit {rc})")
        line = out.getvalue().split("train with:\n", 1)[1].strip().splitlines()[0]
        overrides = parse_overrides(shlex.split(line.split(config, 1)[1]))
        base = {**overrides, "dataset.cache_dir": str(tmp / "cache")}
        cfg = load_config(config, {**base, "output_dir": str(tmp / "run1")})
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()) as report:
            (chunk,) = convert.load_offline_datasets(cfg, progress=False)
        cold = time.perf_counter() - t0
        print(f"cold conversion: {cold:.2f} s, {args.frames / cold:,.0f} frames/s")
        print("report:\n" + report.getvalue().rstrip())
        cfg2 = load_config(config, {**base, "output_dir": str(tmp / "run2")})
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            convert.load_offline_datasets(cfg2, progress=False)
        print(f"a new run on the same dataset: {time.perf_counter() - t0:.2f} s (cache hit, no conversion)")
        del chunk


if __name__ == "__main__":
    main()
