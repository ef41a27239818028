"""`Console`: one page for one env loop (a robot actor, `record`, `evaluate`), wired in three calls.

console = open_console(cfg, "robot actor 0")              # None when console.enabled is false
env = make_env(cfg, seed, intervention=console.source(make_intervention(cfg, seed)))
env = console.watch(env)                                    # outermost wrapper

(`runtime.collector.open_env` is these calls, for every loop.)
"""

from __future__ import annotations

import secrets
import socket
import time

import gymnasium as gym

from hilserl_ray.config import TrainConfig
from hilserl_ray.console.controls import KEYS, WebControls, WebSource
from hilserl_ray.console.server import ConsoleServer
from hilserl_ray.console.view import LiveView, Watched
from hilserl_ray.envs.intervention import InterventionSource


class Console:
    def __init__(self, cfg: TrainConfig, title: str):
        self.cfg = cfg
        c = cfg.console
        cams = [cam.name for cam in cfg.env.cameras]
        streams = [f"{cam}/{kind}" for cam in cams for kind in ("raw", "policy")]
        self.view = LiveView(streams, title)
        self.controls = WebControls(cfg.pipeline.gripper.discrete, steer=cfg.pipeline.ee_action.enabled)
        self.token = secrets.token_urlsafe(18)
        hello = {
            "title": title,
            "task": cfg.env.task,
            "robot": cfg.robot.type,
            "sounds": cfg.logging.sounds,
            "steer": self.controls.steer,
            "keys": sorted(KEYS),
            "crop": {k: list(v) for k, v in cfg.pipeline.image.crop.items()},
            "cameras": {cam.name: [cam.height, cam.width] for cam in cfg.env.cameras},
            "image_size": list(cfg.pipeline.image.size),
            "fps": cfg.env.fps,
        }
        self.server = ConsoleServer(
            self.view, self.controls, self.token, hello, c.host, c.port, c.fps, c.jpeg_quality
        )
        self.port = self.server.start()
        self._source: WebSource | None = None
        self._counters: tuple[float, int] | None = None

    @property
    def url(self) -> str:
        host = self.cfg.console.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        return f"http://{host}:{self.port}/?token={self.token}"

    def describe(self) -> dict:
        """Where the page is: URL, this host, and the SSH tunnel that reaches a loopback page."""
        host = socket.gethostname()
        return {
            "url": self.url,
            "host": host,
            "port": self.port,
            "tunnel": f"ssh -N -L {self.port}:127.0.0.1:{self.port} {host}",
        }

    def source(self, other: InterventionSource | None) -> WebSource:
        """The `web` source over the configured one; pass it to `make_env(intervention=...)`."""
        self._source = WebSource(self.controls, other)
        return self._source

    def watch(self, env: gym.Env) -> gym.Env:
        """The outermost wrapper: publishes frames and numbers, paces the sim while steered."""
        return Watched(env, self.view, self._source, self.cfg.env.fps, realtime=self.cfg.robot.type == "sim")

    def learner(self, weights_version: int, counters: dict | None = None) -> None:
        """The learner's side for the page: weights version, updates and updates/s."""
        status: dict = {"weights_version": weights_version}
        if counters is not None:
            now, updates = time.monotonic(), int(counters.get("updates", 0))
            if self._counters is not None and now > self._counters[0]:
                status["updates_per_s"] = (updates - self._counters[1]) / (now - self._counters[0])
            self._counters = (now, updates)
            status["updates"] = updates
            status["learner_env_steps"] = int(counters.get("env_steps", 0))
        self.view.update(**status)

    def close(self) -> None:
        self.controls.close()
        self.server.close()


def open_console(cfg: TrainConfig, title: str) -> Console | None:
    return Console(cfg, title) if cfg.console.enabled else None
