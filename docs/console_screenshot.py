"""Make docs/console.png: the console page of a real sim training run, taken over by a "human".

Starts `python -m hilserl_ray.train` (sim pick-cube, the scripted oracle and the page both as
intervention sources), opens the robot actor's page from `<output_dir>/console.json` in headless
Chromium, waits for the learner to train, takes over, steers a little, drags a crop, and saves
the screenshot. Then stops the run with Ctrl+C (a final checkpoint, as a user would).

    python docs/console_screenshot.py [--out docs/console.png]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "console.png")
    p.add_argument("--chromium", default=None, help="default: $HILSERL_CHROMIUM or /usr/bin/chromium")
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from hilserl_ray.console.headless import launch

    out_dir = Path(tempfile.mkdtemp(prefix="console_shot_"))
    cmd = [
        sys.executable,
        "-m",
        "hilserl_ray.train",
        "--config",
        "configs/sim_pick_cube.yaml",
        f"--output_dir={out_dir}",
        "--overwrite",
        "--name=console_demo",
        "--env.cameras=[{name: gripper_cam, width: 256, height: 256}, {name: front, width: 320, height: 240}]",
        "--env.max_episode_steps=300",
        "--actors.env_steps_per_update=null",
        "--pipeline.image.size=[64,64]",
        "--pipeline.image.crop={gripper_cam: [24, 32, 200, 192]}",
        "--policy.batch_size=32",
        "--policy.hidden_dims=[128,128]",
        "--policy.latent_dim=64",
        "--learner.training_starts=150",
        "--learner.weights_every=10",
        "--logging.tensorboard=false",
        "--ray.num_cpus=2",
    ]
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    try:
        pages = out_dir / "console.json"
        deadline = time.monotonic() + 300
        while not pages.exists() and time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"the run exited with {proc.returncode}")
            time.sleep(1)
        url = json.loads(pages.read_text())[0]["url"]
        with sync_playwright() as pw:
            browser = launch(pw, args.chromium)
            page = browser.new_page(viewport={"width": 1180, "height": 830})
            page.goto(url)
            # episodes done and the learner updating, so every number on the page is live
            page.wait_for_function(
                "window.consoleStats.status?.updates > 20 && window.consoleStats.status?.success_rate !== undefined",
                timeout=600_000,
                polling=1000,
            )
            box = page.locator("figure.cam canvas.overlay").first.bounding_box()
            s = box["width"] / 256
            page.mouse.move(box["x"] + 40 * s, box["y"] + 30 * s)
            page.mouse.down()
            page.mouse.move(box["x"] + 220 * s, box["y"] + 230 * s, steps=8)
            page.mouse.up()
            page.keyboard.press("Space")
            page.wait_for_function("window.consoleStats.status?.engaged", timeout=60_000)
            page.keyboard.down("ArrowUp")
            time.sleep(0.6)
            page.keyboard.up("ArrowUp")
            page.keyboard.down("PageDown")
            time.sleep(1.5)
            page.wait_for_timeout(500)
            page.screenshot(path=str(args.out))
            page.keyboard.up("PageDown")
            browser.close()
        print(f"screenshot {args.out}")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
