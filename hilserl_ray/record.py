"""`python -m hilserl_ray.record --config X --episodes N --out DIR [--codec av1|h264] [--a.b=value ...]`.

Drives the env with its intervention source (the scripted oracle in the sim, a teleop device on
the real arm) and writes a LeRobot v3.0 dataset that lerobot itself loads. What is stored is
the robot's raw data: the 6 joint positions, the raw camera frames, the applied action in the
wrapped env's action space, next.reward / next.done and complementary_info.* flags. The
pipeline (proprioception, crop, resize) is re-applied at conversion, so a dataset stays valid
when those settings change.

Each frame also gets `complementary_info.success`, the reward classifier's label: "success is
visible in this frame" (sim: ground truth; real arm: the human holds the labelling key, or
presses success). `--expert near_miss|slip|hover|mix` makes the sim's expert fail on purpose
(hard negatives) and `--until-time-limit` keeps recording after a success (more positives).

In the sim the scripted expert acts on every step by default (`--assist always`); with
`--assist rule` (and on the real arm, where a person decides) steps where the source does not
act get a neutral action (no motion, gripper "stay") and is_intervention False. A "rerecord"
event drops the episode; Ctrl+C keeps every episode saved so far.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from hilserl_ray.config import TrainConfig
from hilserl_ray.configio import ConfigError, load_config
from hilserl_ray.data.lerobot_writer import LeRobotWriter
from hilserl_ray.data.mapping import DONE, INTERVENTION, PENALTY, REWARD, SUCCESS_LABEL, TRUNCATED
from hilserl_ray.envs.pipeline import pipeline_spec, robot_spec
from hilserl_ray.errors import command
from hilserl_ray.features import ACTION, STATE, FeatureSpec
from hilserl_ray.gymenv.oracle import GymExpertSource
from hilserl_ray.gymenv.spaces import is_gym

log = logging.getLogger(__name__)


def dataset_features(cfg: TrainConfig, spec: FeatureSpec) -> dict[str, dict]:
    """The recorded features: raw robot observation, the wrapped env's action, HIL-SERL signals."""
    raw = robot_spec(cfg)
    state = raw.observation[STATE]  # the SO-101: its 6 joints
    features: dict[str, dict] = {
        STATE: {"dtype": "float32", "shape": list(state.shape), "names": list(state.names or [])}
    }
    for key, f in raw.observation.items():
        if f.is_image:
            features[key] = {
                "dtype": "video",
                "shape": list(f.shape),
                "names": ["height", "width", "channels"],
            }
        elif key != STATE:  # e.g. the sim's privileged observation.environment_state
            features[key] = {"dtype": f.dtype, "shape": list(f.shape), "names": list(f.names or []) or None}
    features[ACTION] = {
        "dtype": "float32",
        "shape": list(spec.action.shape),
        "names": list(spec.action.names or []),
    }
    features[REWARD] = {"dtype": "float32", "shape": [1], "names": None}
    features[DONE] = {"dtype": "bool", "shape": [1], "names": None}
    features[TRUNCATED] = {"dtype": "bool", "shape": [1], "names": None}
    features[INTERVENTION] = {"dtype": "bool", "shape": [1], "names": None}
    features[PENALTY] = {"dtype": "float32", "shape": [1], "names": None}
    features[SUCCESS_LABEL] = {"dtype": "bool", "shape": [1], "names": None}
    return features


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


EXPERT_MIX = {"success": 0.4, "near_miss": 0.2, "slip": 0.2, "hover": 0.2}  # --expert mix


class ExpertSource:
    """The sim's scripted expert acting on every step (demonstrations), with the oracle's xyz noise.

    The oracle's takeover rule (`OracleSource`) is for training; recorded demos want the expert
    from the first step. mode: "success" (the expert), a failure mode of `FailingExpert`, or
    "mix" (a seeded draw per episode from EXPERT_MIX).
    """

    def __init__(self, cfg: TrainConfig, seed: int | None, mode: str = "success"):
        self.noise = cfg.pipeline.intervention.oracle.noise
        self.rng = np.random.default_rng(seed)
        self.mode, self.episode_mode = mode, mode
        self.expert = None
        self.env = None

    def reset(self) -> None:
        if self.mode == "mix":
            self.episode_mode = str(self.rng.choice(list(EXPERT_MIX), p=list(EXPERT_MIX.values())))
        self.expert = None

    def action(self, obs: dict, env) -> np.ndarray:
        if self.expert is None:
            from hilserl_ray.envs.oracle import FailingExpert, ScriptedExpert

            if self.episode_mode == "success":
                self.expert = ScriptedExpert(env)
            else:
                self.expert = FailingExpert(env, self.episode_mode, self.rng)
        a = self.expert.act(obs)
        if self.noise > 0:
            a[:3] = np.clip(a[:3] + self.rng.normal(0.0, self.noise, 3), -1.0, 1.0)
        return a

    def events(self) -> dict[str, bool]:
        from hilserl_ray.envs.intervention import no_events

        return no_events()

    def close(self) -> None:
        pass


def neutral_action(spec: FeatureSpec) -> np.ndarray:
    """No motion; a discrete gripper stays (index 1)."""
    a = np.zeros(spec.action.shape, np.float32)
    if spec.discrete_gripper:
        a[-1] = 1.0
    return a


def frame_label(info: dict, truth: bool) -> bool:
    """The classifier label of the frame just acted on: the sim's truth, or the person's word (the
    labelling key held, or the success key pressed on this frame). OR-ed: a source that merely has
    a labelling key (the console page always does) never hides the sim's truth."""
    return bool(truth or info.get("success_held") or info.get("human_success"))


def raw_frame(cfg: TrainConfig, raw: dict, features: dict[str, dict]) -> dict[str, np.ndarray]:
    """The recorded observation fields from a raw robot observation."""
    wanted = [k for k in features if k.startswith("observation.")]
    missing = [k for k in wanted if k not in raw]
    if missing:
        raise KeyError(f"the robot's observation lacks {missing}; it has {sorted(raw)}")
    out = {
        k: np.asarray(raw[k], features[k]["dtype"] if features[k]["dtype"] != "video" else np.uint8)
        for k in wanted
    }
    out[STATE] = out[STATE][: features[STATE]["shape"][0]]
    return out


def record(
    cfg: TrainConfig,
    episodes: int,
    out: Path,
    codec: str = "av1",
    task: str | None = None,
    progress: bool = True,
    assist: str = "always",
    expert: str = "success",
    until_time_limit: bool = False,
    source=None,
) -> Path:
    """Record `episodes` episodes into a new LeRobot v3.0 dataset at `out`; returns `out`.

    assist (sim oracle only): "always" = the scripted expert acts on every step (demos);
    "rule" = the oracle's takeover rule from the config (interventions on a neutral policy).
    expert (assist "always"): "success", "near_miss", "slip", "hover" or "mix".
    until_time_limit: an env success does not end the episode (human events still do).
    source: an `InterventionSource` to use instead of the configured one.
    """
    from tqdm import tqdm

    from hilserl_ray.console.session import open_console
    from hilserl_ray.rig import make_env, make_intervention

    spec = pipeline_spec(cfg)
    features = dataset_features(cfg, spec)
    if source is None and cfg.pipeline.intervention.source == "oracle" and assist == "always":
        if is_gym(cfg):  # the env's own expert (env.gym.expert), every step
            source = GymExpertSource(cfg, cfg.seed, always=True)
        elif cfg.robot.type == "sim":
            source = ExpertSource(cfg, cfg.seed, expert)
    writer = LeRobotWriter(
        Path(out), cfg.env.fps, features, robot_type=f"so101_{cfg.robot.type}", codec=codec
    )  # first: refuses an existing dataset before the robot moves
    console = open_console(cfg, f"record {Path(out).name}")
    if console is not None:
        print(f"console: {console.url}", flush=True)
        source = console.source(source if source is not None else make_intervention(cfg, cfg.seed))
    try:
        env = make_env(cfg, seed=cfg.seed, intervention=source)
    except BaseException:
        if console is not None:
            console.close()
        raise
    if console is not None:
        env = console.watch(env)
    tap = RawTap(env)
    task = task or (cfg.env.gym.id if is_gym(cfg) else f"{cfg.env.task} (so101 {cfg.robot.type})")
    policy_action = neutral_action(spec)
    saved = successes = steps = 0
    bar = tqdm(total=episodes, unit="episode", desc=f"recording {Path(out).name}", disable=not progress)
    try:
        with writer, bar:
            env.reset(seed=cfg.seed)
            while saved < episodes:
                raw = raw_frame(cfg, tap.obs, features)
                truth = getattr(tap.base, "is_success", None)  # the sim's ground truth for this frame
                truth = bool(truth()) if cfg.robot.type == "sim" and callable(truth) else False
                _, reward, terminated, truncated, info = env.step(policy_action)
                label = frame_label(info, truth)
                if (
                    until_time_limit
                    and terminated
                    and not (info.get("human_success") or info.get("human_failure"))
                ):
                    terminated = False
                writer.add_frame(
                    {
                        **raw,
                        ACTION: np.asarray(info.get("action", policy_action), np.float32),
                        REWARD: np.float32(reward),
                        DONE: bool(terminated or truncated),
                        TRUNCATED: bool(truncated and not terminated),
                        INTERVENTION: bool(info.get("is_intervention", False)),
                        PENALTY: np.float32(info.get("discrete_penalty", 0.0)),
                        SUCCESS_LABEL: label,
                    },
                    task=task,
                )
                steps += 1
                if info.get("rerecord"):
                    writer.discard_episode()
                    env.reset()
                elif terminated or truncated:
                    writer.save_episode()
                    saved += 1
                    successes += bool(info.get("is_success", False) or label)
                    bar.update(1)
                    bar.set_postfix(success=f"{successes}/{saved}", steps=steps)
                    if saved < episodes:
                        env.reset()
    finally:
        env.close()
        if console is not None:
            console.close()
    log.info("recorded %d episodes (%d successful, %d steps) to %s", saved, successes, steps, out)
    return Path(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hilserl_ray.record",
        description="Record demonstrations (sim: the scripted oracle) as a LeRobot v3.0 dataset. "
        "Any config field can be overridden: --env.max_episode_steps=50",
    )
    p.add_argument("--config", required=True, help="YAML file (as for training)")
    p.add_argument("--episodes", type=int, required=True, help="episodes to record")
    p.add_argument("--out", type=Path, required=True, help="new dataset directory")
    p.add_argument(
        "--codec", choices=["av1", "h264"], default="av1", help="video codec (LeRobot's default: av1)"
    )
    p.add_argument("--task", default=None, help="task description stored with every frame")
    p.add_argument(
        "--assist",
        choices=["always", "rule"],
        default="always",
        help="sim oracle: the expert acts on every step (demos), or takes over by the config's rule",
    )
    p.add_argument(
        "--expert",
        choices=["success", "near_miss", "slip", "hover", "mix"],
        default="success",
        help="sim: the expert succeeds, or fails on purpose (reward-classifier hard negatives); mix = a "
        f"seeded draw per episode {EXPERT_MIX}",
    )
    p.add_argument(
        "--until-time-limit",
        action="store_true",
        help="keep recording after the env reports success (more positive frames for a classifier)",
    )
    p.add_argument("--arm", default=None, help="a fleet config (`robots`): the arm to record with")
    p.add_argument("--no-progress", action="store_true")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from hilserl_ray.fleet import one_arm

    cfg = one_arm(load_config(args.config, rest), args.arm, args.config)
    problems = []
    if args.episodes <= 0:
        problems.append(f"--episodes: got {args.episodes}; a positive number of episodes")
    if cfg.pipeline.intervention.source == "none":
        problems.append(
            "pipeline.intervention.source: got 'none'; a source that acts: 'oracle' (sim), 'keyboard', "
            "'gamepad', 'leader' or 'web' (the console page)"
        )
    if (args.out / "meta" / "info.json").exists():
        problems.append(f"--out: got '{args.out}'; a new directory (it already holds a dataset)")
    elif args.out.exists() and not args.out.is_dir():
        problems.append(f"--out: got '{args.out}', which is a file; a new directory for the dataset")
    elif args.out.is_dir() and any(args.out.iterdir()):
        problems.append(f"--out: got '{args.out}', which holds other files; a new or empty directory")
    scripted = (
        cfg.robot.type == "sim" and cfg.pipeline.intervention.source == "oracle" and args.assist == "always"
    )
    if args.expert != "success" and not scripted:
        problems.append(
            f"--expert: got '{args.expert}'; only the sim's scripted expert fails on purpose "
            "(robot.type sim, pipeline.intervention.source oracle, --assist always)"
        )
    from hilserl_ray.reward.spec import check_classifier

    problems += [f"{p}: got {v!r}; {m}" for p, v, m in check_classifier(cfg)]
    if problems:
        raise ConfigError(args.config, problems)
    record(
        cfg,
        args.episodes,
        args.out,
        codec=args.codec,
        task=args.task,
        progress=cfg.logging.progress_bar and not args.no_progress,
        assist=args.assist,
        expert=args.expert,
        until_time_limit=args.until_time_limit,
    )
    print(f"dataset written to {args.out} (train with --dataset.path={args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
