"""The driver: output dir, Ray, actors, the poll loop, checkpoints and a bounded, safe shutdown.

Everything that can be checked is checked before Ray starts (config, dataset, resume checkpoint,
output dir); the learner and every robot actor are awaited before the run claims its output dir.
Ctrl+C (SIGINT) or `ray job stop` (SIGTERM, or SIGINT with RAY_JOB_STOP_SIGNAL=SIGINT) sets a stop
event; the loop then stops the robot actors (hold, torque off), takes a final checkpoint and
exits within `shutdown_timeout_s`. During start-up it abandons the start (exit 130, nothing
saved). A second signal exits at once. A robot actor that fails for good, or no env step for
`actors.no_step_timeout_s`, ends the run the same safe way with its error as one line (exit 1,
2 when the cause is a setting); in a fleet with `actors.on_robot_failure: continue` the other arms
train on. A full disk under `output_dir` (replay rows, a checkpoint, metrics) ends it the same safe
way, exit 2, with one line naming the directory and the fix: the replay store keeps every
acknowledged transition, and the final checkpoint is written if it fits (older checkpoints making
room for it, one at a time, the newest of them always kept), else the newest complete one stands.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

import ray

from hilserl_ray.config import TrainConfig
from hilserl_ray.configio import write_config
from hilserl_ray.errors import DiskFull, UserError, disk_full_as, no_space, user_error
from hilserl_ray.fleet.arms import Arm, fleet, local_node_placement
from hilserl_ray.preflight import check_cluster, check_inputs
from hilserl_ray.runtime import rundir
from hilserl_ray.runtime.checkpoint import (
    damaged_file,
    latest_checkpoint,
    make_room,
    set_aside_damaged,
    write_checkpoint,
)
from hilserl_ray.runtime.learner import LearnerActor
from hilserl_ray.runtime.metrics import MetricsLogger, console_line
from hilserl_ray.runtime.procs import descendants
from hilserl_ray.runtime.resume import CheckpointLoadError, choose_checkpoint
from hilserl_ray.runtime.robot import RobotActor, robot_actor_options
from hilserl_ray.runtime.supervise import RobotSupervisor, RunFailed

log = logging.getLogger("hilserl_ray")

EXIT_OK, EXIT_INTERRUPTED = 0, 130
POLL_S = 0.5


def say(msg: str) -> None:
    print(f"[hilserl_ray] {msg}", flush=True)


class StopSignal:
    """First SIGINT/SIGTERM: graceful stop (during start-up: abandon the start). Second: exit now,
    taking this run's own local Ray processes along."""

    def __init__(self):
        self.event = threading.Event()
        self.reason = ""
        self.starting = True
        self.owns_ray = False

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, _frame) -> None:
        if self.event.is_set():
            print("\n[hilserl_ray] second signal: exiting now", file=sys.stderr, flush=True)
            if self.owns_ray:
                kill_descendants()
            os._exit(EXIT_INTERRUPTED)
        self.reason = signal.Signals(signum).name
        if self.starting:
            say(f"{self.reason} received: abandoning the start-up (again to exit at once)")
        else:
            say(f"{self.reason} received: stopping robots, saving a final checkpoint (again to exit at once)")
        self.event.set()

    def check(self) -> None:
        """During start-up: a stop request ends the start here (exit 130, nothing claimed)."""
        if self.event.is_set():
            raise KeyboardInterrupt


def kill_descendants() -> None:
    """SIGKILL every process below this one (the local Ray this driver started)."""
    for pid in descendants(os.getpid()):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def wait_ref(ref, stop: StopSignal, timeout_s: float | None = None):
    """ray.get that a start-up stop request interrupts (a learner can take minutes to build)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        ready, _ = ray.wait([ref], timeout=POLL_S)
        if ready:
            return ray.get(ref)
        stop.check()
        if deadline is not None and time.monotonic() > deadline:
            raise ray.exceptions.GetTimeoutError(f"no reply within {timeout_s:g} s")


def cfg_host_is_public(cfg: TrainConfig) -> bool:
    return cfg.console.host not in ("127.0.0.1", "localhost", "::1")


def init_ray(cfg: TrainConfig) -> bool:
    """Join a running cluster (config, RAY_ADDRESS or a job's context), else start a local one.

    Returns True when this process started Ray (and so shuts it down)."""
    if ray.is_initialized():
        return False
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        where = "ray.address" if cfg.ray.address else "RAY_ADDRESS"
        try:
            ray.init(address=address, log_to_driver=True)
        except ConnectionError as e:
            raise UserError(
                f"no Ray cluster answers at {address!r} ({' '.join(str(e).split())[:200]})",
                where=where,
                fix="start the cluster (ray start --head / ray up cluster.yaml), or unset it for a local Ray",
            ) from None
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
    # A loaded machine can take longer than Ray's default to register its raylet; the GCS reads this.
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")
    try:
        ray.init(**kwargs)
    except Exception as e:  # a half-started local Ray must not outlive this process
        kill_descendants()
        raise UserError(
            f"the local Ray did not start ({' '.join(str(e).split())[:200]})",
            where="ray",
            fix="try again; if it keeps failing, check free memory, CPU load and space in /tmp",
        ) from e
    return True


class Run:
    def __init__(self, cfg: TrainConfig, stop: StopSignal):
        self.cfg = cfg
        self.stop = stop
        self.out = Path(cfg.output_dir)
        self.ckpt_root = self.out / "checkpoints"
        self.cfg_dict = cfg.model_dump(mode="json")
        self.learner_name = f"hilserl_learner_{uuid.uuid4().hex[:8]}"  # robots find it by name
        self.learner = None
        self.arms = fleet(cfg)
        self.robots: RobotSupervisor | None = None
        self.metrics: MetricsLogger | None = None
        self.last_saved: dict | None = None  # counters of the newest checkpoint: never save it twice
        self.last_try_updates = 0  # updates at the last save, failed or not: the next is every_updates on
        self.unloadable: dict[Path, str] = {}  # checkpoints the learner could not load: why
        self.resumed_from: Path | None = None
        self.no_final: DiskFull | None = None  # the final checkpoint found the disk full

    def list_consoles(self, timeout_s: float = 120.0) -> list[dict]:
        """Print each robot actor's console page (one per actor; a restarted actor prints its own
        new one) and keep the list in `<output_dir>/console.json`."""
        pages = []
        for i, r in enumerate(self.robots.handles):
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

    def start(self, candidates: list[Path]) -> None:
        """Learner (resuming the first checkpoint that loads), then every robot actor, awaited."""
        self.learner = self._start_learner(candidates)
        self.stop.check()
        sup = RobotSupervisor(
            lambda i: self._start_robot(self.arms[i]),
            len(self.arms),
            self.cfg.actors.max_restarts,
            arms=[a.name for a in self.arms],
            fleet=bool(self.cfg.robots),
        )
        self.robots = sup
        sup.await_start(self.cfg.actors.start_timeout_s, stop=self.stop.check)
        self.metrics = MetricsLogger(self.out, tensorboard=self.cfg.logging.tensorboard)

    def _start_learner(self, candidates: list[Path]):
        opts = {
            "num_cpus": 1,
            "num_gpus": self.cfg.learner.num_gpus,
            "max_restarts": 0,
            "name": self.learner_name,
            # OpenMP threads that spin while idle starve the robot actors on a small machine
            # (measured: 0.4-0.95 vs 2.6-4.1 updates/s under load); must be set before torch loads.
            "runtime_env": {"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}},
        }
        tries: list[Path | None] = list(candidates) or [None]
        for i, resume_from in enumerate(tries):
            learner = LearnerActor.options(**opts).remote(
                self.cfg_dict, str(resume_from) if resume_from else None
            )
            try:
                wait_ref(learner.ready.remote(), self.stop)  # a failing __init__ raises here, intact
            except Exception as e:
                err = user_error(e)
                ray.kill(learner, no_restart=True)
                if isinstance(err, CheckpointLoadError) and resume_from is not None:
                    self.unloadable[resume_from] = err.message()
                if isinstance(err, CheckpointLoadError) and i + 1 < len(tries):
                    say(f"warning: {err.message()}; trying the previous checkpoint {tries[i + 1].name}")
                    self._await_name_free()
                    continue
                raise
            except BaseException:
                ray.kill(learner, no_restart=True)
                raise
            d = ray.get(learner.describe.remote())
            self.resumed_from = resume_from
            if resume_from is not None:
                self.last_saved = ray.get(learner.counters_now.remote())
                self.last_try_updates = self.last_saved["updates"]
            say(
                f"learner up (pid {d['pid']}, device {d['device']}, {d['online']} online + {d['offline']} offline transitions)"
                + (f", resumed {resume_from.name}" if resume_from else "")
            )
            return learner
        raise AssertionError("unreachable")

    def _start_robot(self, arm: Arm):
        """One actor per arm, on the arm's node; it runs the arm's own single-robot config."""
        opts = robot_actor_options(self.cfg, arm)
        say(f"arm '{arm.name}' ({arm.cfg.robot.type}) -> {arm.where()}")
        return RobotActor.options(**opts).remote(
            arm.cfg.model_dump(mode="json"), arm.index, self.learner_name, arm.name
        )

    def _watch_fleet(self) -> RunFailed | None:
        """Report arms up and arms dead for good; a RunFailed when the run must end (policy
        `stop`, or no arm left)."""
        for r in self.robots.poll_stats():
            node = str(r.stats.get("node_id", "?"))[:12]
            say(f"arm '{r.arm}' up (pid {r.stats.get('pid')}, node {node}, {self.arms[r.index].where()})")
        i = self.robots.poll()
        if i is None:
            return None
        failed = self.robots.robots[i].dead
        left = len(self.robots.alive)
        say(f"arm '{self.arms[i].name}' failed for good ({failed.what}); {left} arm(s) left")
        if self.cfg.actors.on_robot_failure == "stop" and left > 0:
            failed.fix = "actors.on_robot_failure=stop ends the run when one arm fails; 'continue' trains on"
            return failed
        if left == 0:
            return failed
        return None

    def _await_name_free(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # Ray frees a dead actor's name shortly after
            try:
                ray.get_actor(self.learner_name)
            except ValueError:
                return
            time.sleep(0.2)

    def checkpoint(self, restart: bool = True) -> Path | None:
        """Save now; named for the update count the learner saved at. None if nothing new or failed.

        A failed save (read-only directory, ...) costs only that checkpoint: training goes on,
        the previous one stands and the next try is `every_updates` later; a full disk raises
        DiskFull (the run stops). A learner that dies during the save is restarted (`restart`),
        like one that dies at any other time.
        """
        try:
            now = ray.get(self.learner.counters_now.remote())
            if now == self.last_saved:  # nothing new: keep the checkpoint that holds it
                return None
            counters: dict = {}

            def write(tmp: Path) -> dict:
                counters.update(ray.get(self.learner.save.remote(str(tmp))))
                write_config(self.cfg, tmp / "config.yaml")
                return {**counters, "step": counters["updates"]}

            keep = self.cfg.checkpoint.keep_last
            path = write_checkpoint(self.ckpt_root, None, write, keep, check=damaged_file, report=say)
        except ray.exceptions.RayActorError:
            say("warning: the learner died during a checkpoint; the previous checkpoint stands")
            if restart:
                self._restart_learner()
            return None
        except (OSError, ray.exceptions.RayTaskError) as e:
            cause = e.cause if isinstance(e, ray.exceptions.RayTaskError) else e
            if no_space(cause):
                raise DiskFull(self.out, "writing a checkpoint") from None
            say(
                f"warning: checkpoint failed ({type(cause).__name__}: {cause}); training goes on, the "
                f"previous checkpoint stands, next try in {self.cfg.checkpoint.every_updates} updates"
            )
            self.last_try_updates = now["updates"]
            return None
        self.last_saved = {k: v for k, v in counters.items() if k != "stall_s"}
        self.last_try_updates = counters["updates"]
        say(f"checkpoint {path} (updates {counters['updates']}, env steps {counters['env_steps']})")
        return path

    def final_checkpoint(self) -> None:
        """The last save. On a full disk the oldest checkpoints make room for it, one at a time
        (it holds what the replay store holds; they are older), never the newest, which stands
        if it still does not fit."""
        while True:
            try:
                self.checkpoint(restart=False)
                self.no_final = None
                return
            except DiskFull as e:
                self.no_final = e
            spared = make_room(self.ckpt_root, check=damaged_file)
            if spared is None:
                break
            say(f"disk full: deleted the oldest checkpoint {spared.name} to make room for the final one")
        last = latest_checkpoint(self.ckpt_root)
        say(f"warning: no room for a final checkpoint; {last.name if last else 'no checkpoint'} stands")

    def _restart_learner(self) -> None:
        last = latest_checkpoint(self.ckpt_root)
        say(f"learner died: restarting it from {last or 'scratch'}")
        ray.kill(self.learner, no_restart=True)
        self._await_name_free()
        self.learner = self._start_learner([last] if last else [])  # same name: robots reconnect

    def loop(self) -> RunFailed | DiskFull | bool:
        """Poll until total_env_steps (True), a stop signal (False) or a failure (RunFailed, or
        DiskFull: the learner could not store a chunk). A checkpoint or metrics line that finds
        the disk full raises DiskFull.

        `idle_s`: seconds without a new env step, counted only while no robot is paused from its
        console (`actors.no_step_timeout_s`): a pause holds the count where it was."""
        cfg = self.cfg
        next_log = 0.0
        last_steps, idle_s, last_poll = -1, 0.0, time.monotonic()
        while not self.stop.event.wait(POLL_S):
            try:
                s = ray.get(self.learner.stats.remote(), timeout=60)
            except ray.exceptions.RayActorError:
                self._restart_learner()
                idle_s, last_poll = 0.0, time.monotonic()
                continue
            full = s.pop("disk_full", None)
            if full is not None:
                return full
            failed = self._watch_fleet()
            if failed is not None:
                return failed
            s.update(self.robots.metrics())
            now = time.monotonic()
            if s["env_steps"] != last_steps:
                last_steps, idle_s = s["env_steps"], 0.0
            elif not self.robots.any_paused():  # paused from the console: no steps on purpose
                idle_s += now - last_poll
            last_poll = now
            if idle_s > cfg.actors.no_step_timeout_s:
                detail = self.robots.summary()
                return RunFailed(
                    f"no env step for {cfg.actors.no_step_timeout_s:g} s (actors.no_step_timeout_s)"
                    + (f"; {detail}" if detail else ""),
                    fix="check the robot actors' output above; raise actors.no_step_timeout_s if resets take longer",
                )
            if s["updates"] - self.last_try_updates >= cfg.checkpoint.every_updates:
                self.checkpoint()
            if now >= next_log:
                next_log = now + cfg.logging.every_seconds
                self.metrics.log(s["env_steps"], {k: v for k, v in s.items() if k != "env_steps"})
                say(console_line(s))
            if s["env_steps"] >= cfg.total_env_steps:
                self.metrics.log(s["env_steps"], {k: v for k, v in s.items() if k != "env_steps"})
                say(console_line(s))
                return True
        return False

    def stop_robots(self, timeout_s: float) -> None:
        """Every robot actor's safe stop (hold, torque off), bounded in time, then the actors go."""
        if self.robots is None:
            return
        stops = [h.stop.remote() for h in self.robots.handles]
        try:
            ray.get(stops, timeout=max(1.0, timeout_s))
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as e:
            say(f"warning: a robot actor did not stop cleanly ({type(e).__name__})")
        for h in self.robots.handles:
            ray.kill(h, no_restart=True)

    def abort(self) -> None:
        """A start that failed: robots made safe, actors gone, nothing saved."""
        self.stop_robots(self.cfg.shutdown_timeout_s / 2)
        if self.learner is not None:
            ray.kill(self.learner, no_restart=True)

    def shutdown(self) -> None:
        """Robots first (safe stop), then the learner, then the final checkpoint. Bounded in time."""
        deadline = time.monotonic() + self.cfg.shutdown_timeout_s
        self.stop_robots((deadline - time.monotonic()) / 3)
        try:
            ray.get(self.learner.stop.remote(), timeout=max(1.0, (deadline - time.monotonic()) / 2))
            self.final_checkpoint()
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as e:
            say(f"warning: no final checkpoint ({type(e).__name__}); the previous one stands")
        if self.metrics is not None:
            self.metrics.close()
        ray.kill(self.learner, no_restart=True)


def run(cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> int:
    """One training run: checks, Ray, start (awaited), claim the output dir, loop, safe shutdown."""
    candidates = choose_checkpoint(cfg, warn=say) if resume else []
    if resume and not candidates:
        say(f"warning: --resume but no checkpoint in {Path(cfg.output_dir) / 'checkpoints'}: starting fresh")
    rundir.prepare(cfg, resume, overwrite)
    # the replay store and every dataset, before any actor exists (after prepare: an --overwrite
    # clears the output dir, which may hold the offline cache this converts into)
    check_inputs(cfg, resume)
    stop = StopSignal()
    stop.install()  # a Ctrl+C while Ray starts abandons the start instead of breaking it half-way
    started = False
    try:
        stop.owns_ray = started = init_ray(cfg)
        stop.install()  # again: ray.init installs its own SIGTERM handler
        stop.check()
        check_cluster(cfg, ray.cluster_resources())
        out = Path(cfg.output_dir)
        say(f"run '{cfg.name}' -> {out}" + (f" (resuming {candidates[0].name})" if candidates else ""))
        r = Run(cfg, stop)
        try:
            r.start(candidates)
        except BaseException:
            r.abort()
            raise
        try:
            with disk_full_as(out, "starting the run"):
                rundir.claim(cfg)  # started: from here on the dir is this run's
                if resume:  # what was skipped as damaged never counts as one of checkpoint.keep_last
                    loaded = r.resumed_from.name if r.resumed_from else None
                    set_aside_damaged(r.ckpt_root, say, r.unloadable, trusted=loaded, check=damaged_file)
                write_config(cfg, out / "config.yaml")
                if cfg.console.enabled:
                    r.list_consoles()
        except DiskFull:
            r.abort()
            raise
        stop.starting = False
        outcome: RunFailed | DiskFull | bool = False
        try:
            outcome = r.loop()
        finally:
            r.shutdown()
        if isinstance(outcome, UserError):
            raise outcome
        if r.no_final is not None:  # the run ended well, but its final checkpoint did not fit
            raise r.no_final
        say("done" if outcome else f"stopped by {stop.reason}")
        return EXIT_OK if outcome else EXIT_INTERRUPTED
    finally:
        if started:
            ray.shutdown()
