"""The short version of bench/learn_reach.py: the whole HIL loop learns (slow: `make test-slow`).

Demos + oracle interventions + RLPD + SAC through local Ray for 2,500 env steps; the trained
deterministic policy must beat the untrained one and the episode return must rise.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from run_helpers import ROOT, train_command

sys.path.insert(0, str(ROOT / "bench"))


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.subprocess
def test_reach_learns_beyond_the_untrained_policy(tmp_path):
    from learn_reach import OVERRIDES

    from hilserl_ray.configio import load_config
    from hilserl_ray.envs.pipeline import pipeline_spec
    from hilserl_ray.evaluate import evaluate
    from hilserl_ray.policy import SACAgent
    from hilserl_ray.record import main as record
    from hilserl_ray.rig import make_env
    from hilserl_ray.runtime.metrics import read_metrics

    demos = tmp_path / "demos"
    assert (
        record(
            [
                "--config",
                "configs/sim_reach.yaml",
                "--episodes",
                "5",
                "--out",
                str(demos),
                "--codec",
                "h264",
                "--no-progress",
                "--pipeline.intervention.source=oracle",
                "--seed=100",
            ]
        )
        == 0
    )
    out = tmp_path / "run"
    r = subprocess.run(
        train_command(
            "--config",
            "configs/sim_reach.yaml",
            *OVERRIDES,
            f"--dataset.path={demos}",
            f"--output_dir={out}",
            "--total_env_steps=2500",
            "--logging.tensorboard=false",
        ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

    trained = evaluate(out, episodes=10, video=None)["success_rate"]
    cfg = load_config(out, ["--pipeline.intervention.source=none"])
    untrained, env = SACAgent(pipeline_spec(cfg), cfg.policy, device="cpu"), make_env(cfg, seed=10_000)
    wins = []
    for ep in range(10):
        obs, _ = env.reset(seed=10_000 + ep)
        done, info = False, {}
        while not done:
            obs, _, term, trunc, info = env.step(untrained.select_action(obs, deterministic=True))
            done = term or trunc
        wins.append(info["is_success"])
    assert trained >= 0.5 and trained > np.mean(wins) + 0.2, (trained, np.mean(wins))

    rows = [x for x in read_metrics(out) if "episode_return" in x]
    assert rows[-1]["episode_return"] > rows[0]["episode_return"]
