"""The twin's scripted person: watches the arm, resets the scene, intervenes with the leader arm
and presses keys, through the same devices a real operator uses.

It sees what a person at the table sees, the twin's ground truth (where the cube and the target
are), and only acts through the leader arm's servos and key presses:
- a new episode starts when the follower is commanded to `robot.reset_pose_deg` (the end of the
  robot's reset ramp): the person re-places the cube (and the reach target) and starts counting
  the episode's steps, one per Goal_Position write, up to `env.max_episode_steps`;
- it takes over by `pipeline.intervention.oracle`'s rule (the sim oracle, `envs.oracle`): presses
  space, then moves the leader so its gripperframe sits where the sim expert wants the
  follower's next (IK, fingers down; the leader's gripper opened or closed past the follower's).
  The expert decides once per robot step where the gripper should go (its step from where the
  follower is: a waypoint); the hand steers towards that waypoint from where the follower is
  now, every HAND_S, as a hand leads an arm. Set once per step, one step ahead of the follower,
  the robot read it a control period later: a proportional step a period stale, which made the
  arm circle over the cube (a 6-step cycle, ±13 mm) and never come down;
  with `hand_back_steps` it presses space again after that many steps and lets go;
- it presses `s` when the task is done (reach: within 2 cm of the target; pick: cube lifted).

What it does in an episode is its `mode` (`POST /person?mode=...`, from the next episode on), the
modes a real session needs: `oracle` (intervene by the rule while a policy trains), `demo`
(demonstrate whole episodes from step 0: `record`'s leader drives from the first step, so it
leads the leader from the reset on and never presses space), `label` (as demo, then hold `l` while the cube is up:
classifier positives), `near_miss` / `slip` / `hover` (fail on purpose: classifier negatives),
`mix` (label and the three failures in turn, as record's EXPERT_MIX shares them) and `hands_off` (`evaluate`).
When `calibrate` asks, it poses an arm mid-range and moves every joint through the range the
arm was calibrated with (`POST /person/calibrate?bus=follower&step=mid|sweep`).
Its timed actions (the hand's pace, the calibration holds) keep the arm's clock (`twin/clock.py`);
it times the robot's steps against it too (`RateCheck`: a robot at the wrong env.fps is warned of).
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import numpy as np

from hilserl_ray.config import TrainConfig
from hilserl_ray.envs.oracle import FAILURE_MODES, FailingExpert, OracleSource, ScriptedExpert
from hilserl_ray.so101 import ARM, CLOSE, GRIPPER, OPEN
from hilserl_ray.twin.clock import RateCheck

log = logging.getLogger(__name__)

RESET_TOL = (
    0.15  # degrees (gripper: units): the reset ramp ends exactly on the pose; a policy step rarely does
)
AWAY_DEG = 3.0
HAND_S = 0.02  # while engaged the hand follows the arm this often, between the robot's steps
MODES = ("oracle", "demo", "label", *FAILURE_MODES, "mix", "hands_off")
MIX = ("label", "near_miss", "label", "slip", "hover")  # mix: in turn (record's EXPERT_MIX shares)
LABEL_STEPS = 8  # label mode: steps it holds `l` with the cube up before pressing `s`
LABEL_END_STEPS = 2  # ...or fewer when this few steps are left: `s` must land before the time limit
SWEEP_HOLD_S = 0.15  # calibration: how long it holds each joint at each end of its range...
SWEEP_READS = 3  # ...and until calibrate has read the bus this often since


class ScriptedHuman:
    def __init__(
        self,
        cfg: TrainConfig,
        arm,
        leader_bus,
        leader_map,
        keys,
        report,
        *,
        seed: int = 0,
        target: np.ndarray | None = None,
        hand_back_steps: int | None = None,
        intervene: bool = True,
    ):
        self.cfg, self.arm, self.sim = cfg, arm, arm.sim
        self.clock = arm.clock
        self.rate = RateCheck(self.clock, cfg.env.fps, report)
        self.leader_bus, self.leader_map = leader_bus, leader_map
        self.keys, self.report = keys, report
        self.rng = np.random.default_rng(seed)
        self.target = None if target is None else np.asarray(target, dtype=np.float64)
        self.hand_back_steps = hand_back_steps
        self.intervene = intervene
        self.mode = "oracle" if intervene else "hands_off"
        self.episode_mode = self.mode
        self.expert: ScriptedExpert | None = None  # None: the oracle's rule decides when to act
        self.labelled = self.mixed = 0
        self.reset_pose = np.asarray(cfg.robot.reset_pose_deg, dtype=np.float64)
        self.max_steps = cfg.env.max_episode_steps
        self.step_size = cfg.pipeline.ee_action.step_size_m
        self.oracle = OracleSource(self.sim.cfg, seed=seed + 7919)
        self.phase = "wait_reset"
        self.episodes = self.steps = self.interventions = self.successes = 0
        self.engaged = self.handed_back = self.was_away = False
        self.hand: tuple[np.ndarray, float] | None = None  # (waypoint, gripper command) it steers to
        self._goals: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.set_leader(self.reset_pose)  # the leader rests in the robot's reset pose

    # ------------------------------------------------------------------ devices
    def set_leader(self, q_state: np.ndarray) -> None:
        with self.leader_bus.lock:
            for i, actual in self.leader_map.actual(q_state).items():
                self.leader_bus[i].actual = actual

    def tap(self, key: str) -> None:
        self.keys.tap(key)
        self.report.event("key", key=key, episode=self.episodes, step=self.steps)

    # ------------------------------------------------------------------ loop
    def on_goal(self, kind: str, goal: np.ndarray) -> None:
        """From the follower's bus thread: one Goal_Position write (`goal` in state units)."""
        self._goals.put((kind, goal, time.monotonic()))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="twin-human", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._goals.put(None)
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._goals.get(timeout=self.clock.wall(HAND_S))
            except queue.Empty:
                item = ()
            if item is None:
                return
            try:
                if item:
                    self._process(*item)
                self._follow()
            except Exception:  # the person makes a mistake: log it, keep watching
                log.exception("scripted human")

    def _follow(self) -> None:
        """Steer the hand towards the waypoint from where the follower is now."""
        if self.engaged and self.hand is not None:
            with self.arm.bus.lock:
                self.set_leader(self._leader_pose(self.hand))

    def _process(self, kind: str, goal: np.ndarray, wall_t: float | None = None) -> None:
        """Every write is an episode step, holds too (a policy that keeps still commands a hold);
        `wall_t`: when it was written."""
        at_reset = float(np.max(np.abs(goal - self.reset_pose))) <= RESET_TOL
        if self.phase == "wait_reset":
            if at_reset:
                self._new_episode()
            return
        if at_reset and (self.steps == 0 or self.was_away):
            if self.steps > 3:  # the robot reset before this person expected: follow it
                self._new_episode()
            return  # the end of the reset ramp, or its settling: not an episode step
        self.was_away |= float(np.max(np.abs(goal[ARM] - self.reset_pose[ARM]))) > AWAY_DEG
        self.steps += 1
        self.rate.step(time.monotonic() if wall_t is None else wall_t)
        with self.arm.bus.lock:
            self._act()
        if self.phase == "running" and self.steps >= self.max_steps:
            self._end("time limit")

    # ------------------------------------------------------------------ episodes
    def _new_episode(self) -> None:
        with self.arm.bus.lock:
            self.sim.place_objects(self.rng, self.target)
        self.oracle.reset()
        self.rate.new_episode()
        mode = self.mode
        if mode == "mix":
            mode = MIX[self.mixed % len(MIX)]
            self.mixed += 1
        self.episode_mode = mode
        if mode in ("demo", "label"):
            self.expert = ScriptedExpert(self.sim)
        elif mode in FAILURE_MODES:
            self.expert = FailingExpert(self.sim, mode, self.rng)
        else:
            self.expert = None
        self._let_go_of_label()  # the robot reset early: nothing held over
        self.episodes += 1
        self.steps = 0
        self.phase = "running"
        self.engaged = self.handed_back = self.was_away = False
        self.hand = None
        self.report.event(
            "episode",
            episode=self.episodes,
            target=[round(float(x), 4) for x in self.sim.target_pos()],
            cube=[round(float(x), 4) for x in self.sim.cube_pos()],
            mode=mode,
        )
        if self.expert is not None:  # `record`: the leader drives from the first step; lead it now
            with self.arm.bus.lock:
                self._act()

    def _let_go_of_label(self) -> None:
        if self.labelled:
            self.keys.release("l")
            self.labelled = 0

    def _end(self, why: str) -> None:
        self._let_go_of_label()  # a key held over the reset would label the next episode's frames
        self.phase = "wait_reset"
        self.engaged, self.hand = False, None  # the robot's leader source hands back at its reset
        self.report.event("episode_end", episode=self.episodes, steps=self.steps, why=why)

    def _act(self) -> None:
        """One episode step (under the follower's bus lock: a consistent view of the scene)."""
        if self.sim.is_success():
            time_left = self.max_steps - self.steps > LABEL_END_STEPS
            if self.episode_mode == "label" and self.labelled < LABEL_STEPS and time_left:
                if self.labelled == 0:
                    self.keys.press("l")  # held while success is visible: per-frame labels
                self.labelled += 1
            else:  # labelled enough, or the time limit is near: a person says so before it ends
                self._let_go_of_label()
                self.successes += 1
                self.tap("s")
                self._end("success")
                return
        else:  # the cube dropped while it labelled: let go of `l`
            self._let_go_of_label()
        if self.episode_mode == "hands_off" or self.handed_back:
            return
        a = self.oracle.action(None, self.sim) if self.expert is None else self.expert.act(None)
        if a is None:
            return
        if not self.engaged:
            self.engaged = True
            self.engaged_steps = 0
            self.interventions += 1
            if self.expert is None:  # by the rule: take over, then move the leader (in `record`
                self.tap("space")  # the leader drives from the first step: space would hand back)
        self.hand = (self.sim.ee_pos() + np.clip(a[:3], -1, 1) * self.step_size, float(a[3]))
        self.set_leader(self._leader_pose(self.hand))
        self.engaged_steps += 1
        if self.hand_back_steps is not None and self.engaged_steps >= self.hand_back_steps:
            self.tap("space")
            self.engaged, self.handed_back, self.hand = False, True, None

    def _leader_pose(self, hand: tuple[np.ndarray, float]) -> np.ndarray:
        """The leader pose whose gripperframe is at most one step (per axis, as the expert's
        actions) from the follower's, towards the waypoint."""
        kin = self.sim.kin
        q = self.arm.joints()
        waypoint, g = hand
        ee = self.sim.ee_pos()
        target = ee + np.clip((waypoint - ee) / self.step_size, -1, 1) * self.step_size
        pose = kin.ik(target, q, approach_dir=np.array([0.0, 0.0, -1.0]), max_iters=30, restarts=False)
        if self.sim.cfg.pipeline.gripper.discrete:
            delta = {CLOSE: -50.0, OPEN: 50.0}.get(int(round(g)), 0.0)
        else:
            delta = 50.0 * float(np.clip(g, -1, 1))
        pose[GRIPPER] = np.clip(q[GRIPPER] + delta, 0.0, 100.0)
        return pose

    # ------------------------------------------------------------------ requests
    def set_mode(self, mode: str) -> dict:
        """What it does from the next episode on (see the module docstring)."""
        if mode not in MODES:
            raise ValueError(f"mode: one of {MODES}, got {mode!r}")
        self.mode, self.mixed = mode, 0
        self.report.event("person_mode", mode=mode)
        return {"mode": mode}

    def calibrate(self, which: str, step: str) -> dict:
        """Answer `calibrate`'s prompts by hand: `mid` poses the arm mid-range (torque is off),
        `sweep` moves each joint to both ends of the range the arm was calibrated with and back
        (returns when done). The follower is moved in the physics, the leader at its encoders."""
        servo_map = self.arm.map if which == "follower" else self.leader_map
        lo, hi = servo_map.norm.limits()
        mid = (lo + hi) / 2
        mid[GRIPPER] = 50.0
        if step not in ("mid", "sweep"):
            raise ValueError(f"step: 'mid' or 'sweep', got {step!r}")
        self.arm.held = which == "follower"  # held by hand: neither gravity nor the table moves it
        try:
            self._hold(which, mid, 0.3)
            for k in range(len(mid) if step == "sweep" else 0):
                for end in (lo[k], hi[k]):
                    pose = mid.copy()
                    pose[k] = end
                    self._hold(which, pose, SWEEP_HOLD_S)
                self._hold(which, mid, SWEEP_HOLD_S)
        finally:
            self.arm.held = False
        self.report.event("person_calibrate", bus=which, step=step)
        return {"bus": which, "step": step}

    def _hold(self, which: str, pose: np.ndarray, seconds: float) -> None:
        """Hold a pose until `calibrate` has read it (as a person watches its live display): at
        least `seconds` (twin time) and SWEEP_READS packets on that bus, re-setting the pose every
        few ms."""
        bus = self.arm.bus if which == "follower" else self.leader_bus
        clock = self.clock
        end, reads = clock.now() + seconds, bus.transactions + SWEEP_READS
        give_up = end + 10.0
        while (clock.now() < end or bus.transactions < reads) and clock.now() < give_up:
            if which == "follower":
                self.arm.hold_pose(pose)
            else:
                self.set_leader(pose)
            clock.sleep(0.005)

    def status(self) -> dict:
        return {
            "mode": self.mode,
            "phase": self.phase,
            "episode": self.episodes,
            "step": self.steps,
            "engaged": self.engaged,
            "interventions": self.interventions,
            "successes": self.successes,
        }
