"""What tests share: a small reach run, waiting for it, a local Ray, a wrapper in an env's chain."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import ray

ROOT = Path(__file__).resolve().parents[1]

# A reach run small enough for two shared cores: tiny nets, short episodes, training after 50 steps.
SMALL_REACH = [
    "--config",
    "configs/sim_reach.yaml",
    "--env.max_episode_steps=25",
    "--policy.batch_size=32",
    "--policy.hidden_dims=[64,64]",
    "--policy.latent_dim=32",
    "--learner.training_starts=50",
    "--learner.weights_every=5",
    "--checkpoint.every_updates=20",
    "--buffer.online_capacity=4000",
    "--logging.every_seconds=1",
    "--logging.tensorboard=false",
    "--ray.num_cpus=2",
]


def wait_for(pred, timeout: float, what: str, proc: subprocess.Popen | None = None, every: float = 0.2):
    """`pred()`'s first truthy value within `timeout` s; fails early if `proc` exits meanwhile."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited {proc.returncode} while waiting for {what}")
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def start_local_ray(num_cpus: int = 3) -> None:
    """A Ray of this test's own (address='local': never a cluster already on the machine)."""
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )


def find_wrapper(env, name: str):
    """The wrapper of class `name` in `env`'s chain (EEAction, Intervention, ...)."""
    e = env
    while e is not None:
        if type(e).__name__ == name:
            return e
        e = getattr(e, "env", None)
    raise AssertionError(f"no {name} wrapper")
