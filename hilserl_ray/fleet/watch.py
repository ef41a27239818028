"""Watching the fleet's robot actors: which arm is dead for good (its restarts used up).

Each arm has one standing `stats()` request. Ray 2.60 fails a call to an actor that crashed or is
restarting with `ActorUnavailableError` (temporary: ask again), and one to an actor that will
never come back (restarts used up, killed, constructor failed for good) with `ActorDiedError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ray

from hilserl_ray.fleet.arms import Arm


@dataclass
class ArmHealth:
    arm: Arm
    handle: object
    request: object = None
    failures: int = 0  # consecutive calls that found it unavailable (restarting)
    dead: str | None = None  # why, once dead for good
    last: dict = field(default_factory=dict)  # the actor's last stats()
    pid: int | None = None  # the incarnation last reported up


class FleetWatch:
    def __init__(self, arms: list[Arm], handles: list):
        self.health = [ArmHealth(a, h) for a, h in zip(arms, handles, strict=True)]

    @property
    def alive(self) -> list[ArmHealth]:
        return [h for h in self.health if h.dead is None]

    def poll(self) -> tuple[list[ArmHealth], list[ArmHealth]]:
        """Collect finished requests, ask again. Returns the arms (up: a new actor incarnation
        answered, dead: found dead for good) since the last poll."""
        newly_up, newly_dead = [], []
        for h in self.alive:
            if h.request is not None:
                ready, _ = ray.wait([h.request], timeout=0)
                if not ready:
                    continue
                try:
                    h.last = ray.get(h.request)
                    h.failures = 0
                    if h.last.get("pid") != h.pid:
                        h.pid = h.last.get("pid")
                        newly_up.append(h)
                except ray.exceptions.ActorUnavailableError:
                    h.failures += 1  # crashed or restarting: Ray brings it back
                except ray.exceptions.RayActorError as e:
                    h.dead = _reason(e)
                    newly_dead.append(h)
                    continue
            h.request = h.handle.stats.remote()
        return newly_up, newly_dead

    def summary(self) -> dict[str, float]:
        """`arm/<name>/weights_version` (weights reach every arm) and how many arms are alive."""
        out: dict[str, float] = {"arms_alive": len(self.alive)}
        for h in self.health:
            out[f"arm/{h.arm.name}/alive"] = float(h.dead is None)
            if "weights_version" in h.last:
                out[f"arm/{h.arm.name}/weights_version"] = h.last["weights_version"]
        return out


def _reason(e: Exception) -> str:
    text = str(e).strip().splitlines()
    useful = [line for line in text if "Error" in line or "died" in line or "max_restarts" in line]
    return (useful or text or [type(e).__name__])[0][:300]
