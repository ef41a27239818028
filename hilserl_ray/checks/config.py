"""Static rules: fields that must agree with each other, checked on the config alone.

The schema (`hilserl_ray.config`) types each field; these rules refuse combinations that would
fail minutes into a run or move a robot wrongly. `configio.load_config` runs them on every load;
code that builds a `TrainConfig` itself calls `require_valid`. Rules are grouped by what they
concern: what every arm shares, the one robot an arm config drives, and a fleet's arms.
"""

from __future__ import annotations

from hilserl_ray.config import EE_ONLY_SOURCES, SIM_CAMERAS, TrainConfig
from hilserl_ray.errors import InvalidConfig, Problem
from hilserl_ray.fleet.expand import arm_config, arm_path, arm_placement
from hilserl_ray.gymenv.expert import load_named
from hilserl_ray.gymenv.spaces import gym_problems, is_gym, load_wrapper
from hilserl_ray.so101 import JOINT_NAMES


def config_problems(cfg: TrainConfig) -> list[Problem]:
    """Every static problem of `cfg`: the shared rules, then the robot's (or each fleet arm's)."""
    return shared_problems(cfg) + (fleet_problems(cfg) if cfg.robots else arm_problems(cfg))


def require_valid(cfg: TrainConfig, source: str = "config") -> TrainConfig:
    """`cfg` itself, or `InvalidConfig` listing every static problem."""
    problems = config_problems(cfg)
    if problems:
        raise InvalidConfig.of(source, problems)
    return cfg


# ------------------------------------------------------------------------- what arms share
def shared_problems(cfg: TrainConfig) -> list[Problem]:
    """Rules about what every arm shares."""
    return _cameras(cfg) + _joints(cfg) + _workspace(cfg) + _reward(cfg) + _policy(cfg) + _buffer(cfg)


def _cameras(cfg: TrainConfig) -> list[Problem]:
    names = [c.name for c in cfg.env.cameras]
    if len(set(names)) != len(names):
        return [Problem("env.cameras", names, "camera names must be unique")]
    return []


def _joints(cfg: TrainConfig) -> list[Problem]:
    n = len(JOINT_NAMES)
    problems = []
    if len(cfg.robot.motor_ids) != n:
        problems.append(Problem("robot.motor_ids", cfg.robot.motor_ids, f"one id per joint: {n} ids"))
    if len(cfg.robot.reset_pose_deg) != n:
        problems.append(Problem("robot.reset_pose_deg", cfg.robot.reset_pose_deg, f"{n} values"))
    return problems


def _workspace(cfg: TrainConfig) -> list[Problem]:
    lo, hi = cfg.pipeline.ee_action.workspace_low, cfg.pipeline.ee_action.workspace_high
    if any(a >= b for a, b in zip(lo, hi, strict=True)):
        return [Problem("pipeline.ee_action.workspace_high", hi, f"each bound > workspace_low {lo}")]
    return []


def _reward(cfg: TrainConfig) -> list[Problem]:
    rw = cfg.pipeline.reward
    problems = []
    if rw.classifier is not None and not cfg.env.cameras:
        problems.append(
            Problem("pipeline.reward.classifier", str(rw.classifier), "an image classifier needs env.cameras")
        )
    if rw.min_ee_height_m is not None and not cfg.pipeline.proprio.ee_pose:
        problems.append(
            Problem(
                "pipeline.reward.min_ee_height_m", rw.min_ee_height_m, "needs pipeline.proprio.ee_pose: true"
            )
        )
    return problems


def _policy(cfg: TrainConfig) -> list[Problem]:
    p = cfg.policy
    problems = []
    if p.num_subsample_critics is not None and p.num_subsample_critics > p.num_critics:
        problems.append(
            Problem(
                "policy.num_subsample_critics",
                p.num_subsample_critics,
                f"<= policy.num_critics ({p.num_critics})",
            )
        )
    if p.encoder == "pretrained" and p.encoder_weights is None:
        problems.append(
            Problem("policy.encoder_weights", None, "a local weights file (nothing is downloaded)")
        )
    return problems


def _buffer(cfg: TrainConfig) -> list[Problem]:
    shared = cfg.pipeline.intervention.source
    sources = {a.intervention.source or shared for a in cfg.robots} or {shared}
    if cfg.buffer.online_ratio < 1 and not cfg.dataset.all_paths() and sources == {"none"}:
        return [
            Problem(
                "buffer.online_ratio",
                cfg.buffer.online_ratio,
                "1.0 when there is no dataset and no intervention source (the offline buffer would stay empty)",
            )
        ]
    return []


# ------------------------------------------------------------------- the robot an arm drives
def arm_problems(cfg: TrainConfig) -> list[Problem]:
    """Rules about the one robot this config drives (per arm in a fleet)."""
    if is_gym(cfg):  # its cameras and crops are checked against its spaces
        return _gym_env(cfg) + _source_needs(cfg) + _console(cfg)
    robot = _sim_robot(cfg) if cfg.robot.type == "sim" else _real_robot(cfg)
    return robot + _crops(cfg) + _leader(cfg) + _source_needs(cfg) + _console(cfg)


def _gym_env(cfg: TrainConfig) -> list[Problem]:
    """A registered gymnasium env (env.type gym): what it cannot take, then its spaces against env.gym."""
    problems = []
    if cfg.robot.type != "sim":
        problems.append(
            Problem("robot.type", cfg.robot.type, "'sim' with env.type gym (the env is the robot)")
        )
    if cfg.env.cameras:
        problems.append(
            Problem(
                "env.cameras",
                [c.name for c in cfg.env.cameras],
                "none with env.type gym: its cameras are its image observations (env.gym.observation)",
            )
        )
    if cfg.pipeline.reward.classifier is not None:
        problems.append(
            Problem(
                "pipeline.reward.classifier",
                str(cfg.pipeline.reward.classifier),
                "null with env.type gym: success is the env's own (env.gym.success_key)",
            )
        )
    source = cfg.pipeline.intervention.source
    if source == "leader":
        problems.append(
            Problem(
                "pipeline.intervention.source",
                source,
                "not 'leader' with env.type gym (SO-101 joint targets)",
            )
        )
    expert = cfg.env.gym.expert if cfg.env.gym is not None else None
    if source == "oracle" and expert is None:
        problems.append(
            Problem(
                "env.gym.expert",
                None,
                "the oracle's expert, 'module:function' or 'module:Class' (pipeline.intervention.source oracle)",
            )
        )
    if expert is not None:
        try:
            load_named(expert)
        except ValueError as e:
            problems.append(
                Problem("env.gym.expert", expert, f"an importable 'module:function' or 'module:Class' ({e})")
            )
    wrappers = []
    for wrapper in cfg.env.gym.wrappers if cfg.env.gym is not None else []:
        try:
            load_wrapper(wrapper)
        except ValueError as e:
            wrappers.append(
                Problem(
                    "env.gym.wrappers", wrapper, f"an importable 'module:Class' of a gymnasium.Wrapper ({e})"
                )
            )
    return problems + wrappers + ([] if wrappers else gym_problems(cfg))  # the env is made with them


def _sim_robot(cfg: TrainConfig) -> list[Problem]:
    return [
        Problem("env.cameras", c.name, f"the sim has cameras {list(SIM_CAMERAS)}; rename or remove it")
        for c in cfg.env.cameras
        if c.name not in SIM_CAMERAS
    ]


def _real_robot(cfg: TrainConfig) -> list[Problem]:
    problems = []
    if not cfg.robot.port:
        problems.append(Problem("robot.port", None, "a real robot needs its serial port, e.g. /dev/ttyACM0"))
    if cfg.robot.calibration is None:
        problems.append(
            Problem(
                "robot.calibration",
                None,
                "a real robot needs a calibration JSON (python -m hilserl_ray.calibrate)",
            )
        )
    problems += [
        Problem(
            f"env.cameras.{i}.device",
            None,
            "a real camera needs a device (python -m hilserl_ray.find_cameras)",
        )
        for i, c in enumerate(cfg.env.cameras)
        if c.device is None
    ]
    if cfg.actors.num_robot_actors != 1:
        problems.append(
            Problem("actors.num_robot_actors", cfg.actors.num_robot_actors, "a real arm has one actor: 1")
        )
    return problems


def _crops(cfg: TrainConfig) -> list[Problem]:
    cams = {c.name: c for c in cfg.env.cameras}
    problems = []
    for cam, box in cfg.pipeline.image.crop.items():
        key = f"pipeline.image.crop.{cam}"
        if cam not in cams:
            problems.append(Problem(key, box, f"no such camera; cameras are {list(cams)}"))
            continue
        top, left, h, w = box
        c = cams[cam]
        if top < 0 or left < 0 or h <= 0 or w <= 0 or top + h > c.height or left + w > c.width:
            problems.append(
                Problem(key, box, f"(top, left, height, width) inside the {c.height}x{c.width} image")
            )
    return problems


def _leader(cfg: TrainConfig) -> list[Problem]:
    it = cfg.pipeline.intervention
    if it.source != "leader":
        return []
    problems = []
    if not it.leader_port:
        problems.append(Problem("pipeline.intervention.leader_port", None, "the leader arm's serial port"))
    if it.leader_calibration is None:
        problems.append(
            Problem(
                "pipeline.intervention.leader_calibration",
                None,
                "the leader arm's calibration JSON (python -m hilserl_ray.calibrate --leader)",
            )
        )
    return problems


def _source_needs(cfg: TrainConfig) -> list[Problem]:
    """What the intervention source needs: the sim (oracle), the console and EE actions (web, ...)."""
    source = cfg.pipeline.intervention.source
    ee = cfg.pipeline.ee_action.enabled
    problems = []
    if source == "oracle" and cfg.robot.type != "sim":
        problems.append(
            Problem("pipeline.intervention.source", "oracle", "the scripted oracle needs the sim")
        )
    if source == "web" and not cfg.console.enabled:
        problems.append(
            Problem("console.enabled", False, "true: pipeline.intervention.source='web' is the console")
        )
    if source == "web" and not ee:
        problems.append(
            Problem(
                "pipeline.ee_action.enabled",
                False,
                "true: the console steers the end effector (source 'web')",
            )
        )
    if source in EE_ONLY_SOURCES and not ee:
        problems.append(
            Problem(
                "pipeline.ee_action.enabled",
                False,
                f"true: pipeline.intervention.source '{source}' acts in end-effector deltas "
                "(or --pipeline.intervention.source=none)",
            )
        )
    return problems


def _console(cfg: TrainConfig) -> list[Problem]:
    if cfg.console.port != 0 and cfg.robot.type == "sim" and cfg.actors.num_robot_actors > 1:
        return [
            Problem(
                "console.port",
                cfg.console.port,
                "0 (a free port each): several sim robot actors share a node",
            )
        ]
    return []


# -------------------------------------------------------------------------- a fleet's arms
def fleet_problems(cfg: TrainConfig) -> list[Problem]:
    """Rules about `robots`: names, camera keys, one resource per arm, each arm's own config, pages."""
    problems = _fleet_shape(cfg)
    owners: dict[str | None, str] = {}
    for i, a in enumerate(cfg.robots):
        problems += _arm_cameras(cfg, i)
        resource = arm_placement(cfg, i)[1]
        if resource is not None and resource in owners:
            problems.append(
                Problem(
                    f"robots.{i}.resource",
                    resource,
                    f"each arm its own resource ('{owners[resource]}' has it): one actor per arm",
                )
            )
        owners.setdefault(resource, a.name)
        problems += _arm_own(cfg, i)
    return problems + _fleet_ports(cfg) + _fleet_console(cfg)


def _fleet_ports(cfg: TrainConfig) -> list[Problem]:
    """Two arms that may run on one node must not name one serial port (follower or leader): two
    actors would drive one bus. Arms with different node labels may reuse a device name."""
    problems: list[Problem] = []
    seen: dict[tuple, str] = {}
    for i, a in enumerate(cfg.robots):
        arm = arm_config(cfg, i)
        if arm.robot.type == "sim":
            continue
        node = tuple(sorted(arm_placement(cfg, i)[0].items()))  # () = any node
        for key, port in (
            ("port", arm.robot.port),
            ("intervention.leader_port", arm.pipeline.intervention.leader_port),
        ):
            if not port:
                continue
            for (other_node, other_port), owner in seen.items():
                if other_port == port and (not node or not other_node or node == other_node):
                    problems.append(
                        Problem(
                            f"robots.{i}.{key}",
                            port,
                            f"a port of its own: arm '{owner}' on the same node uses it (give each arm "
                            "its own device, or each its own node label)",
                        )
                    )
                    break
            seen.setdefault((node, port), a.name)
    return problems


def _fleet_shape(cfg: TrainConfig) -> list[Problem]:
    names = [a.name for a in cfg.robots]
    problems = []
    if len(set(names)) != len(names):
        problems.append(Problem("robots", names, "arm names must be unique"))
    if cfg.actors.num_robot_actors != 1:
        problems.append(
            Problem(
                "actors.num_robot_actors",
                cfg.actors.num_robot_actors,
                "1 with `robots` (one actor per entry; add sim entries for more sim actors)",
            )
        )
    return problems


def _arm_cameras(cfg: TrainConfig, i: int) -> list[Problem]:
    cams = {c.name for c in cfg.env.cameras}
    devices = cfg.robots[i].cameras
    return [
        Problem(f"robots.{i}.cameras.{cam}", devices[cam], f"one of env.cameras {sorted(cams)}")
        for cam in devices
        if cam not in cams
    ]


def _arm_own(cfg: TrainConfig, i: int) -> list[Problem]:
    """The robot rules on arm `i`'s expanded config, each named where the user sets it."""
    cameras = [c.name for c in cfg.env.cameras]
    name = cfg.robots[i].name
    return [
        Problem(arm_path(i, p.key, cameras), p.found, f"{p.fix} (arm '{name}')")
        for p in arm_problems(arm_config(cfg, i))
    ]


def _fleet_console(cfg: TrainConfig) -> list[Problem]:
    if not cfg.console.enabled or cfg.console.port == 0:
        return []
    nodes = [tuple(sorted(arm_placement(cfg, i)[0].items())) for i in range(len(cfg.robots))]
    together = [a.name for a, n in zip(cfg.robots, nodes, strict=True) if not n or nodes.count(n) > 1]
    if len(together) > 1:
        return [
            Problem(
                "console.port", cfg.console.port, f"0 (a free port each): arms {together} may share a node"
            )
        ]
    return []
