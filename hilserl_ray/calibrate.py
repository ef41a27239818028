"""Guided calibration of an SO-101 arm (follower or leader), saved as LeRobot-format JSON.

    python -m hilserl_ray.calibrate --port /dev/ttyACM0 --out calibration/follower.json
    python -m hilserl_ray.calibrate --port /dev/ttyACM1 --out calibration/leader.json --leader

Pose the arm mid-range and press Enter (homing offsets), then move every joint through its range
and press Enter again (ranges). The offsets and limits are written into the servos and the file;
a LeRobot calibration file works here too, and ours works in LeRobot.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from hilserl_ray.errors import UserError, command
from hilserl_ray.hardware.calibration import calibrate, save_calibration
from hilserl_ray.hardware.feetech import FeetechBus
from hilserl_ray.so101 import JOINT_NAMES


def _ids(text: str) -> list[int]:
    ids = [int(x) for x in text.split(",")]
    if len(ids) != len(JOINT_NAMES):
        raise argparse.ArgumentTypeError(
            f"{len(JOINT_NAMES)} comma-separated ids ({', '.join(JOINT_NAMES)}), got {text!r}"
        )
    return ids


class EnterWatcher:
    """`stop()` turns true once Enter is pressed (read on a thread, so recording keeps polling)."""

    def __init__(self, stdin=None):
        self.stdin = stdin or sys.stdin
        self._pressed = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self) -> bool:
        if self._thread is None:
            self._thread = threading.Thread(target=self._wait, daemon=True)
            self._thread.start()
        return self._pressed.is_set()

    def _wait(self) -> None:
        self.stdin.readline()
        self._pressed.set()


@command
def main(argv: list[str] | None = None, stdin=None, out=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hilserl_ray.calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("--port", required=True, help="serial port of the arm's bus, e.g. /dev/ttyACM0")
    p.add_argument("--out", required=True, type=Path, help="calibration JSON to write")
    p.add_argument(
        "--ids", type=_ids, default=[1, 2, 3, 4, 5, 6], help="servo ids in joint order (default 1..6)"
    )
    p.add_argument("--leader", action="store_true", help="a leader arm (stays unpowered)")
    p.add_argument(
        "--timeout-ms", type=float, default=50.0, help="extra wait for a reply (robot.bus_timeout_ms)"
    )
    args = p.parse_args(argv)
    stdin, out = stdin or sys.stdin, out or sys.stdout

    def say(msg: str) -> None:
        print(msg, file=out, flush=True)

    def wait(msg: str) -> None:
        say(msg)
        stdin.readline()

    def show(pos, mins, maxs) -> None:
        row = "  ".join(f"{m[:8]:>8} {mins[m]:4d}<{pos[m]:4d}<{maxs[m]:4d}" for m in pos)
        print("\r" + row, end="", file=out, flush=True)

    bus = FeetechBus(
        args.port, dict(zip(JOINT_NAMES, args.ids, strict=True)), timeout_margin_ms=args.timeout_ms
    )
    try:
        bus.connect()
        cal = calibrate(bus, wait=wait, stop=EnterWatcher(stdin), say=say, on_sample=show)
    except ValueError as e:  # the procedure's own checks (a joint that did not move, ...)
        raise UserError(f"calibration failed: {e}", where=args.port, fix="run it again") from e
    finally:
        if bus.is_connected:
            bus.disable_torque(best_effort=True)
            bus.close()
    save_calibration(args.out, cal)
    say(
        f"\nsaved {args.out} ({'leader' if args.leader else 'follower'}): "
        + ", ".join(f"{m} {c.range_min}..{c.range_max}" for m, c in cal.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
