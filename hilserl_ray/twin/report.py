"""What the twin's arm feels, as a JSON-lines log and a status dict.

Every Goal_Position write is checked against what the arm tolerates: the calibrated joint
ranges, `robot.max_relative_target_deg` from where the arm is, and the end-effector workspace
box by FK. A goal that violates one lists it (`beyond_limits`, `over_step`, `outside_box_m`;
the step is measured from the Present_Position the host last read, which its clamp works
from); one that sits exactly on a bound (a clamped command) lists it too (`at_limit`,
`at_max_step`, `on_box_face`). A goal equal to the present position on every servo (as read
just before, or now) is a `hold` (what the follower writes when it stops: watchdog, Ctrl+C,
an error, the guard), with the time since the last real command. Torque_Enable changes are `torque` events; `all_off` marks the arm released.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from pathlib import Path

import numpy as np

from hilserl_ray.config import TrainConfig
from hilserl_ray.limits import workspace_box
from hilserl_ray.so101 import ARM, JOINT_NAMES
from hilserl_ray.twin.sts3215 import (
    GOAL,
    INST_SYNC_READ,
    INST_SYNC_WRITE,
    INST_WRITE,
    PRESENT_POS,
    TORQUE,
    ServoBus,
    sm_decode,
)

HOLD_STEPS = 3  # raw steps (0.26 degrees): a goal this close to the present position is a hold
STEP_TOLERANCE_DEG = 0.2  # two encoder steps of rounding
BOUND_DEG = 0.2  # two encoder steps: a goal this close to a bound was clamped to it
FACE_M = 0.002
OUTSIDE_M = 5e-4  # the follower bisects the box to 0.1 mm: count what is really outside


class Reporter:
    def __init__(self, path: Path, cfg: TrainConfig, servo_map, kin, bus: ServoBus):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("a", buffering=1)
        self.map, self.kin, self.bus = servo_map, kin, bus
        self.max_step = cfg.robot.max_relative_target_deg
        self.ws_low, self.ws_high = workspace_box(cfg)
        self.low, self.high = (x.astype(np.float64) for x in servo_map.norm.limits())
        self.counts: Counter = Counter()
        self.recent: deque = deque(maxlen=40)
        self.torque = dict.fromkeys(JOINT_NAMES, False)
        self.last_command_t: float | None = None
        self.last_goal: dict | None = None
        self.reads: deque = deque(maxlen=2)  # Present_Position as last read by the host
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ log
    def event(self, kind: str, **fields) -> dict:
        row = {"t": round(time.time(), 4), "event": kind, **fields}
        with self._lock:
            self._f.write(json.dumps(row) + "\n")
            self.counts[kind] += 1
            if kind != "goal":
                self.recent.append(row)
        return row

    def close(self) -> None:
        with self._lock:
            self._f.close()

    # ------------------------------------------------------------------ bus hook
    def on_packet(self, motor_id: int, inst: int, params: bytes) -> tuple[str, np.ndarray] | None:
        """Called by the follower's bus (under its lock) after each valid instruction; for a
        Goal_Position write returns ("goal" or "hold", the goal in state units)."""
        if inst == INST_SYNC_WRITE and params[0] == GOAL[0] and params[1] == GOAL[1]:
            return self._goal(params)
        if inst == INST_SYNC_READ and params[0] == PRESENT_POS[0]:
            self.reads.append(
                {j: self.bus[i].present for j, i in zip(JOINT_NAMES, self.map.ids, strict=True)}
            )
        if (inst == INST_SYNC_WRITE and params[0] == TORQUE[0]) or (
            inst == INST_WRITE and params[0] == TORQUE[0]
        ):
            self._torque()
        return None

    def _torque(self) -> None:
        now = {j: self.bus[i].torque for j, i in zip(JOINT_NAMES, self.map.ids, strict=True)}
        if now == self.torque:
            return
        was_off = not any(self.torque.values())
        self.torque = now
        on = [j for j, v in now.items() if v]
        self.event("torque", on=on, all_off=not on, all_on=len(on) == len(JOINT_NAMES), was_off=was_off)

    def _goal(self, params: bytes) -> tuple[str, np.ndarray] | None:
        size = GOAL[1]
        raw = {}
        by_id = dict(zip(self.map.ids, JOINT_NAMES, strict=True))
        for k in range(2, len(params), size + 1):
            if params[k] in by_id:
                raw[by_id[params[k]]] = sm_decode(int.from_bytes(params[k + 1 : k + 1 + size], "little"), 15)
        if len(raw) != len(JOINT_NAMES):
            self.event("partial_goal", joints=sorted(raw))
            return None
        present_raw = {j: self.bus[i].present for j, i in zip(JOINT_NAMES, self.map.ids, strict=True)}
        goal = self.map.state(raw)
        present = self.map.state(present_raw)
        # the step from where the host last saw the arm: what its max-step clamp works from (of
        # the last two reads: the host's watchdog thread may have read in between)
        seen = [self.map.state(r) for r in self.reads] or [present]
        step = np.min([np.abs(goal - s) for s in seen], axis=0)
        ee = self.kin.fk(goal)[0]
        outside = float(np.linalg.norm(np.maximum(self.ws_low - ee, 0) + np.maximum(ee - self.ws_high, 0)))
        face = min(np.min(np.abs(ee - self.ws_low)), np.min(np.abs(ee - self.ws_high)))
        names = JOINT_NAMES
        now = time.monotonic()
        # a hold writes back what was just read (the arm may have moved on a little since)
        refs = [present_raw, *list(self.reads)[-1:]]
        is_hold = all(self.torque.values()) and any(
            all(abs(raw[j] - ref[j]) <= HOLD_STEPS for j in names) for ref in refs
        )
        row = {
            "goal": [round(float(x), 2) for x in goal],
            "present": [round(float(x), 2) for x in present],
            "step_deg": round(float(step[ARM].max()), 2),
            "ee": [round(float(x), 4) for x in ee],
            "beyond_limits": [
                j
                for j, g, lo, hi in zip(names, goal, self.low, self.high, strict=True)
                if g < lo - BOUND_DEG or g > hi + BOUND_DEG
            ],
            "at_limit": [
                j
                for j, g, lo, hi in zip(names, goal, self.low, self.high, strict=True)
                if abs(g - lo) <= BOUND_DEG or abs(g - hi) <= BOUND_DEG
            ],
            "over_step": [
                j for j, s in zip(names, step, strict=True) if s > self.max_step + STEP_TOLERANCE_DEG
            ],
            "at_max_step": [
                j for j, s in zip(names, step, strict=True) if abs(s - self.max_step) <= STEP_TOLERANCE_DEG
            ],
            "outside_box_m": round(outside, 4),
            "on_box_face": bool(outside == 0 and face <= FACE_M),
        }
        for key in ("beyond_limits", "over_step"):
            if row[key]:
                self.counts[key] += 1
        if outside > OUTSIDE_M:
            self.counts["outside_box"] += 1
        if is_hold:
            gap = None if self.last_command_t is None else round(now - self.last_command_t, 3)
            self.event("hold", since_last_command_s=gap, **row)
        else:
            self.last_command_t = now
            self.event("goal", **row)
        self.last_goal = row
        return ("hold" if is_hold else "goal"), goal

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        with self._lock:
            return {
                "torque": dict(self.torque),
                "last_goal": self.last_goal,
                "counts": dict(self.counts),
                "recent_events": list(self.recent)[-15:],
            }
