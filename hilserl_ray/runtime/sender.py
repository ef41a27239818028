"""A robot actor's side of the learner over Ray: its chunks, in order, each kept until the learner
acknowledges it (`ChunkSender`), and the weights and counters it polls (`RayLearner`).

A chunk is put into Ray's object store once (owned by the robot actor's process, so it outlives a
learner death) and its reference is kept until the learner's `add_chunk` returns, which it does
only once the rows are committed to the replay store. If the learner dies meanwhile, the robot
waits for the driver to restart it and sends the same objects again, in the same order; the
learner skips any it had stored already (by sequence number). So a robot actor loses at most the
partial chunk it had not sent yet. One call is in flight at a time: a threaded actor does not run
one caller's calls in order, and a chunk's first rows continue the previous chunk's episode.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import ray


class ChunkSender:
    def __init__(self, sender: str, max_pending: int, connect: Callable[[], object], arm: str | None = None):
        """`connect()` returns a learner handle, waiting while the learner is being restarted;
        `arm` names the fleet arm the chunks come from (the learner's per-arm figures)."""
        self.sender = sender
        self.arm = arm
        self.max_pending = max_pending
        self._connect = connect
        self.learner = connect()
        self._seq = 0
        self._unacked: collections.deque = collections.deque()  # (seq, ref, episodes, steps)
        self._call: ray.ObjectRef | None = None  # the one add_chunk in flight: for _unacked[0]
        self.acked_through = -1  # every chunk with seq <= this is stored
        self.acked_steps = 0
        self.learner_env_steps = 0  # from the last acknowledgement

    def __len__(self) -> int:
        return len(self._unacked)

    def send(self, chunk: dict[str, np.ndarray], episodes: list[dict]) -> None:
        """Queue a chunk (and the episodes it ends), push what can go; block only when too far behind."""
        steps = int((~chunk["is_last"]).sum())
        self._unacked.append((self._seq, ray.put(chunk), episodes, steps))
        self._seq += 1
        self.pump()
        while len(self._unacked) > self.max_pending:  # back-pressure: the learner is behind
            self.pump(block=True)

    def pump(self, block: bool = False) -> None:
        """Collect the acknowledgement in flight (`block`: wait up to 1 s for it), then send the next."""
        if self._call is not None:
            ready, _ = ray.wait([self._call], timeout=1.0 if block else 0)
            if not ready:
                return
            try:
                self.learner_env_steps = ray.get(self._call)
            except ray.exceptions.RayActorError:
                self._call = None  # not acknowledged: sent again to the restarted learner
                self.learner = self._connect()
                if self.learner is None:
                    return
            else:
                seq, _, _, steps = self._unacked.popleft()
                self.acked_through, self._call = seq, None
                self.acked_steps += steps
        if self._call is None and self._unacked and self.learner is not None:
            seq, ref, episodes, _ = self._unacked[0]
            self._call = self.learner.add_chunk.remote(ref, episodes, (self.sender, seq), self.arm)

    def flush(self, give_up: Callable[[], bool] = lambda: False) -> bool:
        """Wait until every queued chunk is acknowledged (or `give_up()`); True when all are."""
        while self._unacked and not give_up():
            self.pump(block=True)
            if self.learner is None:
                return False
        return not self._unacked


class LearnerLink(Protocol):
    """What a robot needs of the learner: `RayLearner` over Ray (a test's stand-in in process)."""

    acked_steps: int  # env steps the learner has acknowledged

    def connect(self) -> tuple[int, dict[str, np.ndarray]] | None: ...  # waits; the weights then

    def __len__(self) -> int: ...  # chunks sent and not acknowledged yet

    def send(self, chunk: dict[str, np.ndarray], episodes: list[dict]) -> None: ...

    def pump(self) -> None: ...

    def flush(self, give_up: Callable[[], bool]) -> bool: ...

    def weights(self, have_version: int) -> tuple[int, dict[str, np.ndarray]] | None: ...

    def counters(self) -> dict | None: ...  # never blocks: None while no new answer

    def counters_now(self) -> dict | None: ...  # waits: None when the learner was lost


class RayLearner:
    """The learner as a robot actor reaches it over Ray, found by name: a restarted learner is
    found again. The chunks go through a `ChunkSender`; weights and the page's counters come from
    standing requests, so the control loop never waits for them (only back-pressure and sim pacing
    wait). `stop` (the robot's) ends a wait for a learner that is gone."""

    def __init__(self, learner_name: str, sender: str, max_pending: int, arm: str, stop: threading.Event):
        self.learner_name = learner_name
        self._stop = stop
        self.handle = None
        self._weights_req: ray.ObjectRef | None = None
        self._counters_req: ray.ObjectRef | None = None
        self._counters_at = 0.0
        self._sender_args = (sender, max_pending, arm)
        self.sender: ChunkSender | None = None  # from `connect()`

    def connect(self) -> tuple[int, dict[str, np.ndarray]] | None:
        """Wait until the learner answers (it may still be loading), then its current weights
        (None if the robot stops first)."""
        sender, max_pending, arm = self._sender_args
        self.sender = ChunkSender(sender, max_pending, self._reconnect, arm=arm)
        if self._stop.is_set():
            return None
        try:
            reply = ray.get(self.handle.get_weights.remote(-1))
        except ray.exceptions.RayActorError:
            return None  # lost again at once: the weights come with the next poll
        return _weights_of(reply)

    def _reconnect(self):
        """Find the learner by name and wait until it is up (its constructor done); after a
        learner death, until the driver has restarted it. A learner whose constructor failed is
        the driver's to replace: this waits for the next."""
        while not self._stop.is_set():
            try:
                self.handle = ray.get_actor(self.learner_name)
                ray.get(self.handle.ready.remote(), timeout=10)
                break
            except ray.exceptions.GetTimeoutError:
                continue  # still loading: the call stays queued and answers once it is up
            except (ValueError, ray.exceptions.RayError):
                self._stop.wait(0.2)
        self._weights_req = None
        self._counters_req = None
        return self.handle

    # the chunks: see ChunkSender
    @property
    def acked_steps(self) -> int:
        return 0 if self.sender is None else self.sender.acked_steps

    def __len__(self) -> int:
        return 0 if self.sender is None else len(self.sender)

    def send(self, chunk: dict[str, np.ndarray], episodes: list[dict]) -> None:
        self.sender.send(chunk, episodes)

    def pump(self) -> None:
        self.sender.pump()

    def flush(self, give_up: Callable[[], bool] = lambda: False) -> bool:
        return self.sender.flush(give_up)

    def weights(self, have_version: int) -> tuple[int, dict[str, np.ndarray]] | None:
        """Weights newer than `have_version` once the standing request has them; never blocks."""
        if self._weights_req is None:
            self._weights_req = self.handle.get_weights.remote(have_version)
            return None
        ready, _ = ray.wait([self._weights_req], timeout=0)
        if not ready:
            return None
        try:
            reply = ray.get(self._weights_req)
        except ray.exceptions.RayActorError:
            reply = None  # learner restarting: keep the current policy
            self._reconnect()
        self._weights_req = None
        return _weights_of(reply)

    def counters(self) -> dict | None:
        """The learner's counters, asked about once a second; never blocks (None: no new answer)."""
        reply = None
        if self._counters_req is not None:
            ready, _ = ray.wait([self._counters_req], timeout=0)
            if not ready:
                return None
            # a learner restarting: the loop reconnects on its next send
            with contextlib.suppress(ray.exceptions.RayActorError):
                reply = ray.get(self._counters_req)
            self._counters_req = None
        if time.monotonic() - self._counters_at >= 1.0:
            self._counters_at = time.monotonic()
            self._counters_req = self.handle.counters_now.remote()
        return reply

    def counters_now(self) -> dict | None:
        """The learner's counters, waited for (sim pacing); None when the learner was lost (and
        has been found again, or the robot is stopping)."""
        try:
            return ray.get(self.handle.counters_now.remote())
        except ray.exceptions.RayActorError:
            self._reconnect()
            return None


def _weights_of(reply) -> tuple[int, dict[str, np.ndarray]] | None:
    """`(version, state)` from the learner's `get_weights` answer (None: nothing newer)."""
    if reply is None:
        return None
    version, (ref,) = reply
    return version, ray.get(ref)
