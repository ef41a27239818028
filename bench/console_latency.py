"""Key to robot actor latency of the operator's console, measured in a real browser.

A robot actor on local Ray (sim pick-cube, the `web` source) serves its page; headless Chromium
(Debian's /usr/bin/chromium, driven by Playwright) takes over and presses and releases an arrow
key N times. The page timestamps each key event (performance.now) and the replies:
  key -> robot actor:   one way, from the page's key handler until the actor's server has fed
                        the key into the intervention source (browser and actor read the same
                        wall clock on one machine)
  ack round trip:       until that ack is back in the page
  key -> applied:       until the first env step whose action included the key has run and the
                        server's notice is back; includes waiting for the next control tick
                        (up to 1/env.fps) and the step itself.
Prints p50 / p99 of both. Target: key -> robot actor < 100 ms on one machine.

    python bench/console_latency.py [--presses 100] [--fps 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402

from hilserl_ray.configio import load_config  # noqa: E402
from hilserl_ray.console.headless import launch  # noqa: E402
from hilserl_ray.runtime.learner import LearnerActor  # noqa: E402
from hilserl_ray.runtime.robot import RobotActor, robot_actor_options  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presses", type=int, default=100)
    p.add_argument("--fps", type=float, default=10.0, help="env.fps: the control rate a step waits for")
    p.add_argument("--chromium", default=None, help="default: $HILSERL_CHROMIUM or /usr/bin/chromium")
    args = p.parse_args(argv)

    from playwright.sync_api import sync_playwright  # optional: only this benchmark drives a browser

    out = tempfile.mkdtemp(prefix="console_latency_")
    cfg = load_config(
        ROOT / "configs/sim_pick_cube.yaml",
        [
            f"--output_dir={out}",
            f"--env.fps={args.fps}",
            "--env.max_episode_steps=100000",
            "--pipeline.intervention.source=web",
            "--policy.hidden_dims=[64,64]",
            "--policy.latent_dim=32",
            "--learner.training_starts=100000000",
            "--actors.env_steps_per_update=null",
        ],
    )
    cfg_dict = cfg.model_dump(mode="json")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        name = f"learner_{uuid.uuid4().hex[:8]}"
        learner = LearnerActor.options(num_cpus=1, name=name).remote(cfg_dict, None)
        ray.get(learner.describe.remote(), timeout=300)
        robot = RobotActor.options(**robot_actor_options(cfg)).remote(cfg_dict, 0, name)
        url = ray.get(robot.console_info.remote(), timeout=300)["url"]
        with sync_playwright() as pw:
            browser = launch(pw, args.chromium)
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function("document.querySelector('img.raw')?.dataset.frames > 0", timeout=120_000)
            page.keyboard.press("Space")
            page.wait_for_function("window.consoleStats.status?.engaged", timeout=60_000)
            page.wait_for_function("window.consoleStats.keyToApplied.length >= 1", timeout=60_000)  # space
            page.evaluate(
                "window.consoleStats.keyToAck = []; window.consoleStats.keyToServer = []; "
                "window.consoleStats.keyToApplied = []"
            )
            t0 = time.monotonic()
            for i in range(args.presses):
                page.keyboard.down("ArrowUp")
                page.wait_for_function(f"window.consoleStats.keyToApplied.length >= {i + 1}", timeout=30_000)
                page.keyboard.up("ArrowUp")
                page.wait_for_function(
                    f"window.consoleStats.keyToAck.length >= {2 * (i + 1)}", timeout=30_000
                )
                time.sleep(0.02)
            ack = page.evaluate("window.consoleStats.keyToAck")
            one_way = page.evaluate("window.consoleStats.keyToServer")
            applied = page.evaluate("window.consoleStats.keyToApplied")
            browser.close()
        ray.get(robot.stop.remote(), timeout=60)
    finally:
        ray.shutdown()
    load = os.getloadavg()[0]
    print(
        f"console latency, {args.presses} arrow presses in headless Chromium, robot actor on local Ray, "
        f"sim at env.fps={args.fps:g}, {time.monotonic() - t0:.0f} s, load average {load:.1f} on "
        f"{os.cpu_count()} cores"
    )
    print(
        f"  key -> robot actor, one way ({len(one_way)} key events): "
        f"p50 {pct(one_way, 50):.1f} ms, p99 {pct(one_way, 99):.1f} ms (target < 100 ms)"
    )
    print(f"  ack round trip: p50 {pct(ack, 50):.1f} ms, p99 {pct(ack, 99):.1f} ms")
    print(
        f"  key -> applied in an env step ({len(applied)} presses): p50 {pct(applied, 50):.1f} ms, "
        f"p99 {pct(applied, 99):.1f} ms (includes up to one control period, {1000 / args.fps:.0f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
