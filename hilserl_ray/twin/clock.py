"""The twin's clock: its whole world (physics, the servos' timing, the person, the cameras) runs
at `scale` times the wall clock (`--time-scale`, 0 < scale <= 1).

Slowing the world gives whatever runs against it more wall time per twin second: the product,
run at `env.fps` x scale, still steps every 1/env.fps s of twin time, and a CPU learner then
gives the updates per env step a GPU learner gives at the real rate. Every part of the twin
that keeps time asks this object (`now`, `wall`, `wait`); nothing multiplies by the scale
itself. What the product is told (`wall_hz`) and what the twin sees it do (`RateCheck`) are here
too.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from collections import deque

from hilserl_ray.errors import UserError

log = logging.getLogger(__name__)


def parse_time_scale(text: str) -> float:
    """`--time-scale`'s value: a number in (0, 1], else a one-line user error (exit 2)."""
    try:
        scale = float(text)
    except ValueError:
        scale = math.nan
    if not 0 < scale <= 1:  # also nan and inf
        raise UserError(f"got {text!r}; give a number in (0, 1] (the twin's clock runs at S x the wall clock)", where="--time-scale")  # fmt: skip
    return scale


class TwinClock:
    """Twin seconds since the clock started: `scale` x the wall seconds."""

    def __init__(self, scale: float = 1.0):
        if not 0 < scale <= 1:
            raise ValueError(f"time scale: in (0, 1], got {scale!r}")
        self.scale = float(scale)
        self._t0 = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._t0) * self.scale

    def wall(self, twin_seconds: float) -> float:
        """How long `twin_seconds` of twin time take on the wall clock."""
        return twin_seconds / self.scale

    def sleep(self, twin_seconds: float) -> None:
        time.sleep(max(0.0, self.wall(twin_seconds)))

    def wait(self, event: threading.Event, twin_seconds: float) -> bool:
        """`event.wait` for `twin_seconds` of twin time."""
        return event.wait(max(0.0, self.wall(twin_seconds)))

    def wall_hz(self, twin_hz: float) -> float:
        """A rate in twin time as the wall clock sees it (what the product is set to)."""
        return round(twin_hz * self.scale, 6)


WALL = TwinClock(1.0)  # the default of a part built without the twin (the byte-level tests' bus)


def fmt_hz(hz: float) -> str:
    return f"{hz:g}"


def rate_flags(rates: dict[str, float]) -> list[str]:
    """`--env.fps=5`-style flags for a run against a slowed twin."""
    return [f"--{k}={fmt_hz(v)}" for k, v in rates.items()]


class RateCheck:
    """Whether the robot steps at `env.fps` x scale (wall): the person times the episode steps it
    counts; once `window` of them are in, a median step period off by more than the tolerance
    is warned about, once (a twin event `rate_mismatch` and a log line)."""

    WINDOW = 20
    FAST, SLOW = 1.25, 1 / 1.5  # measured / expected Hz outside these: a mismatch (slow: load)

    def __init__(self, clock: TwinClock, real_hz: float, report=None):
        self.clock, self.real_hz, self.report = clock, real_hz, report
        self.expected_hz = clock.wall_hz(real_hz)
        self.periods: deque[float] = deque(maxlen=self.WINDOW)
        self._last: float | None = None
        self.warned = False

    @property
    def measured_hz(self) -> float | None:
        return round(1 / statistics.median(self.periods), 3) if len(self.periods) >= self.WINDOW else None

    def new_episode(self) -> None:
        self._last = None  # the reset between episodes is not a step

    def step(self, wall_t: float) -> None:
        if self._last is not None:
            self.periods.append(wall_t - self._last)
        self._last = wall_t
        hz = self.measured_hz
        if self.warned or hz is None or self.clock.scale == 1:
            return
        if self.SLOW <= hz / self.expected_hz <= self.FAST:
            return
        self.warned = True
        msg = (
            f"[twin] the robot steps at {hz:g} Hz (median of the last {self.WINDOW} steps), not "
            f"the {fmt_hz(self.expected_hz)} Hz this twin expects: at --time-scale {self.clock.scale:g} run it "
            f"with --env.fps={fmt_hz(self.expected_hz)} (the real {fmt_hz(self.real_hz)} Hz x {self.clock.scale:g}), "
            f"so each step is 1/{fmt_hz(self.real_hz)} s of twin time"
        )
        log.warning(msg)
        if self.report is not None:
            self.report.event("rate_mismatch", measured_hz=hz, expected_hz=self.expected_hz)
