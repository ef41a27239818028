"""`RawTap`: the robot's raw observation (before any wrapper), for the page and for `record`."""

from __future__ import annotations


class RawTap:
    """Keeps the innermost env's last observation: the raw robot data before any wrapper.

    Wrappers call `self.env.step/reset`, so shadowing those two methods on the base env's
    instance sees every raw observation whatever the wrapper chain is.
    """

    def __init__(self, env):
        self.base = env.unwrapped
        self.obs: dict | None = None
        step, reset = self.base.step, self.base.reset

        def tapped_step(action):
            out = step(action)
            self.obs = out[0]
            return out

        def tapped_reset(*a, **k):
            out = reset(*a, **k)
            self.obs = out[0]
            return out

        self.base.step, self.base.reset = tapped_step, tapped_reset
