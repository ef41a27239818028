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
from hilserl_ray.fleet.arms import Arm, fleet, local_node_placement
from hilserl_ray.fleet.watch import FleetWatch
from hilserl_ray.runtime.checkpoint import latest_checkpoint, write_checkpoint
from hilserl_ray.runtime.learner import LearnerActor
from hilserl_ray.runtime.metrics import MetricsLogger, console_line
from hilserl_ray.runtime.robot import RobotActor, robot_actor_options

log = logging.getLogger("hilserl_ray")

EXIT_OK, EXIT_ROBOT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
POLL_S = 0.5


def say(msg: str) -> None:
    print(f"[hilserl_ray] {msg}", flush=True)


def prepare_output_dir(cfg: TrainConfig, resume: bool, overwrite: bool) -> Path | None:
    """Apply the resume/overwrite rules; return the checkpoint to resume from, if any."""
    out = Path(cfg.output_dir)
    ckpt_root = out / "checkpoints"
    if resume:
        last = latest_checkpoint(ckpt_root)
        if last is None:
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
    arms = fleet(cfg)
    n_cpus = cfg.ray.num_cpus or max(os.cpu_count() or 1, 1 + len(arms))
    kwargs: dict = {
        # "local": a new Ray of our own, even if another `ray start` cluster runs on this machine
        # (plain ray.init() would join that one, or fail because num_cpus is given)
        "address": "local",
        "num_cpus": max(n_cpus, 1 + len(arms)),
        "include_dashboard": cfg.ray.include_dashboard,
        "dashboard_host": cfg.ray.dashboard_host,
    }
    labels, resources = local_node_placement(arms)  # one machine with the arms: this node has them
    if labels:
        kwargs["labels"] = labels
    if resources:
        kwargs["resources"] = resources
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
        self.arms = fleet(cfg)
        self.robots = [self._start_robot(arm) for arm in self.arms]
        self.watch = FleetWatch(self.arms, self.robots)
        self.failed = False  # an arm died for good and actors.on_robot_failure says stop
        self.metrics = MetricsLogger(self.out, tensorboard=cfg.logging.tensorboard)
        self.last_ckpt_updates = 0
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
        say(
            f"learner up (pid {d['pid']}, device {d['device']}, {d['online']} online + {d['offline']} offline transitions)"
        )
        return learner

    def _start_robot(self, arm: Arm):
        """One actor per arm, on the arm's node; it runs the arm's own single-robot config."""
        opts = robot_actor_options(self.cfg, arm)
        say(f"arm '{arm.name}' ({arm.cfg.robot.type}) -> {arm.where()}")
        return RobotActor.options(**opts).remote(
            arm.cfg.model_dump(mode="json"), arm.index, self.learner_name, arm.name
        )

    def _watch_fleet(self) -> bool:
        """Report arms dead for good; False when the run must end (policy `stop`, or no arm left)."""
        up, dead = self.watch.poll()
        for h in up:
            node = str(h.last.get("node_id", "?"))[:12]
            say(f"arm '{h.arm.name}' up (pid {h.pid}, node {node}, {h.arm.where()})")
        for h in dead:
            left = len(self.watch.alive)
            say(f"arm '{h.arm.name}' failed for good ({h.dead}); {left} arm(s) left")
            if self.cfg.actors.on_robot_failure == "stop":
                say("actors.on_robot_failure=stop: ending the run")
                self.failed = True
                return False
            if left == 0:
                say("no arm left: ending the run")
                self.failed = True
                return False
        return True

    def checkpoint(self) -> Path:
        counters = ray.get(self.learner.counters_now.remote())

        def write(tmp: Path) -> dict:
            summary = ray.get(self.learner.save.remote(str(tmp)))
            write_config(self.cfg, tmp / "config.yaml")
            return summary

        path = write_checkpoint(self.ckpt_root, counters["updates"], write, self.cfg.checkpoint.keep_last)
        self.last_ckpt_updates = counters["updates"]
        say(f"checkpoint {path} (updates {counters['updates']}, env steps {counters['env_steps']})")
        return path

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
            if not self._watch_fleet():
                return False
            s.update(self.watch.summary())
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
        stops = [h.handle.stop.remote() for h in self.watch.alive]
        try:
            ray.get(stops, timeout=max(1.0, (deadline - time.monotonic()) / 3))
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as e:
            say(f"warning: a robot actor did not stop cleanly ({type(e).__name__})")
        try:
            ray.get(self.learner.stop.remote(), timeout=max(1.0, (deadline - time.monotonic()) / 2))
            self.checkpoint()
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
        if r.failed:
            say("stopped: a robot failed for good")
            return EXIT_ROBOT_FAILED
        say("done" if finished else f"stopped by {stop.reason}")
        return EXIT_OK if finished else EXIT_INTERRUPTED
    finally:
        if started:
            ray.shutdown()
