"""Cluster rules: the Ray head answers, and the cluster can place the learner and every robot actor
(else Ray would wait forever)."""

from __future__ import annotations

import os
import socket

from hilserl_ray.config import TrainConfig
from hilserl_ray.errors import Problem
from hilserl_ray.fleet.arms import fleet


def check_ray_address(cfg: TrainConfig) -> list[Problem]:
    """A cluster address that nothing answers at (checked by TCP, so no Ray retry logs)."""
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if not address or address in ("auto", "local"):
        return []
    key = "ray.address" if cfg.ray.address else "RAY_ADDRESS"
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return [Problem(key, address, "host:port of the cluster's head (e.g. 192.168.1.10:6379), or unset")]
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as e:
        why = e.strerror or e
        return [Problem(key, address, f"a Ray head that answers ({why}); start it, or unset for a local Ray")]
    return []


def cluster_problems(cfg: TrainConfig, resources: dict) -> list[Problem]:
    """What `resources` (ray.cluster_resources()) lacks for the learner and the robot actors."""
    problems: list[Problem] = []
    gpus = resources.get("GPU", 0)
    if cfg.learner.num_gpus > gpus:
        problems.append(
            Problem("learner.num_gpus", cfg.learner.num_gpus, f"<= the cluster's {gpus:g} GPUs (0 for CPU)")
        )
    arms = fleet(cfg)
    need = 1 + len(arms)
    if resources.get("CPU", 0) < need:
        problems.append(
            Problem(
                "ray.num_cpus", resources.get("CPU", 0), f">= {need} CPUs (the learner + one per robot actor)"
            )
        )
    for arm in arms:
        if arm.resource is None or resources.get(arm.resource, 0) >= 1:
            continue
        labels = ",".join(f"{k}={v}" for k, v in arm.label.items())
        problems.append(
            Problem(
                f"robots.{arm.index}.resource" if cfg.robots else "ray.robot_resource",
                arm.resource,
                f"a node offering it (ray start ... --resources '{{\"{arm.resource}\": 1}}' "
                f"--labels {labels}) on arm '{arm.name}'s host",
            )
        )
    return problems
