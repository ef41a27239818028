"""`python -m hilserl_ray.twin --config configs/so101_twin.yaml [--dir D] [--port P] [--a.b=value ...]`.

Runs the twin until Ctrl+C and prints where everything is: the config keys to point a training
run at it (configs/so101_twin.yaml already does, for the defaults). Two twins at once: give each
its own --dir and --port, and train each robot with the printed overrides. `--time-scale S` runs
the twin's world at S x the wall clock; the printed overrides then include env.fps x S.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

from hilserl_ray.configio import load_config
from hilserl_ray.errors import ConfigError, command
from hilserl_ray.twin.clock import fmt_hz, parse_time_scale


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hilserl_ray.twin",
        description="A simulated SO-101 on the wire: STS3215 servos on ptys, MJPEG cameras, a scripted person.",
    )
    p.add_argument(
        "--config", required=True, help="the training config (robot.type so101) the twin stands in for"
    )
    p.add_argument(
        "--dir", type=Path, default=Path("outputs/twin"), help="where the ptys, calibrations, log go"
    )
    p.add_argument("--port", type=int, default=8765, help="HTTP port on 127.0.0.1: cameras, keys, status")
    p.add_argument(
        "--seed", type=int, default=0, help="calibration offsets, scene, dropped replies, the person"
    )
    p.add_argument("--drop-rate", type=float, default=0.002, help="probability that a servo reply is lost")
    p.add_argument("--latency-ms", type=float, default=0.5, help="USB adapter turnaround per reply")
    p.add_argument("--target", type=float, nargs=3, default=None, help="reach: a fixed target x y z (metres)")
    p.add_argument("--hand-back-steps", type=int, default=None, help="the person hands back after N steps")
    p.add_argument("--no-intervene", action="store_true", help="the person never takes over (keys only)")
    p.add_argument(
        "--time-scale",
        default="1",
        metavar="S",
        help="0 < S <= 1: the twin's world (physics, servos, person, cameras) runs at S x the wall "
        "clock; run the robot at env.fps x S (a CPU learner then gives more updates per env step)",
    )
    return p


@command
def main(argv: list[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    from hilserl_ray.twin.twin import (  # MuJoCo and the servo model: not loaded by --help or a bad command line
        Twin,
        TwinOptions,
    )

    time_scale = parse_time_scale(args.time_scale)
    if not 0 <= args.drop_rate < 1:
        raise ConfigError("command line", [f"--drop-rate: got {args.drop_rate}; a probability in [0, 1)"])
    cfg = load_config(args.config, rest)
    opts = TwinOptions(
        dir=args.dir,
        port=args.port,
        seed=args.seed,
        drop_rate=args.drop_rate,
        latency_ms=args.latency_ms,
        target=tuple(args.target) if args.target else None,
        hand_back_steps=args.hand_back_steps,
        intervene=not args.no_intervene,
        time_scale=time_scale,
    )
    twin = Twin(cfg, opts, source=args.config)
    with contextlib.suppress(OSError):  # root only: hardware answers in time, whatever the CPU load
        os.nice(-10)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with twin:
        print("[twin] a simulated SO-101 is on the wire:", flush=True)
        for key, value in twin.paths().items():
            print(f"  {key:<42} {value}")
        print("[twin] train against it with these overrides (configs/so101_twin.yaml has the defaults):")
        print("  " + " ".join(twin.overrides()), flush=True)
        if time_scale != 1:
            fps, real = twin.rate_overrides()["env.fps"], cfg.env.fps
            print(
                f"[twin] its clock runs at {time_scale:g} x the wall clock: run the robot with "
                f"--env.fps={fmt_hz(fps)} (the real {fmt_hz(real)} Hz x {time_scale:g}), so each step "
                f"is 1/{fmt_hz(real)} s of twin time (the overrides above include it)",
                flush=True,
            )
        stop.wait()
        print("[twin] stopping", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
