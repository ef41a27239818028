"""What tests share: the repository root, the environment and command lines of the package's CLIs
in a subprocess, a small reach run, waiting for it (and for its processes to go), the test Rays, a
wrapper in an env's chain."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import ray
from ray._raylet import AuthenticationTokenLoader, Config
from ray.cluster_utils import Cluster

ROOT = Path(__file__).resolve().parents[1]

# One Ray token for the whole test session, set before any Ray starts. Ray 2.60 turns token auth on
# in the first process-local `ray.init()` (RAY_AUTH_MODE=token in this process from then on), so a
# `Cluster` started after it required a token that drivers started in other processes with an
# explicit RAY_ADDRESS never sent. With the mode and token in the environment, every Ray here
# (ray.init, Cluster, `ray start`) and every subprocess agree whatever ran first, and no test
# writes ~/.ray/auth_token.
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
Config.initialize("")  # `import ray` read the mode already: read it again (as Ray does when it turns it on)
AuthenticationTokenLoader.instance().reset_cache()

# The package's CLIs in a subprocess: this tree's package, headless MuJoCo, every Ray worker's line.
ENV = {
    **os.environ,
    "PYTHONPATH": str(ROOT),
    "RAY_DEDUP_LOGS": "0",
    "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
}


def still_running(pids: set[int]) -> set[int]:
    """Those of `pids` that are still processes (not gone, not zombies)."""
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def module_command(module: str, *args: str) -> list[str]:
    """`python -m <module> <args>` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def train_command(*args: str) -> list[str]:
    """`python -m hilserl_ray.train` with `args` (`--config <yaml>` and overrides, e.g. SMALL_REACH)."""
    return module_command("hilserl_ray.train", *args)


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


def start_local_ray(num_cpus: int = 3, **init_args) -> None:
    """A Ray of this test's own (address='local': never a cluster already on the machine), whose
    workers import this tree's package and the tests' modules (actor classes defined in a test)."""
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}},
        **init_args,
    )


def start_cluster(*nodes: dict) -> tuple[Cluster, list]:
    """A multi-node Ray on this machine: a head with 2 CPUs (driver + learner) and one 2-CPU node per
    dict of `add_node` arguments (labels, resources); with the nodes, once all registered."""
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")  # a loaded machine registers slowly
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    added = [cluster.add_node(num_cpus=2, **node) for node in nodes]
    cluster.wait_for_nodes()
    return cluster, added


def driver_env(cluster: Cluster) -> dict:
    """ENV for a driver in another process that joins `cluster`."""
    return {**ENV, "RAY_ADDRESS": cluster.address}


def find_wrapper(env, name: str):
    """The wrapper of class `name` in `env`'s chain (EEAction, Intervention, ...)."""
    e = env
    while e is not None:
        if type(e).__name__ == name:
            return e
        e = getattr(e, "env", None)
    raise AssertionError(f"no {name} wrapper")


def learner_run(out: Path, updates=(10, 20, 30), episodes: list[int] | None = None) -> Path:
    """A small reach run's output dir written by a real `Learner` (no Ray): the episodes of these
    lengths stored first, then a checkpoint per update count."""
    from hilserl_ray.buffer.synthetic import episodes_chunk
    from hilserl_ray.configio import load_config, write_config
    from hilserl_ray.runtime import rundir
    from hilserl_ray.runtime.checkpoint import write_checkpoint
    from hilserl_ray.runtime.learner import Learner

    cfg = load_config(ROOT / "configs" / "sim_reach.yaml", [*SMALL_REACH[2:], f"--output_dir={out}"])
    learner = Learner(cfg.model_dump(mode="json"))
    try:
        if episodes:
            learner.add_chunk(episodes_chunk(learner.spec, episodes), source=("robot0", 0))
        for step in updates:
            learner.counters["updates"] = step

            def write(tmp: Path) -> dict:
                summary = learner.save(str(tmp))
                write_config(cfg, tmp / "config.yaml")
                return summary

            write_checkpoint(out / "checkpoints", step, write)
    finally:
        learner.close()  # releases the replay store
    rundir.claim(cfg)
    write_config(cfg, out / "config.yaml")
    return out
