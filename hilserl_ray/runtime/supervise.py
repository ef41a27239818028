"""Robot actors under the driver's watch: a robot that cannot start, keeps failing, or produces no
env step for `actors.no_step_timeout_s` ends the run with its error as one line.

Each robot actor has one standing `watch()` call that returns only when its control loop ends,
raising what ended it. A failure costs one restart (the driver restarts the process with
`ray.kill(no_restart=False)`; a process that died by itself Ray restarts on its own); after
`actors.max_restarts` restarts the next failure is final: that actor is dead for good (killed,
skipped from then on) and `poll` returns its index; whether the run goes on with the other arms
is the driver's call (`actors.on_robot_failure`). A loop that ended because the learner found
the disk full is no robot's failure and no restart helps: `poll` raises that `DiskFull` for the
driver to stop the run. Generic over N actors.

Each also has one standing `stats()` call: its answers give the per-arm figures (weights version,
alive), tell a new actor incarnation (a restart) by its pid, and show a robot paused from its
console page; none of them blocks the driver.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import ray

from hilserl_ray.errors import EXIT_FAILED, DiskFull, UserError, user_error


class RunFailed(UserError):
    """The run cannot go on (a robot actor failed for good, or no env step for too long)."""

    def __init__(self, what: str, cause: BaseException | None = None, fix: str | None = None):
        super().__init__(what, fix=fix)
        # a user error behind it (camera device, calibration, ...) exits 2; anything else 1
        self.exit_code = UserError.exit_code if user_error(cause) is not None else EXIT_FAILED


def one_line(exc: BaseException) -> str:
    """What a failure was, in one line, without Ray's wrapping."""
    err = user_error(exc)
    if err is not None:
        return " ".join(err.message().split())
    cause = getattr(exc, "cause", None)
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(cause, BaseException):
        exc = cause
    if isinstance(exc, ray.exceptions.RayActorError):
        return "its process died (killed, crashed, or its node was lost)"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


@dataclass
class Watched:
    index: int
    handle: ray.actor.ActorHandle
    watch: ray.ObjectRef | None = None
    failures: int = 0
    last_error: str = ""
    restarting: bool = False  # we killed it to restart it: its next actor error is ours
    down: bool = False  # its process died and Ray is restarting it (counted once)
    arm: str = ""  # the arm's name: its metrics are `arm/<name>/...`
    fleet: bool = False  # a fleet (`robots`): messages name the arm too
    dead: RunFailed | None = None  # failed for good: why (skipped from then on)
    stats: dict = field(default_factory=dict)  # its last stats() answer
    stats_call: ray.ObjectRef | None = None

    @property
    def label(self) -> str:
        return f"robot actor {self.index}" + (f" (arm '{self.arm}')" if self.fleet else "")


class RobotSupervisor:
    def __init__(
        self,
        make_actor: Callable[[int], ray.actor.ActorHandle],
        n: int,
        max_restarts: int,
        arms: list[str] | None = None,
        fleet: bool = False,
    ):
        """`arms`: the arms' names (default arm0, arm1, ...); `fleet`: name them in messages."""
        self.max_restarts = max_restarts
        arms = arms or [f"arm{i}" for i in range(n)]
        self.robots = [Watched(i, make_actor(i), arm=arms[i], fleet=fleet) for i in range(n)]

    @property
    def alive(self) -> list[Watched]:
        return [r for r in self.robots if r.dead is None]

    @property
    def handles(self) -> list[ray.actor.ActorHandle]:
        """The actors not dead for good."""
        return [r.handle for r in self.alive]

    def await_start(self, timeout_s: float, stop: Callable[[], None] = lambda: None) -> None:
        """Every robot actor constructed (env, arm, cameras) or RunFailed naming the first that is not.

        `stop()` is called while waiting; it raises to abandon the start."""
        refs = {r.handle.ready.remote(): r for r in self.robots}
        pending = list(refs)
        deadline = time.monotonic() + timeout_s
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            stop()
            if not done:
                if time.monotonic() < deadline:
                    continue
                late = [refs[p].label for p in pending]
                raise RunFailed(
                    f"{late[0]} did not start within {timeout_s:g} s (actors.start_timeout_s)",
                    fix="is the robot's node in the cluster (ray.robot_label, ray.robot_resource)? "
                    "raise actors.start_timeout_s if the robot is slow to come up",
                )
            r = refs[done[0]]
            try:
                ray.get(done[0])
            except Exception as e:
                raise RunFailed(f"{r.label} could not start: {one_line(e)}", cause=e) from e
        for r in self.robots:
            r.watch = r.handle.watch.remote()

    def poll(self) -> int | None:
        """Non-blocking: handle finished watches. Returns the index of a robot actor that just
        failed for good (its RunFailed in `.robots[i].dead`), else None.

        Ray 2.60 fails the watch of a process that died while Ray restarts it with
        `ActorUnavailableError`, and may fail the watches asked during the restart the same way,
        even after the new process is up: one death counts once (`down` until `poll_stats` hears
        from the new process, which then gets a watch of its own). An actor
        that will not come back fails them with `ActorDiedError` (final). Raises the learner's
        `DiskFull` that ended a control loop (the run must stop, see the module docstring)."""
        for r in self.alive:
            if r.watch is None:
                continue
            ready, _ = ray.wait([r.watch], timeout=0)
            if not ready:
                continue
            final = False
            try:
                ray.get(r.watch)
                r.watch = None  # the loop ended because it was told to stop
                continue
            except ray.exceptions.ActorUnavailableError as e:
                r.watch = r.handle.watch.remote()  # answered once the restarted process is up
                if r.down:
                    continue  # the same restart, still under way
                r.down = True
                if r.restarting:  # the restart we asked for
                    r.restarting = False
                    continue
                failure = e  # it died by itself; Ray restarts it (one of actors.max_restarts)
            except ray.exceptions.RayActorError as e:
                final, failure = True, e  # not coming back (Ray's restarts used up, or killed)
            except Exception as e:
                full = user_error(e)
                if isinstance(full, DiskFull):
                    r.watch = None
                    raise full from None
                failure = e
            if not (final and r.restarting):  # else: the failure we restarted it for, counted
                r.failures += 1
                r.last_error = one_line(failure)
            r.restarting = False
            if final or 0 <= self.max_restarts < r.failures:
                r.watch = None
                r.dead = RunFailed(
                    f"{r.label} failed {r.failures} time{'s' if r.failures != 1 else ''} "
                    f"(actors.max_restarts={self.max_restarts}); "
                    f"last: {r.last_error}",
                    cause=failure,
                )
                ray.kill(r.handle, no_restart=True)  # gone for good: its arm and resource are free
                return r.index
            print(
                f"[hilserl_ray] {r.label} failed ({r.last_error}); restarting it "
                f"({r.failures}/{self.max_restarts if self.max_restarts >= 0 else 'unlimited'})",
                flush=True,
            )
            if not isinstance(failure, ray.exceptions.RayActorError):
                r.restarting = True  # its process is still alive: restart it (Ray counts it)
                ray.kill(r.handle, no_restart=False)
                r.watch = r.handle.watch.remote()
        return None

    def poll_stats(self) -> list[Watched]:
        """Non-blocking: collect the answered `stats()` calls and ask again. Returns the robots
        whose actor answered from a new process (just up, or restarted) since the last poll."""
        up = []
        for r in self.alive:
            if r.stats_call is not None:
                ready, _ = ray.wait([r.stats_call], timeout=0)
                if not ready:
                    continue
                try:
                    new = ray.get(ready[0])
                except ray.exceptions.RayActorError:
                    new = None  # restarting, or dead for good: `poll` (the actor's watch) decides
                if new is not None:
                    if new.get("pid") != r.stats.get("pid"):
                        up.append(r)
                        if r.down and r.watch is not None:
                            # a watch asked during the restart may still fail for it: ask the new process
                            r.watch = r.handle.watch.remote()
                        r.down = False  # the restart is over: the next death is a new failure
                    r.stats = new
            r.stats_call = r.handle.stats.remote()
        return up

    def any_paused(self) -> bool:
        """True when a person paused a robot from its console page (no env steps on purpose)."""
        return any(r.stats.get("paused") for r in self.alive)

    def metrics(self) -> dict[str, float]:
        """Per-arm `arm/<name>/alive` and `weights_version` (weights reach every arm), arms alive."""
        out: dict[str, float] = {"arms_alive": len(self.alive)}
        for r in self.robots:
            out[f"arm/{r.arm}/alive"] = float(r.dead is None)
            if "weights_version" in r.stats:
                out[f"arm/{r.arm}/weights_version"] = r.stats["weights_version"]
        return out

    def summary(self) -> str:
        bad = [f"{r.label}: {r.last_error}" for r in self.robots if r.last_error]
        return "; ".join(bad)
