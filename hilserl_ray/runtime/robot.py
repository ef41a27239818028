"""The robot actor: runs the wrapped env (sim or the real arm) and streams transitions.

The control loop runs on its own thread, started in `__init__`, so a restart after a crash
(exception, USB gone, kill -9) resumes collection by itself. After a restart that thread also
builds the env: a real arm that is not there (port missing, servos silent, camera gone) is
retried every second until it is, so an unplugged arm reconnects when it comes back (within
actors.no_step_timeout_s); at the first start a missing arm is an error at once. A loop that fails closes the env
safely and keeps its error for `watch()`, through which the driver supervises (runtime/supervise). Weights are picked up between steps
without blocking; transitions go to the learner in chunks of K steps plus each episode's tail,
each kept until the learner acknowledges it (`sender.py`).
`stop()` is the only safe way to end it: the loop ends, then `env.close()` holds and releases
the arm (an actor's atexit handlers do not run when the driver exits).
"""

from __future__ import annotations

import contextlib
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
from hilserl_ray.envs.pipeline import pipeline_spec
from hilserl_ray.errors import debug_requested, deferred_init
from hilserl_ray.fleet import Arm, fleet
from hilserl_ray.runtime.sender import ChunkSender

log = logging.getLogger(__name__)


def stack_rows(rows: list[dict]) -> dict[str, np.ndarray]:
    """List of per-step dicts -> the Chunk format (one array per key)."""
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


class Robot:
    def __init__(self, cfg_dict: dict, index: int, learner_name: str, name: str | None = None):
        from hilserl_ray.console.session import open_console
        from hilserl_ray.policy import ActorPolicy

        torch.set_num_threads(1)
        self.cfg = cfg = TrainConfig.model_validate(cfg_dict)
        self.index = index
        self.name = name or f"arm{index}"  # the arm, in the learner's per-arm metrics
        # The learner by name, not by handle: a handle among the constructor args would stop Ray
        # from restarting this actor (ray#53727), and a name also finds a restarted learner.
        self.learner_name = learner_name
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._closed = False
        self._weights_req = None
        self.spec = spec = pipeline_spec(cfg)
        # A fresh random 40-bit id per actor incarnation keeps episode ids unique across actors
        # and Ray restarts (the buffer links rows by episode id).
        self._incarnation = secrets.randbits(40)
        self.sender = ChunkSender(
            f"robot{index}-{self._incarnation:010x}",
            cfg.actors.max_pending_chunks,
            self._reconnect,
            arm=self.name,
        )
        self._seed = cfg.seed + 1000 * index + (self._incarnation & 0xFFFF)
        # The operator's page, served from this process: it sees frames without a Ray round trip.
        self.console = open_console(cfg, f"robot actor {index}")
        self.env = None
        self.waiting_for = ""  # why the env is not up yet (a restarted actor waits for the arm)
        self._close_lock = threading.Lock()
        with warnings.catch_warnings():  # Ray 2.60 deprecates an attribute it reads itself
            warnings.simplefilter("ignore")
            restarted = ray.get_runtime_context().was_current_actor_reconstructed
        if not restarted:  # a wrong port or camera at start is an error at once, not a wait
            self.env = self._build_env()
        if restarted and self.console is not None:  # a new port and token: the driver listed the old one
            print(f"console, robot actor {index} (restarted): {self.console.url}", flush=True)
        self._counters_req = None
        self._counters_at = 0.0
        self.policy = ActorPolicy(spec, cfg.policy).eval()  # inference only: no critics here
        self.weights_version = -1
        self.episodes = 0
        self.env_steps = 0
        self._thread = threading.Thread(target=self._run_guarded, name=f"robot-{index}", daemon=True)
        self._thread.start()

    # --------------------------------------------------------------------------- weights
    def _poll_weights(self) -> None:
        """Never blocks: checks a standing request, applies newer weights, asks again."""
        if self._weights_req is None:
            self._weights_req = self.learner.get_weights.remote(self.weights_version)
            return
        ready, _ = ray.wait([self._weights_req], timeout=0)
        if not ready:
            return
        try:
            reply = ray.get(self._weights_req)
        except ray.exceptions.RayActorError:
            reply = None  # learner restarting: keep the current policy
            self._reconnect()
        self._weights_req = None
        if reply is not None:
            version, (ref,) = reply
            self.policy.load_state_numpy(ray.get(ref))
            self.weights_version = version

    def _poll_console(self) -> None:
        """The learner's counters for the page, about once a second; never blocks."""
        if self._counters_req is not None:
            ready, _ = ray.wait([self._counters_req], timeout=0)
            if not ready:
                return
            # a learner restarting: the loop reconnects on its next send
            with contextlib.suppress(ray.exceptions.RayActorError):
                self.console.learner(self.weights_version, ray.get(self._counters_req))
            self._counters_req = None
        if time.monotonic() - self._counters_at >= 1.0:
            self._counters_at = time.monotonic()
            self._counters_req = self.learner.counters_now.remote()

    # ------------------------------------------------------------------------ transport
    def _send(self, rows: list[dict], episodes: list[dict]) -> None:
        if rows:
            self.sender.send(stack_rows(rows), episodes)
        if self.cfg.actors.env_steps_per_update is not None:
            self._wait_for_learner()

    def _wait_for_learner(self) -> None:
        """Sim pacing: hold while the env steps run ahead of what the learner's updates allow."""
        ratio, starts = self.cfg.actors.env_steps_per_update, self.cfg.learner.training_starts
        self.sender.flush(give_up=self._stop.is_set)
        try:
            while not self._stop.is_set():
                c = ray.get(self.learner.counters_now.remote())
                if c["env_steps"] < starts or c["env_steps"] <= starts + c["updates"] * ratio:
                    return
                self._stop.wait(0.01)
        except ray.exceptions.RayActorError:
            self._reconnect()

    # ---------------------------------------------------------------------------- loop
    def _make_env(self):
        """A restarted actor's env: retried while a real arm's hardware is away (unplugged, its
        twin restarting), bounded by the driver's actors.no_step_timeout_s; None if stopped."""
        last_said = 0.0
        while not self._stop.is_set():
            try:
                return self._build_env()
            except Exception as e:
                if self.cfg.robot.type == "sim" or not _hardware_away(e):
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

    def _build_env(self):
        from hilserl_ray.rig import make_env, make_intervention

        if self.console is None:
            return make_env(self.cfg, seed=self._seed)
        source = self.console.source(make_intervention(self.cfg, self._seed))
        try:
            return self.console.watch(make_env(self.cfg, seed=self._seed, intervention=source))
        except BaseException:
            if source.other is not None:  # e.g. the leader arm's port, opened before the follower failed
                source.other.close()
            raise

    def _run_guarded(self) -> None:
        try:
            if self.env is None:
                self.env = self._make_env()
            self.waiting_for = ""
            if self.env is None or self._stop.is_set():
                return
            self._run()
        except Exception as e:
            if self._stop.is_set():
                return
            # The driver sees it through watch() and restarts this actor (the unsent part of the
            # episode is dropped); until then the arm is made safe.
            self._error = e
            if debug_requested([]):
                traceback.print_exc()
            self._close_env()
        finally:
            if self._stop.is_set():
                self._close_env()  # stop() may have given up waiting while the env came up

    def _run(self) -> None:
        cfg = self.cfg
        keys = list(self.spec.observation)
        obs, _ = self.env.reset(seed=self._seed)
        rows: list[dict] = []
        finished: list[dict] = []
        episode_id = self._episode_id()
        ep_return, ep_len, ep_interventions, t_start = 0.0, 0, 0, time.monotonic()
        ep_prob, ep_disagree = None, 0
        while not self._stop.is_set():
            self._poll_weights()
            self.sender.pump()
            if self.console is not None:
                self._poll_console()
            action = self.policy.select_action(obs)
            next_obs, reward, terminated, truncated, info = self.env.step(action)
            intervened = bool(info.get("is_intervention", False))
            applied = np.asarray(info.get("action", action), dtype=np.float32)
            rows.append(
                {
                    **{k: obs[k] for k in keys},
                    "action": applied,
                    "reward": np.float32(reward),
                    "discrete_penalty": np.float32(info.get("discrete_penalty", 0.0)),
                    "terminated": bool(terminated),
                    "truncated": bool(truncated),
                    "is_intervention": intervened,
                    "episode_id": np.int64(episode_id),
                    "is_last": False,
                }
            )
            self.env_steps += 1
            ep_return += float(reward)
            ep_len += 1
            ep_interventions += intervened
            if "classifier_prob" in info:  # a reward classifier decides success
                ep_prob = max(ep_prob or 0.0, float(info["classifier_prob"]))
                ep_disagree += bool(info.get("classifier_disagreement"))
            obs = next_obs
            if info.get("rerecord"):  # the human asked to redo it: drop what is not sent yet
                rows = [r for r in rows if r["episode_id"] != episode_id]
                terminated = True
            elif terminated or truncated:
                rows.append(self._last_row(obs, keys, episode_id))
                finished.append(
                    {
                        "return": ep_return,
                        "success": bool(info.get("is_success", False)),
                        "length": ep_len,
                        "intervention_steps": ep_interventions,
                        "policy_hz": ep_len / max(time.monotonic() - t_start, 1e-6),
                        "actor": self.index,
                        "arm": self.name,
                    }
                )
                if ep_prob is not None:  # the env's own success (sim: ground truth) next to it
                    finished[-1].update(
                        env_success=bool(info.get("env_success", False)),
                        classifier_prob_max=ep_prob,
                        classifier_disagreements=ep_disagree,
                    )
            if terminated or truncated:
                self._send(rows, finished)
                rows, finished = [], []
                self.episodes += 1
                episode_id = self._episode_id()
                ep_return, ep_len, ep_interventions, t_start = 0.0, 0, 0, time.monotonic()
                ep_prob, ep_disagree = None, 0
                obs, _ = self.env.reset()
            elif len(rows) >= cfg.actors.chunk_size:
                self._send(rows, [])
                rows = []
        if rows:  # a normal stop sends the partial chunk too (a crash drops it)
            self.sender.send(stack_rows(rows), finished)
        deadline = time.monotonic() + 5.0
        self.sender.flush(give_up=lambda: time.monotonic() > deadline)

    def _episode_id(self) -> int:
        return (self._incarnation << 23) | self.episodes

    def _last_row(self, obs: dict, keys: list[str], episode_id: int) -> dict:
        return {
            **{k: obs[k] for k in keys},
            "action": np.zeros(self.spec.action.shape, np.float32),
            "reward": np.float32(0),
            "discrete_penalty": np.float32(0),
            "terminated": False,
            "truncated": False,
            "is_intervention": False,
            "episode_id": np.int64(episode_id),
            "is_last": True,
        }

    # -------------------------------------------------------------------------- control
    def _reconnect(self):
        """Find the learner by name; after a learner death, wait until the driver restarts it."""
        while not self._stop.is_set():
            try:
                self.learner = ray.get_actor(self.learner_name)
                ray.get(self.learner.counters_now.remote(), timeout=10)
                break
            except (ValueError, ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                self._stop.wait(1.0)
        self._weights_req = None
        self._counters_req = None
        return getattr(self, "learner", None)

    def console_info(self) -> dict | None:
        """Where this actor's console page is (None when console.enabled is false)."""
        return None if self.console is None else {"index": self.index, **self.console.describe()}

    def watch(self) -> dict:
        """Block until the control loop ends; raise what ended it (the driver's supervision)."""
        self.ready()
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.stats()

    def ready(self) -> bool:  # replaced by deferred_init's, which raises a constructor's error
        return True

    def _close_env(self) -> None:
        with getattr(self, "_close_lock", threading.Lock()):
            if not self._closed and getattr(self, "env", None) is not None:
                self._closed = True
                self.env.close()
                if getattr(self, "console", None) is not None:
                    self.console.close()

    def stats(self) -> dict:
        thread = getattr(self, "_thread", None)
        return {
            "index": self.index,
            "name": getattr(self, "name", ""),
            "episodes": getattr(self, "episodes", 0),
            "env_steps": getattr(self, "env_steps", 0),
            "acked_steps": self.sender.acked_steps if hasattr(self, "sender") else 0,
            "unacked_chunks": len(self.sender) if hasattr(self, "sender") else 0,
            "weights_version": getattr(self, "weights_version", -1),
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "alive": thread is not None and thread.is_alive(),
            "paused": getattr(self, "console", None) is not None and self.console.controls.paused,
            "waiting_for": getattr(self, "waiting_for", ""),
        }

    def stop(self, timeout_s: float = 10.0) -> dict:
        """End the loop, then close the env (real arm: hold, then torque off). Idempotent."""
        self._stop.set()
        console = getattr(self, "console", None)
        if console is not None:
            console.controls.close()  # a paused loop must not hold up the stop
        if getattr(self, "_thread", None) is not None:
            self._thread.join(timeout=timeout_s)
        self._close_env()
        return self.stats()


def _hardware_away(e: BaseException) -> bool:
    """A port, servo or camera that is not there (yet): worth waiting for, unlike a config bug."""
    from hilserl_ray.hardware.camera import CameraError
    from hilserl_ray.hardware.feetech import FeetechError

    return isinstance(e, FeetechError | CameraError | OSError)


# watch (standing), stats, stop and one spare: a method call never waits behind another
RobotActor = ray.remote(max_concurrency=4)(deferred_init(Robot))


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
