"""Start-up checks that need the disk, the devices or the cluster: after the config validates.

Each check returns (dotted path, value, what is needed) problems, reported all at once like
config errors, so a run never dies minutes in on a missing file or a mismatched dataset.
`--dry-run` runs them all except the dataset read and the cluster's resources.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from hilserl_ray.config import TrainConfig
from hilserl_ray.configio import ConfigError
from hilserl_ray.so101 import JOINT_NAMES

Problem = tuple[str, object, str]
# checked once for the whole run, not once per arm
SHARED_PATHS = ("robot.mjcf", "policy.encoder_weights", "policy.device", "learner.num_gpus")


def check_files(cfg: TrainConfig) -> list[Problem]:
    problems: list[Problem] = []
    if cfg.robot.mjcf is not None and not Path(cfg.robot.mjcf).is_file():
        problems.append(("robot.mjcf", str(cfg.robot.mjcf), "an existing MJCF file"))
    if (
        cfg.robot.type != "sim"
        and not cfg.robots  # a fleet's arms are checked one by one (check_fleet)
        and cfg.robot.calibration is not None
        and not Path(cfg.robot.calibration).is_file()
    ):
        problems.append(
            (
                "robot.calibration",
                str(cfg.robot.calibration),
                "an existing calibration JSON (python -m hilserl_ray.calibrate)",
            )
        )
    problems += check_calibrations(cfg) + check_devices(cfg)
    if cfg.policy.encoder_weights is not None and not Path(cfg.policy.encoder_weights).is_file():
        problems.append(
            ("policy.encoder_weights", str(cfg.policy.encoder_weights), "an existing local weights file")
        )
    return problems


def check_dataset(cfg: TrainConfig) -> list[Problem]:
    """Datasets present, together fitting the offline buffer, each carrying every pipeline feature
    with an action format and joint units that can be decided."""
    problems: list[Problem] = []
    rows = 0
    for root in map(Path, cfg.dataset.all_paths()):
        key = "dataset.path" if root == cfg.dataset.path else "dataset.paths"
        info_path = root / "meta" / "info.json"
        if not info_path.is_file():
            problems.append((key, str(root), "a LeRobot dataset directory containing meta/info.json"))
            continue
        try:
            info = json.loads(info_path.read_text())
        except json.JSONDecodeError as e:
            problems.append((key, str(info_path), f"valid JSON ({e})"))
            continue
        frames, episodes = int(info.get("total_frames", 0)), int(info.get("total_episodes", 0))
        rows += frames + episodes  # the buffer stores each episode's final observation as one more row
        from hilserl_ray.data.mapping import feature_problems

        try:
            found = feature_problems(info, cfg, root)
        except ValueError as e:  # DatasetError: an unreadable dataset
            found = [(key, str(root), f"a readable LeRobot dataset ({e})")]
        if found:
            where = f" [dataset {root}]" if len(cfg.dataset.all_paths()) > 1 else ""
            problems += [(p, v, m + where) for p, v, m in found]
            problems.append(
                (
                    "hint",
                    str(root),
                    f"python -m hilserl_ray.data.inspect {root} --config <your config> prints the overrides that fit",
                )
            )
    cap = cfg.buffer.offline_capacity
    if isinstance(cap, int) and cap <= rows:
        problems.append(
            (
                "buffer.offline_capacity",
                cap,
                f"> {rows} (the datasets' frames + one row per episode end, plus room for online "
                "interventions), or 'auto'",
            )
        )
    return problems


def check_reward_classifier(cfg: TrainConfig) -> list[Problem]:
    """A configured reward classifier exists and was trained for this pipeline's features."""
    from hilserl_ray.reward.spec import check_classifier

    return check_classifier(cfg)


def check_calibrations(cfg: TrainConfig) -> list[Problem]:
    """The follower's and the leader's calibration files: present, every joint, sane ranges."""
    from hilserl_ray.hardware.calibration import CalibrationError, load_calibration

    files = []
    if cfg.robots:  # a fleet: check_fleet checks each arm's own
        return []
    if (
        cfg.robot.type != "sim"
        and cfg.robot.calibration is not None
        and Path(cfg.robot.calibration).is_file()
    ):
        files.append(("robot.calibration", cfg.robot.calibration))
    it = cfg.pipeline.intervention
    if it.source == "leader" and it.leader_calibration is not None:
        files.append(("pipeline.intervention.leader_calibration", it.leader_calibration))
    problems: list[Problem] = []
    for key, path in files:
        try:
            load_calibration(path, JOINT_NAMES)
        except CalibrationError as e:
            problems.append((key, str(path), f"a usable calibration: {e}"))
    return problems


def local_ray(cfg: TrainConfig) -> bool:
    """True when this machine runs the whole run (no cluster address): its devices are the run's."""
    return not (cfg.ray.address or os.environ.get("RAY_ADDRESS"))


def check_devices(cfg: TrainConfig) -> list[Problem]:
    """Device paths that do not exist, and GPU/CUDA requests this machine cannot meet (local Ray)."""
    problems: list[Problem] = []
    if not local_ray(cfg):
        return problems
    if cfg.robot.type != "sim" and not cfg.robots:  # a fleet's arms: check_fleet, one by one
        ports = [("robot.port", cfg.robot.port)]
        if cfg.pipeline.intervention.source == "leader":
            ports.append(("pipeline.intervention.leader_port", cfg.pipeline.intervention.leader_port))
        for key, port in ports:
            if port and port.startswith("/dev/") and not Path(port).exists():
                problems.append(
                    (key, port, "an existing serial port (is the arm plugged in? ls /dev/ttyACM*)")
                )
        for i, cam in enumerate(cfg.env.cameras):
            dev = cam.device
            if isinstance(dev, str) and dev.startswith("/dev/") and not Path(dev).exists():
                problems.append(
                    (
                        f"env.cameras.{i}.device",
                        dev,
                        "an existing camera device (python -m hilserl_ray.find_cameras)",
                    )
                )
    wants_cuda = cfg.policy.device.startswith("cuda") or cfg.learner.num_gpus > 0
    if wants_cuda:
        import torch

        if not torch.cuda.is_available():
            if cfg.policy.device.startswith("cuda"):
                problems.append(
                    ("policy.device", cfg.policy.device, "'cpu' or 'auto': torch sees no CUDA device here")
                )
            if cfg.learner.num_gpus > 0:
                problems.append(("learner.num_gpus", cfg.learner.num_gpus, "0: this machine has no GPU"))
    return problems


def check_ray_address(cfg: TrainConfig) -> list[Problem]:
    """A cluster address that nothing answers at (checked by TCP, so no Ray retry logs)."""
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if not address or address in ("auto", "local"):
        return []
    key = "ray.address" if cfg.ray.address else "RAY_ADDRESS"
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return [(key, address, "host:port of the cluster's head (e.g. 192.168.1.10:6379), or unset")]
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as e:
        return [
            (key, address, f"a Ray head that answers ({e.strerror or e}); start it, or unset for a local Ray")
        ]
    return []


def check_cluster(cfg: TrainConfig, resources: dict) -> None:
    """The cluster can place the learner and every robot actor (else Ray would wait forever)."""
    problems: list[Problem] = []
    gpus = resources.get("GPU", 0)
    if cfg.learner.num_gpus > gpus:
        problems.append(
            ("learner.num_gpus", cfg.learner.num_gpus, f"<= the cluster's {gpus:g} GPUs (0 for CPU)")
        )
    from hilserl_ray.fleet.arms import fleet

    arms = fleet(cfg)
    need = 1 + len(arms)
    if resources.get("CPU", 0) < need:
        problems.append(
            ("ray.num_cpus", resources.get("CPU", 0), f">= {need} CPUs (the learner + one per robot actor)")
        )
    for arm in arms:
        if arm.resource is None or resources.get(arm.resource, 0) >= 1:
            continue
        labels = ",".join(f"{k}={v}" for k, v in arm.label.items())
        problems.append(
            (
                f"robots.{arm.index}.resource" if cfg.robots else "ray.robot_resource",
                arm.resource,
                f"a node offering it (ray start ... --resources '{{\"{arm.resource}\": 1}}' "
                f"--labels {labels}) on arm '{arm.name}'s host",
            )
        )
    if problems:
        raise ConfigError("the Ray cluster", [f"{p}: got {v!r}; {m}" for p, v, m in problems])


def check_dataset_readable(cfg: TrainConfig) -> None:
    """Read and convert the dataset (into the offline cache the learner then loads), so every problem
    the reader can name (truncated parquet or video, missing files or columns, NaN, gaps, video size)
    is a DatasetError here, before Ray, not a dead learner actor."""
    from hilserl_ray.data.convert import load_offline_datasets

    load_offline_datasets(cfg, progress=cfg.logging.progress_bar)


def check_fleet(cfg: TrainConfig) -> list[Problem]:
    """Each arm's own files (calibration) and the one feature spec every arm must give."""
    from hilserl_ray.config import arm_path
    from hilserl_ray.fleet import fleet_spec_problems

    problems: list[Problem] = []
    cameras = [c.name for c in cfg.env.cameras]
    for i, a in enumerate(cfg.robots):
        for path, value, allowed in check_files(cfg.arm_config(i)):
            if path not in SHARED_PATHS:  # shared: reported once
                problems.append((arm_path(i, path, cameras), value, f"{allowed} (arm '{a.name}')"))
    return problems + fleet_spec_problems(cfg)


def preflight(cfg: TrainConfig, source: str = "config") -> None:
    problems = (
        check_files(cfg)
        + check_fleet(cfg)
        + check_dataset(cfg)
        + check_reward_classifier(cfg)
        + check_ray_address(cfg)
    )
    if problems:
        config = source if Path(source).exists() else "<your config>"
        lines = [
            m.replace("<your config>", config) if p == "hint" else f"{p}: got {v!r}; {m}"
            for p, v, m in problems
        ]
        raise ConfigError(source, lines)
