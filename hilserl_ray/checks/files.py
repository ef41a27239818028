"""File rules: what the config names on this machine exists and is usable.

The MJCF, the calibrations (follower and leader), the serial ports and cameras, GPU/CUDA requests
(with a local Ray, where this machine's devices are the run's), the encoder weights; for a fleet
each arm's own files and the one feature spec every arm must give.
"""

from __future__ import annotations

import os
from pathlib import Path

from hilserl_ray.config import TrainConfig
from hilserl_ray.envs.pipeline import pipeline_spec
from hilserl_ray.errors import Problem
from hilserl_ray.features import FeatureSpec
from hilserl_ray.fleet.arms import fleet
from hilserl_ray.fleet.expand import arm_config, arm_path
from hilserl_ray.hardware.calibration import CalibrationError, load_calibration
from hilserl_ray.so101 import JOINT_NAMES

# checked once for the whole run, not once per arm
SHARED_PATHS = ("robot.mjcf", "policy.encoder_weights", "policy.device", "learner.num_gpus")


def check_files(cfg: TrainConfig) -> list[Problem]:
    """The MJCF, the calibrations, the devices and the encoder weights the config names."""
    problems: list[Problem] = []
    if cfg.robot.mjcf is not None and not Path(cfg.robot.mjcf).is_file():
        problems.append(Problem("robot.mjcf", str(cfg.robot.mjcf), "an existing MJCF file"))
    calibration = cfg.robot.calibration
    # a fleet's arms are checked one by one (check_fleet)
    if (
        cfg.robot.type != "sim"
        and not cfg.robots
        and calibration is not None
        and not Path(calibration).is_file()
    ):
        problems.append(
            Problem(
                "robot.calibration",
                str(calibration),
                "an existing calibration JSON (python -m hilserl_ray.calibrate)",
            )
        )
    problems += check_calibrations(cfg) + check_devices(cfg)
    weights = cfg.policy.encoder_weights
    if weights is not None and not Path(weights).is_file():
        problems.append(Problem("policy.encoder_weights", str(weights), "an existing local weights file"))
    return problems


def check_calibrations(cfg: TrainConfig) -> list[Problem]:
    """The follower's and the leader's calibration files: present, every joint, sane ranges.

    The follower's is read by the real arm, and by the dataset conversion when the dataset's
    joints may be in LeRobot's -100..100 range units (`dataset.joint_units` not `degrees`)."""
    if cfg.robots:  # a fleet: check_fleet checks each arm's own
        return []
    files = []
    calibration = cfg.robot.calibration
    converts = bool(cfg.dataset.all_paths()) and cfg.dataset.joint_units != "degrees"
    if (cfg.robot.type != "sim" or converts) and calibration is not None and Path(calibration).is_file():
        files.append(("robot.calibration", calibration))
    it = cfg.pipeline.intervention
    if it.source == "leader" and it.leader_calibration is not None:
        files.append(("pipeline.intervention.leader_calibration", it.leader_calibration))
    problems: list[Problem] = []
    for key, path in files:
        try:
            load_calibration(path, JOINT_NAMES)
        except CalibrationError as e:
            use = (
                " (the dataset's joints convert from LeRobot's range units with it)"
                if cfg.robot.type == "sim"
                else ""
            )
            fix = "record the arm's calibration again (python -m hilserl_ray.calibrate), or pass its complete LeRobot calibration JSON"
            problems.append(Problem(key, str(path), f"a usable calibration{use}: {e}; {fix}"))
    return problems


def local_ray(cfg: TrainConfig) -> bool:
    """True when this machine runs the whole run (no cluster address): its devices are the run's."""
    return not (cfg.ray.address or os.environ.get("RAY_ADDRESS"))


def check_devices(cfg: TrainConfig) -> list[Problem]:
    """Device paths that do not exist, and GPU/CUDA requests this machine cannot meet (local Ray)."""
    if not local_ray(cfg):
        return []
    problems = _robot_devices(cfg) if cfg.robot.type != "sim" and not cfg.robots else []
    return problems + _cuda(cfg)


def _robot_devices(cfg: TrainConfig) -> list[Problem]:
    """The serial ports and cameras of one real arm (a fleet's arms: check_fleet, one by one)."""
    problems = []
    ports = [("robot.port", cfg.robot.port)]
    if cfg.pipeline.intervention.source == "leader":
        ports.append(("pipeline.intervention.leader_port", cfg.pipeline.intervention.leader_port))
    for key, port in ports:
        if port and port.startswith("/dev/") and not Path(port).exists():
            problems.append(
                Problem(key, port, "an existing serial port (is the arm plugged in? ls /dev/ttyACM*)")
            )
    for i, cam in enumerate(cfg.env.cameras):
        dev = cam.device
        if isinstance(dev, str) and dev.startswith("/dev/") and not Path(dev).exists():
            problems.append(
                Problem(
                    f"env.cameras.{i}.device",
                    dev,
                    "an existing camera device (python -m hilserl_ray.find_cameras)",
                )
            )
    return problems


def _cuda(cfg: TrainConfig) -> list[Problem]:
    wants_cuda = cfg.policy.device.startswith("cuda") or cfg.learner.num_gpus > 0
    if not wants_cuda:
        return []
    import torch  # heavy: only when the config asks for CUDA

    if torch.cuda.is_available():
        return []
    problems = []
    if cfg.policy.device.startswith("cuda"):
        problems.append(
            Problem("policy.device", cfg.policy.device, "'cpu' or 'auto': torch sees no CUDA device here")
        )
    if cfg.learner.num_gpus > 0:
        problems.append(Problem("learner.num_gpus", cfg.learner.num_gpus, "0: this machine has no GPU"))
    return problems


def check_fleet(cfg: TrainConfig) -> list[Problem]:
    """Each arm's own files (calibration, devices) and the one feature spec every arm must give."""
    problems: list[Problem] = []
    cameras = [c.name for c in cfg.env.cameras]
    for i, a in enumerate(cfg.robots):
        for p in check_files(arm_config(cfg, i)):
            if p.key not in SHARED_PATHS:  # shared: reported once
                problems.append(Problem(arm_path(i, p.key, cameras), p.found, f"{p.fix} (arm '{a.name}')"))
    return problems + fleet_spec_problems(cfg)


def fleet_spec_problems(cfg: TrainConfig) -> list[Problem]:
    """Every arm's pipeline must give the learner's feature spec; name each difference."""
    want = _features(pipeline_spec(cfg))
    problems = []
    for arm in fleet(cfg) if cfg.robots else []:
        got = _features(pipeline_spec(arm.cfg))
        diffs = [
            f"{k}: {_show(got.get(k))} where the shared config gives {_show(want.get(k))}"
            for k in sorted(set(want) | set(got))
            if want.get(k) != got.get(k)
        ]
        if diffs:
            problems.append(
                Problem(
                    f"robots.{arm.index}",
                    arm.name,
                    "the same features as every arm (the policy is shared); this arm's pipeline differs: "
                    + "; ".join(diffs),
                )
            )
    return problems


def _features(spec: FeatureSpec) -> dict[str, tuple]:
    out = {k: (f.shape, f.dtype, f.names) for k, f in spec.observation.items()}
    out[spec.action.name] = (spec.action.shape, spec.action.dtype, spec.action.names)
    return out


def _show(f: tuple | None) -> str:
    return "absent" if f is None else f"{f[0]} {f[1]}"
