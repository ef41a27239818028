"""The driver: output dir, Ray, actors, the poll loop, checkpoints and a bounded, safe shutdown.

Ctrl+C (SIGINT) or `ray job stop` (SIGTERM, or SIGINT with RAY_JOB_STOP_SIGNAL=SIGINT) sets a stop
event; the loop then stops the robot actors (hold, torque off), takes a final checkpoint and
exits within `shutdown_timeout_s`. A second signal exits at once.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

import ray

from hilserl_ray.config import TrainConfig
from hilserl_ray.configio import ConfigError, write_config
from hilserl_ray.runtime.checkpoint import latest_checkpoint, write_checkpoint
from hilserl_ray.runtime.learner import LearnerActor
from hilserl_ray.runtime.metrics import MetricsLogger, console_line
from hilserl_ray.runtime.robot import RobotActor, robot_actor_options

log = logging.getLogger("hilserl_ray")

EXIT_OK, EXIT_INTERRUPTED = 0, 130
POLL_S = 0.5


def say(msg: str) -> None:
    print(f"[hilserl_ray] {msg}", flush=True)


def prepare_output_dir(cfg: TrainConfig, resume: bool, overwrite: bool) -> Path | None:
    """Apply the resume/overwrite rules; return the checkpoint to resume from, if any."""
    out = Path(cfg.output_dir)
    ckpt_root = out / "checkpoints"
    if resume:
        last = latest_checkpoint(ckpt_root)
        if last is None and (out / "replay").is_dir():
            say(
                f"warning: --resume but no checkpoint in {ckpt_root}: a fresh agent on the stored replay data"
            )
        elif last is None:
            say(f"warning: --resume but no checkpoint in {ckpt_root}: starting fresh")
        return last
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(
                "command line",
                [
                    f"output_dir: got '{out}', which is not empty; pass --resume to continue that run, "
                    "--overwrite to start over (deletes it), or --output_dir=<new dir>"
                ],
            )
        shutil.rmtree(out)
    return None


class StopSignal:
    """First SIGINT/SIGTERM: graceful stop. Second: exit now."""

    def __init__(self):
        self.event = threading.Event()
        self.reason = ""

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, _frame) -> None:
        if self.event.is_set():
            print("\n[hilserl_ray] second signal: exiting now", file=sys.stderr, flush=True)
            os._exit(EXIT_INTERRUPTED)
        self.reason = signal.Signals(signum).name
        say(f"{self.reason} received: stopping robots, saving a final checkpoint (again to exit at once)")
        self.event.set()


def cfg_host_is_public(cfg: TrainConfig) -> bool:
    return cfg.console.host not in ("127.0.0.1", "localhost", "::1")


def init_ray(cfg: TrainConfig) -> bool:
    """Join a running cluster (config, RAY_ADDRESS or a job's context), else start a local one.

    Returns True when this process started Ray (and so shuts it down)."""
    if ray.is_initialized():
        return False
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return False
    n_cpus = cfg.ray.num_cpus or max(os.cpu_count() or 1, 1 + cfg.actors.num_robot_actors)
    kwargs: dict = {
        # "local": a new Ray of our own, even if another `ray start` cluster runs on this machine
        # (plain ray.init() would join that one, or fail because num_cpus is given)
        "address": "local",
        "num_cpus": max(n_cpus, 1 + cfg.actors.num_robot_actors),
        "include_dashboard": cfg.ray.include_dashboard,
        "dashboard_host": cfg.ray.dashboard_host,
    }
    if cfg.robot.type != "sim":  # one machine with the arm: this node is the robot node
        kwargs["labels"] = dict(cfg.ray.robot_label)
        kwargs["resources"] = {cfg.ray.robot_resource: 1}
    ray.init(**kwargs)
    return True


class Run:
    def __init__(self, cfg: TrainConfig, resume_from: Path | None, stop: StopSignal):
        self.cfg = cfg
        self.stop = stop
        self.out = Path(cfg.output_dir)
        self.ckpt_root = self.out / "checkpoints"
        self.cfg_dict = cfg.model_dump(mode="json")
        self.learner_name = f"hilserl_learner_{uuid.uuid4().hex[:8]}"  # robots find it by name
        self.learner = self._start_learner(resume_from)
        self.robots = [
            RobotActor.options(**robot_actor_options(cfg)).remote(self.cfg_dict, i, self.learner_name)
            for i in range(cfg.actors.num_robot_actors)
        ]
        self.metrics = MetricsLogger(self.out, tensorboard=cfg.logging.tensorboard)
        if cfg.console.enabled:
            self.list_consoles()

    def list_consoles(self, timeout_s: float = 120.0) -> list[dict]:
        """Print each robot actor's console page (one per actor; a restarted actor prints its own
        new one) and keep the list in `<output_dir>/console.json`."""
        pages = []
        for i, r in enumerate(self.robots):
            try:
                info = ray.get(r.console_info.remote(), timeout=timeout_s)
            except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as e:
                say(f"warning: no console page from robot actor {i} ({type(e).__name__})")
                continue
            pages.append(info)
            hint = (
                "" if cfg_host_is_public(self.cfg) else f" (on {info['host']}; elsewhere: {info['tunnel']})"
            )
            say(f"console, robot actor {i}: {info['url']}{hint}")
        (self.out / "console.json").write_text(json.dumps(pages, indent=1))
        return pages

    def _start_learner(self, resume_from: Path | None):
        opts = {
            "num_cpus": 1,
            "num_gpus": self.cfg.learner.num_gpus,
            "max_restarts": 0,
            "name": self.learner_name,
            # OpenMP threads that spin while idle starve the robot actors on a small machine
            # (measured: 0.4-0.95 vs 2.6-4.1 updates/s under load); must be set before torch loads.
            "runtime_env": {"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}},
        }
        learner = LearnerActor.options(**opts).remote(
            self.cfg_dict, str(resume_from) if resume_from else None
        )
        ray.get(learner.ready.remote())  # a failing __init__ raises here, its own exception intact
        d = ray.get(learner.describe.remote())
        # A resumed (or restarted) learner's next checkpoint is due `every_updates` after the one
        # it came from, not at once.
        self.last_ckpt_updates = d["updates"]
        say(
            f"learner up (pid {d['pid']}, device {d['device']}, {d['online']} online + {d['offline']} offline transitions)"
        )
        return learner

    def checkpoint(self, restart: bool = True) -> Path | None:
        """Save now; named for the update count the learner saved at. None if it failed.

        A failed save (disk full, read-only directory) costs only that checkpoint: training
        goes on, the previous one stands and the next try is `every_updates` later. A learner
        that dies during the save is restarted, like one that dies at any other time.
        """
        counters: dict = {}

        def write(tmp: Path) -> dict:
            counters.update(ray.get(self.learner.save.remote(str(tmp))))
            write_config(self.cfg, tmp / "config.yaml")
            return {**counters, "step": counters["updates"]}

        try:
            path = write_checkpoint(self.ckpt_root, None, write, self.cfg.checkpoint.keep_last)
        except ray.exceptions.RayActorError:
            say("warning: the learner died during a checkpoint; the previous checkpoint stands")
            if restart:
                self._restart_learner()
            return None
        except (OSError, ray.exceptions.RayTaskError) as e:
            cause = e.cause if isinstance(e, ray.exceptions.RayTaskError) else e
            say(
                f"warning: checkpoint failed ({type(cause).__name__}: {cause}); training goes on, the "
                f"previous checkpoint stands, next try in {self.cfg.checkpoint.every_updates} updates"
            )
            self.last_ckpt_updates = self._updates_now()
            return None
        self.last_ckpt_updates = counters["updates"]
        say(f"checkpoint {path} (updates {counters['updates']}, env steps {counters['env_steps']})")
        return path

    def _updates_now(self) -> int:
        try:
            return ray.get(self.learner.counters_now.remote(), timeout=60)["updates"]
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            return self.last_ckpt_updates

    def _restart_learner(self) -> None:
        last = latest_checkpoint(self.ckpt_root)
        say(f"learner died: restarting it from {last or 'scratch'}")
        ray.kill(self.learner, no_restart=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # Ray frees a dead actor's name shortly after
            try:
                ray.get_actor(self.learner_name)
            except ValueError:
                break
            self.stop.event.wait(0.2)
        self.learner = self._start_learner(last)  # same name: the robots reconnect by themselves

    def loop(self) -> bool:
        """Poll until total_env_steps or a stop signal. True when the step budget was reached."""
        cfg = self.cfg
        next_log = 0.0
        while not self.stop.event.wait(POLL_S):
            try:
                s = ray.get(self.learner.stats.remote(), timeout=60)
            except ray.exceptions.RayActorError:
                self._restart_learner()
                continue
            if s["updates"] - self.last_ckpt_updates >= cfg.checkpoint.every_updates:
                self.checkpoint()
            now = time.monotonic()
            if now >= next_log:
                next_log = now + cfg.logging.every_seconds
                self.metrics.log(s["env_steps"], {k: v for k, v in s.items() if k != "env_steps"})
                say(console_line(s))
            if s["env_steps"] >= cfg.total_env_steps:
                self.metrics.log(s["env_steps"], {k: v for k, v in s.items() if k != "env_steps"})
                say(console_line(s))
                return True
        return False

    def shutdown(self) -> None:
        """Robots first (safe stop), then the learner, then the final checkpoint. Bounded in time."""
        deadline = time.monotonic() + self.cfg.shutdown_timeout_s
        stops = [r.stop.remote() for r in self.robots]
        try:
            ray.get(stops, timeout=max(1.0, (deadline - time.monotonic()) / 3))
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as e:
            say(f"warning: a robot actor did not stop cleanly ({type(e).__name__})")
        try:
            ray.get(self.learner.stop.remote(), timeout=max(1.0, (deadline - time.monotonic()) / 2))
            self.checkpoint(restart=False)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as e:
            say(f"warning: no final checkpoint ({type(e).__name__}); the previous one stands")
        self.metrics.close()
        for r in self.robots:
            ray.kill(r, no_restart=True)
        ray.kill(self.learner, no_restart=True)


def run(cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> int:
    resume_from = prepare_output_dir(cfg, resume, overwrite)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_config(cfg, out / "config.yaml")
    started = init_ray(cfg)
    stop = StopSignal()
    stop.install()  # after ray.init, which installs its own SIGTERM handler
    try:
        say(f"run '{cfg.name}' -> {out}" + (f" (resuming {resume_from.name})" if resume_from else ""))
        r = Run(cfg, resume_from, stop)
        finished = False
        try:
            finished = r.loop()
        finally:
            r.shutdown()
        say("done" if finished else f"stopped by {stop.reason}")
        return EXIT_OK if finished else EXIT_INTERRUPTED
    finally:
        if started:
            ray.shutdown()
