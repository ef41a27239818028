"""A fleet config (`robots:` list) expanded into each arm's own single-robot config and placement.

Every arm shares the config; an arm's entry in `robots` overrides only what differs (type, port,
calibration, camera devices, crops, intervention device). `arm_path` maps a key of the expanded
config back to where the user sets it, so a problem found in an arm's config names that entry.
"""

from __future__ import annotations

from hilserl_ray.config import TrainConfig

# key in an arm's expanded config -> the field of its `robots.<i>` entry that sets it
ARM_FIELDS = (
    ("robot.port", "port"),
    ("robot.calibration", "calibration"),
    ("pipeline.image.crop", "crop"),
    ("pipeline.intervention.source", "intervention.source"),
    ("pipeline.intervention.leader_port", "intervention.leader_port"),
    ("pipeline.intervention.leader_calibration", "intervention.leader_calibration"),
    ("pipeline.intervention.keys_url", "intervention.keys_url"),
)


def arm_config(cfg: TrainConfig, i: int) -> TrainConfig:
    """The single-robot config arm `i` of `robots` runs: the shared config with its overrides."""
    a = cfg.robots[i]
    own = {"type": a.type, "port": a.port, "calibration": a.calibration}
    robot = cfg.robot.model_copy(update={k: v for k, v in own.items() if v is not None})
    cams = [
        c.model_copy(update={"device": a.cameras[c.name]}) if c.name in a.cameras else c
        for c in cfg.env.cameras
    ]
    image = cfg.pipeline.image
    if a.crop is not None:
        image = image.model_copy(update={"crop": dict(a.crop)})
    it = cfg.pipeline.intervention.model_copy(update=a.intervention.model_dump(exclude_none=True))
    pipeline = cfg.pipeline.model_copy(update={"image": image, "intervention": it})
    env = cfg.env.model_copy(update={"cameras": cams})
    actors = cfg.actors.model_copy(update={"num_robot_actors": 1})
    return cfg.model_copy(
        update={"robot": robot, "env": env, "pipeline": pipeline, "actors": actors, "robots": []},
        deep=True,
    )


def arm_placement(cfg: TrainConfig, i: int) -> tuple[dict[str, str], str | None]:
    """(node label selector, custom resource) of arm `i` of `robots`; ({}, None) = anywhere."""
    a = cfg.robots[i]
    key = next(iter(cfg.ray.robot_label), "robot")
    if isinstance(a.label, str):
        label = {key: a.label}
    elif a.label is not None:
        label = dict(a.label)
    else:
        real = (a.type or cfg.robot.type) != "sim"
        label = {key: a.name} if real else {}
    resource = a.resource or (f"{cfg.ray.robot_resource}_{a.name}" if label else None)
    return label, resource


def arm_path(i: int, path: str, cameras: list[str]) -> str:
    """An arm config's problem path -> where the user sets it in `robots.<i>` (or the shared key).

    `cameras`: the shared `env.cameras` names, in order (an arm's devices are keyed by name)."""
    for own, field in ARM_FIELDS:
        if path == own or path.startswith(own + "."):
            return f"robots.{i}.{field}{path[len(own) :]}"
    if path.startswith("env.cameras.") and path.endswith(".device"):
        j = int(path.split(".")[2])
        return f"robots.{i}.cameras.{cameras[j] if j < len(cameras) else j}"
    if path == "env.cameras":
        return f"robots.{i}.type"
    return path
