"""List the cameras OpenCV can open, with the frame size they deliver.

    python -m hilserl_ray.find_cameras                 # every /dev/video* (or indices 0..9)
    python -m hilserl_ray.find_cameras --save-dir out  # also write one frame per camera

Use the printed device (prefer the /dev/v4l/by-id/... path: it survives re-plugging) as
env.cameras.<name>.device, and the size as width/height.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import cv2

from hilserl_ray.errors import UserError, command
from hilserl_ray.hardware.camera import OpenCVCamera, candidate_devices, find_cameras


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m hilserl_ray.find_cameras", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("devices", nargs="*", help="devices to probe (default: all /dev/video*, else 0..9)")
    p.add_argument("--save-dir", type=Path, help="write one RGB frame per camera here as PNG")
    args = p.parse_args(argv)
    devices = [int(d) if d.isdigit() else d for d in args.devices] or candidate_devices()
    found = find_cameras(devices)
    if not found:
        raise UserError(
            f"no camera opened (tried {devices})",
            fix="plug a camera in, check `ls /dev/video*` and that this user may open it (group video)",
        )
    for info in found:
        print(f"{info['device']}\t{info['width']}x{info['height']}\t{info['fps']:.0f} fps")
        if args.save_dir is not None:
            cam = OpenCVCamera("probe", info["device"], info["width"], info["height"], info["fps"] or 30.0)
            cam.start()
            frame, _ = cam.latest()
            cam.stop()
            args.save_dir.mkdir(parents=True, exist_ok=True)
            path = args.save_dir / (re.sub(r"[^A-Za-z0-9_.-]+", "_", str(info["device"])).strip("_") + ".png")
            cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            print(f"\tsaved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
