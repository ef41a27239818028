"""The twin assembled: follower and leader buses, physics, reporter, scripted person, cameras, HTTP.

Everything a run needs is at fixed places under the twin's directory (`--dir`) and port, so a
config can name them (configs/so101_twin.yaml) and two twins run side by side with distinct
`--dir` and `--port`:

  <dir>/follower.tty                      robot.port (a symlink to the pty; follows unplug/plug)
  <dir>/leader.tty                        pipeline.intervention.leader_port
  <dir>/calibration/follower.json         robot.calibration (LeRobot format, as the servos hold it)
  <dir>/calibration/leader.json           pipeline.intervention.leader_calibration
  http://127.0.0.1:<port>/<camera>.mjpg   env.cameras.<i>.device
  http://127.0.0.1:<port>/keys            pipeline.intervention.keys_url
  http://127.0.0.1:<port>/status          what the arm feels (also <dir>/twin.jsonl, every event)

With `time_scale` < 1 its world runs slower than the wall clock (`twin/clock.py`) and a run
against it sets the rates `rate_overrides()` gives (env.fps x the scale).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hilserl_ray.config import SIM_CAMERAS, TrainConfig
from hilserl_ray.envs.kinematics import Kinematics
from hilserl_ray.errors import ConfigError
from hilserl_ray.hardware.calibration import save_calibration
from hilserl_ray.twin.arm import ServoMap, TwinArm, make_calibration
from hilserl_ray.twin.clock import TwinClock, rate_flags
from hilserl_ray.twin.human import ScriptedHuman
from hilserl_ray.twin.report import Reporter
from hilserl_ray.twin.server import Cameras, KeyHub, TwinServer
from hilserl_ray.twin.sts3215 import BYTE_TIME_1M, ServoBus


@dataclass
class TwinOptions:
    dir: Path = Path("outputs/twin")
    host: str = "127.0.0.1"
    port: int = 8765
    seed: int = 0
    drop_rate: float = 0.002  # a lost reply every ~500 (the bus retries, as LeRobot's does)
    latency_ms: float = 0.5  # USB-serial adapter turnaround, on top of 10 us per byte at 1 Mbaud
    target: tuple[float, float, float] | None = None  # reach: a fixed target (a state policy can't see it)
    hand_back_steps: int | None = None
    intervene: bool = True
    time_scale: float = 1.0  # the twin's clock runs at this x the wall clock


def check_config(cfg: TrainConfig, source: str) -> None:
    """The twin stands in for a real arm; its cameras are the sim scene's."""
    lines = []
    if cfg.robot.type != "so101":
        lines.append(f"robot.type: got {cfg.robot.type!r}; the twin stands in for a real arm: so101")
    for i, c in enumerate(cfg.env.cameras):
        if c.name not in SIM_CAMERAS:
            lines.append(
                f"env.cameras.{i}.name: got {c.name!r}; the twin renders the scene's cameras {list(SIM_CAMERAS)}"
            )
    if lines:
        raise ConfigError(source, lines)


class Twin:
    def __init__(self, cfg: TrainConfig, opts: TwinOptions, source: str = "twin"):
        check_config(cfg, source)
        self.cfg, self.opts = cfg, opts
        self.dir = Path(opts.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stopping = False
        self.clock = TwinClock(opts.time_scale)
        kin = Kinematics(cfg.robot.mjcf)
        rng = np.random.default_rng(opts.seed)
        self.calibration = {
            "follower": self.dir / "calibration" / "follower.json",
            "leader": self.dir / "calibration" / "leader.json",
        }
        maps = {}
        for which, path in self.calibration.items():
            cal = make_calibration(kin, cfg.robot.motor_ids, rng)
            save_calibration(path, cal)
            maps[which] = ServoMap(cal)
        timing = {
            "reply_delay": opts.latency_ms / 1000,
            "byte_time": BYTE_TIME_1M,
            "drop_rate": opts.drop_rate,
            "clock": self.clock,
        }
        self.bus = ServoBus(
            cfg.robot.motor_ids, link=self.dir / "follower.tty", seed=opts.seed, keep_packets=256, **timing
        )
        self.leader_bus = ServoBus(
            cfg.robot.motor_ids, link=self.dir / "leader.tty", seed=opts.seed + 1, keep_packets=256, **timing
        )
        self.map, self.leader_map = maps["follower"], maps["leader"]
        self.map.program(self.bus)
        self.leader_map.program(self.leader_bus)
        for s in self.leader_bus.servos.values():
            s.external = True  # moved by the person's hand, never by its own motor
        self.arm = TwinArm(cfg, self.bus, self.map, seed=opts.seed, clock=self.clock)
        self.report = Reporter(self.dir / "twin.jsonl", cfg, self.map, kin, self.bus)
        self.keys = KeyHub()
        self.human = ScriptedHuman(
            cfg,
            self.arm,
            self.leader_bus,
            self.leader_map,
            self.keys,
            self.report,
            seed=opts.seed,
            target=opts.target,
            hand_back_steps=opts.hand_back_steps,
            intervene=opts.intervene,
        )
        self.camera_names = [c.name for c in cfg.env.cameras]
        self.cameras = Cameras(self.arm, [(c.name, c.height, c.width, c.fps) for c in cfg.env.cameras])
        try:
            self.server = TwinServer(self, opts.host, opts.port)
        except OSError as e:
            self.bus.close()
            self.leader_bus.close()
            raise ConfigError(
                "command line",
                [f"--port: {opts.host}:{opts.port} is not free ({e}); pick another with --port"],
            ) from e
        self.bus.on_packet = self._on_packet
        self._timers: list[threading.Timer] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Twin:
        self.arm.start()
        self.human.start()
        self.cameras.start()
        self.server.start()
        self.report.event("start", **self.paths())
        return self

    def stop(self) -> None:
        self.stopping = True
        for t in self._timers:
            t.cancel()
        self.report.event("stop", torque=self.report.torque)
        self.server.stop()
        self.cameras.stop()
        self.human.stop()
        self.arm.stop()
        self.bus.close()
        self.leader_bus.close()
        self.report.close()

    def __enter__(self) -> Twin:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _on_packet(self, motor_id: int, inst: int, params: bytes) -> None:
        out = self.report.on_packet(motor_id, inst, params)
        if out is not None:
            self.human.on_goal(*out)

    # ------------------------------------------------------------------ the cable
    def _bus(self, which: str) -> ServoBus:
        if which not in ("follower", "leader"):
            raise ValueError(f"bus: 'follower' or 'leader', got {which!r}")
        return self.bus if which == "follower" else self.leader_bus

    def unplug(self, which: str = "follower", seconds: float | None = None) -> dict:
        self._bus(which).unplug()
        self.report.event("unplug", bus=which, replug_after_s=seconds)
        if seconds is not None:
            t = threading.Timer(seconds, self.plug, args=(which,))
            t.daemon = True
            t.start()
            self._timers.append(t)
        return {"unplugged": which}

    def plug(self, which: str = "follower") -> dict:
        bus = self._bus(which)
        bus.plug()
        self.report.event("plug", bus=which, device=bus.port)
        return {"plugged": which, "device": bus.port}

    # ------------------------------------------------------------------ what to tell the user
    def url(self, path: str) -> str:
        return f"http://{self.opts.host}:{self.server.port}/{path}"

    def paths(self) -> dict:
        return {
            "robot.port": str(self.dir / "follower.tty"),
            "robot.calibration": str(self.calibration["follower"]),
            "pipeline.intervention.leader_port": str(self.dir / "leader.tty"),
            "pipeline.intervention.leader_calibration": str(self.calibration["leader"]),
            "pipeline.intervention.keys_url": self.url("keys"),
            **{f"env.cameras.{i}.device": self.url(f"{n}.mjpg") for i, n in enumerate(self.camera_names)},
            "status": self.url("status"),
            "log": str(self.report.path),
        }

    def rate_overrides(self) -> dict[str, float]:
        """The rates a run against a slowed twin sets (none at scale 1): env.fps and the cameras'
        fps x the scale, so each control step is still 1/env.fps s of twin time."""
        if self.clock.scale == 1:
            return {}
        cams = {f"env.cameras.{i}.fps": self.clock.wall_hz(c.fps) for i, c in enumerate(self.cfg.env.cameras)}
        return {"env.fps": self.clock.wall_hz(self.cfg.env.fps), **cams}

    def overrides(self) -> list[str]:
        """Command-line flags that point a training run at this twin."""
        paths = {k: v for k, v in self.paths().items() if k not in ("status", "log")}
        return [f"--{k}={v}" for k, v in paths.items()] + rate_flags(self.rate_overrides())

    def status(self) -> dict:
        with self.bus.lock:
            commanded = self.arm.goals().round(2).tolist()
            reached = self.arm.joints().round(2).tolist()
            physics_ticks = self.arm.ticks
            physics_s = float(self.arm.data.time)
        frames = self.cameras.rendered
        return {
            "time": round(time.time(), 3),
            "plugged": {"follower": self.bus.plugged, "leader": self.leader_bus.plugged},
            "devices": {"follower": self.bus.port, "leader": self.leader_bus.port},
            "joints": {"names": list(self.map.norm.motors), "commanded": commanded, "reached": reached},
            **self.report.status(),
            "human": self.human.status(),
            "bus": {
                "transactions": self.bus.transactions,
                "dropped_replies": self.bus.dropped,
                "bad_checksums": self.bus.bad_checksums,
                "leader_transactions": self.leader_bus.transactions,
            },
            "physics_ticks": physics_ticks,
            "cameras": {
                "frames": frames,
                "ms_per_frame": round(1000 * self.cameras.render_s / frames, 2) if frames else None,
                "key_clients": self.keys.clients,
            },
            "paths": self.paths(),
            "clock": {
                "time_scale": self.clock.scale,
                "twin_s": round(self.clock.now(), 3),
                "physics_s": round(physics_s, 3),
                "rate_overrides": self.rate_overrides(),
                "robot_hz": self.human.rate.measured_hz,
            },
        }
