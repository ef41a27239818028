"""The robot actor: one arm's `Collector` (sim or the real arm) on a thread, its rows to the learner.

The control loop runs on its own thread, started with the actor, so a restart after a crash
(exception, USB gone, kill -9) resumes collection by itself. After a restart that thread also
builds the env: a real arm that is not there (port missing, servos silent, camera gone) is
retried every second until it is, so an unplugged arm reconnects when it comes back (within
actors.no_step_timeout_s); at the first start a missing arm is an error at once. A loop that
fails closes the env safely and keeps its error for `watch()`, through which the driver
supervises (runtime/supervise). Weights are picked up between steps without blocking;
transitions go to the learner in chunks of K steps plus each episode's tail, each kept until the
learner acknowledges it (`sender.py`). `stop()` is the only safe way to end it: the loop ends,
then `env.close()` holds and releases the arm (an actor's atexit handlers do not run when the
driver exits).

`Robot` is the plain object, without Ray: a test gives it a stand-in for the learner.
`RobotActor` is it as a Ray actor, reaching the learner by name (`sender.RayLearner`).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
import traceback
import warnings

import numpy as np
import ray
import torch

from hilserl_ray.config import TrainConfig
from hilserl_ray.console.session import open_console
from hilserl_ray.envs.pipeline import pipeline_spec
from hilserl_ray.errors import debug_requested
from hilserl_ray.fleet import Arm, fleet
from hilserl_ray.hardware.camera import CameraError
from hilserl_ray.hardware.feetech import FeetechError
from hilserl_ray.policy import ActorPolicy
from hilserl_ray.runtime.collector import Collector, Step
from hilserl_ray.runtime.sender import LearnerLink, RayLearner

log = logging.getLogger(__name__)


def stack_rows(rows: list[dict]) -> dict[str, np.ndarray]:
    """List of per-step dicts -> the Chunk format (one array per key)."""
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


class Robot:
    """One arm's control loop. `restarted`: the env is built by the loop's thread, retried while
    the arm is away; otherwise here, so a wrong port or camera is an error at once. `incarnation`
    makes this run's episode ids and seed its own; `stop` is shared with `learner`, whose waits
    for a lost learner it ends."""

    def __init__(
        self,
        cfg: TrainConfig,
        index: int,
        name: str,
        learner: LearnerLink,
        incarnation: int = 0,
        restarted: bool = False,
        stop: threading.Event | None = None,
    ):
        self.cfg, self.index, self.name, self.learner = cfg, index, name, learner
        self._stop = stop or threading.Event()
        self._seed = cfg.seed + 1000 * index + (incarnation & 0xFFFF)
        self._first_episode_id = incarnation << 23  # episode ids unique across actors and restarts
        self.policy = ActorPolicy(pipeline_spec(cfg), cfg.policy).eval()  # inference only
        self.weights_version = -1
        self.collector: Collector | None = None  # None while a restarted actor waits for the arm
        self.waiting_for = ""  # why the env is not up yet
        self._rows: list[dict] = []  # not sent yet
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._close_lock = threading.Lock()
        # The operator's page, served from this process: it sees frames without a Ray round trip.
        self.console = open_console(cfg, f"robot actor {index}")
        try:
            if not restarted:  # a wrong port or camera at start is an error at once, not a wait
                self.collector = self._open_collector()
        except BaseException:
            if self.console is not None:
                self.console.close()
            raise
        if restarted and self.console is not None:  # a new port and token: the driver listed the old one
            print(f"console, robot actor {index} (restarted): {self.console.url}", flush=True)

    def start(self) -> None:
        """The control loop on a thread of its own, until `stop()`."""
        self._thread = threading.Thread(target=self._run_guarded, name=f"robot-{self.index}", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------------------- loop
    def run(self) -> None:
        """The control loop: steps until `stop()`, then sends what is left. It starts once the
        learner answers (a run starts both at once: the env opened while the learner loaded), with
        the learner's weights, so a resumed run's first step is its trained policy's."""
        self.waiting_for = "the learner"
        first = self.learner.connect()
        self.waiting_for = ""
        if self._stop.is_set():
            return
        if first is not None:
            self._load_weights(*first)
        self.collector.reset(seed=self._seed)
        while not self._stop.is_set():
            self.step()
        self.finish()

    def step(self) -> Step:
        """One env step with the newest weights; rows go out every K steps and at an episode's end."""
        self._poll_weights()
        self.learner.pump()
        self._poll_console()
        step = self.collector.step(self.policy.select_action(self.collector.obs))
        self._rows += step.rows
        episode = step.episode
        if episode is None:
            if len(self._rows) >= self.cfg.actors.chunk_size:
                self._send([])
            return step
        if episode.rerecord:  # the person asked to redo it: what is not sent yet is dropped
            self._rows = []
        self._send([] if episode.rerecord else [episode.stats(actor=self.index, arm=self.name)])
        self.collector.reset()
        return step

    def finish(self) -> None:
        """A normal stop sends the partial chunk too (a crash drops it), then waits up to 5 s for
        the learner's acknowledgements."""
        if self._rows:
            self.learner.send(stack_rows(self._rows), [])
            self._rows = []
        deadline = time.monotonic() + 5.0
        self.learner.flush(give_up=lambda: time.monotonic() > deadline)

    def _send(self, episodes: list[dict]) -> None:
        rows, self._rows = self._rows, []
        if rows:
            self.learner.send(stack_rows(rows), episodes)
        if self.cfg.actors.env_steps_per_update is not None:
            self._pace()

    def _pace(self) -> None:
        """Sim pacing: hold while the env steps run ahead of what the learner's updates allow."""
        ratio, starts = self.cfg.actors.env_steps_per_update, self.cfg.learner.training_starts
        self.learner.flush(give_up=self._stop.is_set)
        while not self._stop.is_set():
            c = self.learner.counters_now()
            if c is None or c["env_steps"] < starts or c["env_steps"] <= starts + c["updates"] * ratio:
                return
            self._stop.wait(0.01)

    def _poll_weights(self) -> None:
        """Newer weights when the learner has them; never blocks."""
        new = self.learner.weights(self.weights_version)
        if new is not None:
            self._load_weights(*new)

    def _load_weights(self, version: int, state: dict[str, np.ndarray]) -> None:
        self.policy.load_state_numpy(state)
        self.weights_version = version

    def _poll_console(self) -> None:
        """The learner's counters for the page, about once a second; never blocks."""
        if self.console is None:
            return
        counters = self.learner.counters()
        if counters is not None:
            self.console.learner(self.weights_version, counters)

    # ------------------------------------------------------------------------ the env
    def _open_collector(self) -> Collector:
        return Collector(self.cfg, self._seed, self.console, first_episode_id=self._first_episode_id)

    def _wait_for_arm(self) -> Collector | None:
        """A restarted actor's env: retried while a real arm's hardware is away (unplugged, its
        twin restarting), bounded by the driver's actors.no_step_timeout_s; None if stopped."""
        last_said = 0.0
        while not self._stop.is_set():
            try:
                return self._open_collector()
            except Exception as e:
                if self.cfg.robot.type == "sim" or not hardware_away(e):
                    raise
                self.waiting_for = f"{type(e).__name__}: {e}"
                if time.monotonic() - last_said > 30:
                    log.warning(
                        "robot %d: the arm is not reachable (%s); retrying every second", self.index, e
                    )
                    print(f"robot {self.index}: waiting for the arm: {e}", flush=True)
                    last_said = time.monotonic()
                self._stop.wait(1.0)
        return None

    def _run_guarded(self) -> None:
        try:
            if self.collector is None:
                self.collector = self._wait_for_arm()
            self.waiting_for = ""
            if self.collector is None or self._stop.is_set():
                return
            self.run()
        except Exception as e:
            if self._stop.is_set():
                return
            # The driver sees it through watch() and restarts this actor (the unsent part of the
            # episode is dropped); until then the arm is made safe.
            self._error = e
            if debug_requested([]):
                traceback.print_exc()
            self._close()
        finally:
            if self._stop.is_set():
                self._close()  # stop() may have given up waiting while the env came up

    def _close(self) -> None:
        """The env (real arm: hold, then torque off) and the page, once, from whichever thread."""
        with self._close_lock:
            if not self._closed and self.collector is not None:
                self._closed = True
                self.collector.close()
                if self.console is not None:
                    self.console.close()

    # -------------------------------------------------------------------------- control
    def console_info(self) -> dict | None:
        """Where this actor's console page is (None when console.enabled is false)."""
        return None if self.console is None else {"index": self.index, **self.console.describe()}

    def watch(self) -> dict:
        """Block until the control loop ends; raise what ended it (the driver's supervision)."""
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self.stats()

    def stats(self) -> dict:
        collector = self.collector
        return {
            "index": self.index,
            "name": self.name,
            "episodes": 0 if collector is None else collector.episodes,
            "env_steps": 0 if collector is None else collector.steps,
            "acked_steps": self.learner.acked_steps,
            "unacked_chunks": len(self.learner),
            "weights_version": self.weights_version,
            "pid": os.getpid(),
            "alive": self._thread is not None and self._thread.is_alive(),
            "paused": self.console is not None and self.console.controls.paused,
            "waiting_for": self.waiting_for,
        }

    def stop(self, timeout_s: float = 10.0) -> dict:
        """End the loop, then close the env (real arm: hold, then torque off). Idempotent."""
        self._stop.set()
        if self.console is not None:
            self.console.controls.close()  # a paused loop must not hold up the stop
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        self._close()
        return self.stats()


def hardware_away(e: BaseException) -> bool:
    """A port, servo or camera that is not there (yet): worth waiting for, unlike a config bug."""
    return isinstance(e, FeetechError | CameraError | OSError)


# ----------------------------------------------------------------------------- on Ray
class RayRobot:
    """A `Robot` as a Ray actor. The learner is found by name, not passed as a handle: a handle
    among the constructor args would stop Ray from restarting this actor (ray#53727), and a name
    also finds a restarted learner. A constructor's error is kept and raised by `ready()`: raised
    from `__init__`, Ray would keep only its text, and a user error would not print as itself."""

    def __init__(self, cfg_dict: dict, index: int, learner_name: str, name: str | None = None):
        torch.set_num_threads(1)
        self.index, self.name = index, name or f"arm{index}"  # the arm, in the learner's per-arm metrics
        self.robot: Robot | None = None
        self._init_error: Exception | None = None
        try:
            self.robot = self._start(TrainConfig.model_validate(cfg_dict), learner_name)
        except Exception as e:
            self._init_error = e

    def _start(self, cfg: TrainConfig, learner_name: str) -> Robot:
        incarnation = secrets.randbits(40)  # a fresh id per actor incarnation
        stop = threading.Event()
        sender = f"robot{self.index}-{incarnation:010x}"
        learner = RayLearner(learner_name, sender, cfg.actors.max_pending_chunks, self.name, stop)
        with warnings.catch_warnings():  # Ray 2.60 deprecates an attribute it reads itself
            warnings.simplefilter("ignore")
            restarted = ray.get_runtime_context().was_current_actor_reconstructed
        robot = Robot(cfg, self.index, self.name, learner, incarnation, restarted, stop)
        robot.start()
        return robot

    def ready(self) -> bool:
        if self._init_error is not None:
            raise self._init_error
        return True

    def watch(self) -> dict:
        """Block until the control loop ends; raise what ended it (the driver's supervision)."""
        self.ready()
        self.robot.watch()
        return self.stats()

    def stats(self) -> dict:
        node = ray.get_runtime_context().get_node_id()
        if self.robot is not None:
            return {**self.robot.stats(), "node_id": node}
        return {  # a robot that failed to construct
            "index": self.index,
            "name": self.name,
            "episodes": 0,
            "env_steps": 0,
            "acked_steps": 0,
            "unacked_chunks": 0,
            "weights_version": -1,
            "pid": os.getpid(),
            "node_id": node,
            "alive": False,
            "paused": False,
            "waiting_for": "",
        }

    def stop(self, timeout_s: float = 10.0) -> dict:
        """End the loop, then close the env (real arm: hold, then torque off). Idempotent."""
        if self.robot is not None:
            self.robot.stop(timeout_s)
        return self.stats()

    def console_info(self) -> dict | None:
        """Where this actor's console page is (None when console.enabled is false)."""
        return None if self.robot is None else self.robot.console_info()


RayRobot.__name__ = RayRobot.__qualname__ = "Robot"  # the actor's process title: ray::Robot
# watch (standing), stats, stop and one spare: a method call never waits behind another
RobotActor = ray.remote(max_concurrency=4)(RayRobot)


def robot_actor_options(cfg: TrainConfig, arm: Arm | None = None) -> dict:
    """Pin an arm's actor to its node (label) and make it the arm's only owner (resource).

    `arm` defaults to the config's first arm (a single `robot`: the arm)."""
    arm = arm or fleet(cfg)[0]
    opts: dict = {"num_cpus": 1, "max_restarts": cfg.actors.max_restarts, "max_task_retries": 0}
    if arm.label:
        opts["label_selector"] = dict(arm.label)
    if arm.resource:
        opts["resources"] = {arm.resource: 1}
    return opts
