"""The arms a config describes, each with the single-robot config its actor runs and its placement.

`robots:` lists the arms of a fleet; without it, `robot` is a fleet of one (or, in the sim,
`actors.num_robot_actors` copies of it). A real arm, or any arm given a label, is placed on
the node with that label and takes a custom resource of its own, so no two actors drive it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hilserl_ray.config import TrainConfig
from hilserl_ray.errors import ConfigError
from hilserl_ray.fleet.expand import arm_config, arm_placement


@dataclass(frozen=True)
class Arm:
    index: int
    name: str
    cfg: TrainConfig = field(repr=False)  # a single-robot config (no `robots`)
    label: dict[str, str]  # node label selector; {} = any node
    resource: str | None  # custom resource the actor takes (one owner per arm)

    @property
    def real(self) -> bool:
        return self.cfg.robot.type != "sim"

    def where(self) -> str:
        if not self.label:
            return "any node"
        labels = ",".join(f"{k}={v}" for k, v in self.label.items())
        return f"node {labels}" + (f", resource {self.resource}" if self.resource else "")


def fleet(cfg: TrainConfig) -> list[Arm]:
    if cfg.robots:
        return [Arm(i, a.name, arm_config(cfg, i), *arm_placement(cfg, i)) for i, a in enumerate(cfg.robots)]
    if cfg.robot.type != "sim":
        return [Arm(0, "arm0", cfg, dict(cfg.ray.robot_label), cfg.ray.robot_resource)]
    return [Arm(i, f"arm{i}", cfg, {}, None) for i in range(cfg.actors.num_robot_actors)]


def one_arm(cfg: TrainConfig, name: str | None, source: str) -> TrainConfig:
    """The single-robot config a one-arm command (record, evaluate) runs: the fleet arm `name`
    (`--arm`), or `cfg` itself when it lists no arms."""
    names = [a.name for a in cfg.robots]
    if not names:
        if name is not None:
            raise ConfigError(
                source, [f"--arm: got '{name}'; this config lists no arms (`robots`): drop --arm"]
            )
        return cfg
    if name not in names:
        got = f"got '{name}'" if name is not None else "missing"
        raise ConfigError(
            source,
            [f"--arm: {got}; one of {names} (this config is a fleet; run this on the node with that arm)"],
        )
    return arm_config(cfg, names.index(name))


def local_node_placement(arms: list[Arm]) -> tuple[dict[str, str], dict[str, float]]:
    """Labels and resources a one-machine Ray needs so every pinned arm can be placed on it."""
    labels: dict[str, str] = {}
    resources: dict[str, float] = {}
    for arm in arms:
        for k, v in arm.label.items():
            if labels.setdefault(k, v) != v:
                raise ConfigError(
                    "robots",
                    [
                        f"robots.{arm.index}.label: got {arm.label}; on one machine (no Ray cluster) every "
                        f"arm's node label must agree, but another arm needs {k}={labels[k]}. Give these "
                        "arms one label (the host), or run on a cluster whose nodes carry these labels"
                    ],
                )
        if arm.resource:
            resources[arm.resource] = 1
    return labels, resources
