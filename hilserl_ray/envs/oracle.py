"""The scripted 'human': an IK-based expert for reach and pick-cube, alone or as an intervention.

`ScriptedExpert(env).act(obs)` returns an action in the wrapped env's format (the EE deltas go
through the same IK as the policy's). It reads privileged sim state through `env.unwrapped`.
`OracleSource` wraps it as an `InterventionSource` that takes over by the rule in
`pipeline.intervention.oracle`, so the human-in-the-loop path runs in CI without a person.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hilserl_ray.config import OracleConfig, TrainConfig
from hilserl_ray.envs.intervention import no_events
from hilserl_ray.envs.scene import CUBE_HALF
from hilserl_ray.envs.sim import SO101SimEnv
from hilserl_ray.features import STATE
from hilserl_ray.so101 import CLOSE, GRIPPER, OPEN, STAY

HOVER_M = 0.05  # approach height above the grasp point
ALIGN_M = 0.005  # horizontal error below which the gripper descends; above it, it re-aligns...
REALIGN_M = 0.012  # ...at the height it reached (going back up only above this: a real arm jitters ~5 mm)
GRASP_TOL_M = 0.006
PAD_FACE_M = 0.0064  # fixed pad's inner face from gripperframe, along the site z axis
CLEARANCE_M = 0.006  # between that face and the cube while descending
CLOSE_STEPS = 2  # control steps the jaws close at least before lifting
JAWS_STILL = 1.0  # gripper units per step: jaws closing slower than this for 2 steps have closed
MAX_CLOSE_STEPS = 20  # ...or lift anyway after this many steps of closing
LIFT_M = 0.10


class ScriptedExpert:
    """Closed-loop expert: proportional EE steps towards waypoints, gripper by phase."""

    def __init__(self, env: Any):
        sim = env.unwrapped
        if not isinstance(sim, SO101SimEnv):
            raise TypeError(f"ScriptedExpert needs the sim env (robot.type 'sim'), got {type(sim).__name__}")
        self.sim = sim
        cfg: TrainConfig = sim.cfg
        self.task = cfg.env.task
        self.step_size = cfg.pipeline.ee_action.step_size_m
        self.discrete = cfg.pipeline.gripper.discrete
        if not cfg.pipeline.ee_action.enabled:
            raise ValueError(
                "pipeline.ee_action.enabled: the scripted expert acts in EE deltas; set it to true"
            )
        self.reset()

    def reset(self) -> None:
        self.closed_steps = 0
        self.lifting = False
        self.last_gripper: float | None = None
        self.still_steps = 0  # steps in a row the measured jaws have not closed further
        self.descending = False

    def keep_closing(self, gripper: float, last: float | None) -> bool:
        """Whether to wait for the jaws (measured gripper now and one step ago; counts the still
        steps): a person waits for the grip before lifting. The real follower moves the gripper at most
        `robot.max_relative_target_deg` per step (the sim does too), so it takes ~8 steps. Two
        still steps in a row: at a real 10 Hz one step's move can be short (the twin measured
        a 1-unit step mid-close when two commands came close together)."""
        still = last is not None and last - gripper <= JAWS_STILL
        self.still_steps = self.still_steps + 1 if still else 0
        closing = self.still_steps < 2
        return self.closed_steps <= CLOSE_STEPS or (closing and self.closed_steps <= MAX_CLOSE_STEPS)

    def act(self, obs: dict[str, np.ndarray] | None = None) -> np.ndarray:
        ee = self.sim.ee_pos()
        if self.task == "reach":
            return self._action(self.sim.target_pos() - ee, STAY)
        cube = self.aim()
        gripper = float(obs[STATE][GRIPPER]) if obs is not None else float(self.sim.joint_state()[GRIPPER])
        last, self.last_gripper = self.last_gripper, gripper
        # Where gripperframe (in the fixed jaw's pad) must be for the cube to sit between the
        # pads: the pad's inner face is 6.4 mm along the site's z axis (towards the moving jaw).
        grasp = cube - self.sim.ee_mat()[:, 2] * (CUBE_HALF + PAD_FACE_M + CLEARANCE_M)
        grasp[2] = cube[2]
        err = grasp - ee
        lifted = cube[2] - CUBE_HALF > 0.01
        if self.closed_steps > 0:  # grasping or lifting
            if np.linalg.norm(err) > 0.03 and not lifted and self.retry:  # lost it: start over
                self.closed_steps, self.lifting, self.still_steps = 0, False, 0
            else:
                self.closed_steps += 1
                self.lifting = self.lifting or not self.keep_closing(gripper, last)
                if not self.lifting:
                    return self._action(np.zeros(3), CLOSE)
                return self.lift(ee)
        if gripper < 60.0:  # open the jaws (away from the cube) before approaching
            up = max(0.0, cube[2] + HOVER_M - ee[2]) if np.linalg.norm(err[:2]) < 0.03 else 0.0
            self.descending = False
            return self._action(np.array([0.0, 0.0, up]), OPEN)
        xy = np.linalg.norm(err[:2])
        self.descending = (self.descending and xy <= REALIGN_M) or xy <= ALIGN_M
        if xy > ALIGN_M:
            up = 0.0 if self.descending else grasp[2] + HOVER_M - ee[2]
            return self._action(np.array([err[0], err[1], up]), OPEN)
        if np.linalg.norm(err) > GRASP_TOL_M:
            err[2] = max(err[2], -0.01)  # descend slowly enough for xy to keep up
            return self._action(err, OPEN)
        self.closed_steps = 1
        return self._action(np.zeros(3), CLOSE)

    retry = True  # start the grasp over when the cube is lost

    def aim(self) -> np.ndarray:
        """The cube position the expert grasps at (the true one)."""
        return self.sim.cube_pos()

    def lift(self, ee: np.ndarray) -> np.ndarray:
        """After the jaws closed: lift to LIFT_M and hold."""
        return self._action(np.array([0.0, 0.0, CUBE_HALF + LIFT_M - ee[2]]), CLOSE)

    def _action(self, delta: np.ndarray, gripper: int) -> np.ndarray:
        a = np.clip(delta / self.step_size, -1.0, 1.0)
        g = float(gripper) if self.discrete else {CLOSE: -1.0, STAY: 0.0, OPEN: 1.0}[gripper]
        return np.array([*a, g], np.float32)


FAILURE_MODES = ("near_miss", "slip", "hover")


class FailingExpert(ScriptedExpert):
    """The expert failing on purpose, for a reward classifier's hard negatives.

    near_miss: closes the jaws, lowers them 3-4.5 cm beside the cube and lifts the empty gripper
    as high as a success;
    slip: grasps, lifts the cube 0.5-2.5 cm (below the 4 cm success height), lets go and rises;
    hover: stops 1-6 cm above the cube and closes the jaws there.
    """

    retry = False

    def __init__(self, env: Any, mode: str, rng: np.random.Generator):
        if mode not in FAILURE_MODES:
            raise ValueError(f"failure mode: expected one of {FAILURE_MODES}, got {mode!r}")
        self.mode, self.rng = mode, rng
        super().__init__(env)

    def reset(self) -> None:
        super().reset()
        angle = self.rng.uniform(0, 2 * np.pi)
        self.offset = np.array([np.cos(angle), np.sin(angle), 0.0]) * self.rng.uniform(0.03, 0.045)
        self.phase, self.phase_steps = 0, 0
        self.slip_at = self.rng.uniform(0.005, 0.025)
        self.hover = self.rng.uniform(0.01, 0.06)
        self.released = False

    def aim(self) -> np.ndarray:
        cube = self.sim.cube_pos()
        return cube + self.offset if self.mode == "near_miss" else cube

    def lift(self, ee: np.ndarray) -> np.ndarray:
        if self.mode == "slip":
            self.released |= self.sim.cube_pos()[2] - CUBE_HALF >= self.slip_at
            if self.released:
                return self._action(np.array([0.0, 0.0, 0.01]), OPEN)
            return self._action(np.array([0.0, 0.0, 0.005]), CLOSE)
        return super().lift(ee)

    def act(self, obs: dict[str, np.ndarray] | None = None) -> np.ndarray:
        if self.mode == "near_miss":  # closed jaws fit beside the cube; open ones would bump it
            ee, aim = self.sim.ee_pos(), self.aim()
            targets = (aim + [0.0, 0.0, HOVER_M], aim, np.array([*ee[:2], CUBE_HALF + LIFT_M]))
            err = targets[self.phase] - ee
            self.phase_steps += 1
            if self.phase < 2 and (np.linalg.norm(err) < 0.008 or self.phase_steps > 25):
                self.phase, self.phase_steps = self.phase + 1, 0
            return self._action(err, CLOSE)
        if self.mode == "hover":
            cube = self.sim.cube_pos()
            err = np.array([*(cube[:2] - self.sim.ee_pos()[:2]), cube[2] + self.hover - self.sim.ee_pos()[2]])
            return self._action(err, CLOSE if np.linalg.norm(err) < 0.01 else OPEN)
        return super().act(obs)


class OracleSource:
    """`InterventionSource`: the scripted expert takes over by the configured rule.

    An episode is assisted with `episode_probability` (scaled down linearly over
    `decay_episodes`), from a random step in its first quarter; any episode is taken over after
    `stuck_steps` steps without progress (the gripper not getting closer to the object, the cube
    not rising). Once engaged it stays engaged to the episode's end, or with `takeover_steps` it
    hands control back after that many steps (and the policy has `stuck_steps` again), so the
    policy also acts where only the expert went before. `noise` is Gaussian noise on the expert's
    xyz action, so interventions are not all identical.
    """

    always = False  # acting from the first step (demos): it never hands control back

    def __init__(self, cfg: TrainConfig, seed: int | None = None):
        self.ocfg: OracleConfig = cfg.pipeline.intervention.oracle
        self.max_steps = cfg.env.max_episode_steps
        self.rng = np.random.default_rng(seed)
        self.expert: ScriptedExpert | None = None
        self.episodes = 0
        self.reset_episode_state()

    def reset_episode_state(self) -> None:
        self.t = 0
        self.engaged = False
        self.engaged_steps = 0
        self.best = np.inf
        self.since_progress = 0
        self.engage_at: int | None = None

    def probability(self) -> float:
        p = self.ocfg.episode_probability
        if self.ocfg.decay_episodes:
            p *= max(0.0, 1.0 - self.episodes / self.ocfg.decay_episodes)
        return p

    def reset(self) -> None:
        self.reset_episode_state()
        if self.rng.random() < self.probability():
            self.engage_at = int(self.rng.integers(0, max(1, self.max_steps // 4)))
        self.episodes += 1
        if self.expert is not None:
            self.expert.reset()

    noise_dims = 3  # the expert's xyz

    def make_expert(self, env: Any):
        """The expert, made at the first step (it reads the env): `act(obs)` and `reset()`."""
        return ScriptedExpert(env)

    def score(self) -> float | None:
        """Progress, lower is better: the gripper's distance to the object (and the cube's lift);
        None: no measure of progress, so the stuck rule never fires."""
        sim = self.expert.sim
        score = np.linalg.norm(sim.ee_pos() - sim.object_pos())
        if sim.task == "pick_cube":
            score -= 5.0 * (sim.cube_pos()[2] - CUBE_HALF)
        return score

    def action(self, obs: dict[str, np.ndarray], env: Any) -> np.ndarray | None:
        if self.expert is None:
            self.expert = self.make_expert(env)
        score = self.score()
        if score is not None and score < self.best - 0.005:
            self.best, self.since_progress = score, 0
        elif score is not None:
            self.since_progress += 1
        if not self.engaged:
            stuck = self.ocfg.stuck_steps is not None and self.since_progress >= self.ocfg.stuck_steps
            self.engaged = stuck or (self.engage_at is not None and self.t >= self.engage_at)
            if self.engaged:
                self.engage_at = None  # the episode's drawn takeover happens once
                self.engaged_steps = 0
                self.expert.reset()
        self.t += 1
        if not self.engaged:
            return None
        a = self.perturb(self.expert.act(obs))
        self.engaged_steps += 1
        if not self.always and self.ocfg.takeover_steps and self.engaged_steps >= self.ocfg.takeover_steps:
            self.engaged = False  # the policy's again, with a fresh stuck window from here
            self.best, self.since_progress = (score if score is not None else np.inf), 0
        return a

    def perturb(self, a: np.ndarray) -> np.ndarray:
        """The expert's action with the configured noise on its xyz."""
        if self.ocfg.noise > 0:
            n = self.noise_dims
            a[:n] = np.clip(a[:n] + self.rng.normal(0.0, self.ocfg.noise, n), -1.0, 1.0)
        return a

    def events(self) -> dict[str, bool]:
        return no_events()

    def close(self) -> None:
        pass
