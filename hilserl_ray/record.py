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

In the sim the scripted expert acts on every step by default (`--assist always`); on the real
arm the leader arm drives from each episode's first step (`--assist always`: a demonstration is
the person's from step 0). With `--assist rule`, and for keys or a gamepad, steps where the source
does not act get a neutral action (no motion, gripper "stay") and is_intervention False. A "rerecord"
event drops the episode; Ctrl+C keeps every episode saved so far.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hilserl_ray.config import TrainConfig
from hilserl_ray.configio import NO_BUFFER_MIX, ConfigError, load_config
from hilserl_ray.data.lerobot_writer import LeRobotWriter
from hilserl_ray.data.mapping import DONE, INTERVENTION, PENALTY, REWARD, SUCCESS_LABEL, TRUNCATED
from hilserl_ray.envs.intervention import no_events
from hilserl_ray.envs.oracle import FailingExpert, ScriptedExpert
from hilserl_ray.envs.pipeline import pipeline_spec, robot_spec
from hilserl_ray.errors import command
from hilserl_ray.features import ACTION, STATE, FeatureSpec
from hilserl_ray.fleet import one_arm
from hilserl_ray.fsutil import unwritable
from hilserl_ray.gymenv.oracle import GymExpertSource
from hilserl_ray.gymenv.spaces import is_gym
from hilserl_ray.reward.spec import check_classifier
from hilserl_ray.rig import make_intervention
from hilserl_ray.runtime.collector import Step, collecting

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
            if self.episode_mode == "success":
                self.expert = ScriptedExpert(env)
            else:
                self.expert = FailingExpert(env, self.episode_mode, self.rng)
        a = self.expert.act(obs)
        if self.noise > 0:
            a[:3] = np.clip(a[:3] + self.rng.normal(0.0, self.noise, 3), -1.0, 1.0)
        return a

    def events(self) -> dict[str, bool]:
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


def scripted_expert(cfg: TrainConfig, assist: str) -> bool:
    """Whether the sim's scripted expert acts on every step (the default for sim demos)."""
    return cfg.robot.type == "sim" and cfg.pipeline.intervention.source == "oracle" and assist == "always"


def sim_success(cfg: TrainConfig, env) -> bool:
    """The sim's ground truth for its current state (False on the real arm)."""
    truth = getattr(env.unwrapped, "is_success", None)
    return bool(truth()) if cfg.robot.type == "sim" and callable(truth) else False


def dataset_frame(cfg: TrainConfig, features: dict[str, dict], step: Step, label: bool) -> dict:
    """A dataset frame: the raw observation acted on, what was applied and what followed."""
    row = step.row
    return {
        **raw_frame(cfg, step.raw, features),
        ACTION: row["action"],
        REWARD: row["reward"],
        DONE: row["terminated"] or row["truncated"],
        TRUNCATED: row["truncated"] and not row["terminated"],
        INTERVENTION: row["is_intervention"],
        PENALTY: row["discrete_penalty"],
        SUCCESS_LABEL: label,
    }


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

    assist: "always" = the sim's scripted expert acts on every step, a leader arm drives from
    each episode's first step (demos); "rule" = the sim oracle's takeover rule from the config, or
    the person takes over when they choose (interventions on a neutral policy).
    expert (assist "always"): "success", "near_miss", "slip", "hover" or "mix".
    until_time_limit: an env success does not end the episode (human events still do).
    source: an `InterventionSource` to use instead of the configured one.
    """
    spec = pipeline_spec(cfg)
    features = dataset_features(cfg, spec)
    if source is None and scripted_expert(cfg, assist):  # a gym env (robot.type sim): its own expert
        source = (
            GymExpertSource(cfg, cfg.seed, always=True)
            if is_gym(cfg)
            else ExpertSource(cfg, cfg.seed, expert)
        )
    elif source is None and assist == "always" and cfg.robot.type != "sim":
        source = make_intervention(cfg, cfg.seed, demonstrating=True)  # the leader drives from step 0
    writer = LeRobotWriter(
        Path(out), cfg.env.fps, features, robot_type=f"so101_{cfg.robot.type}", codec=codec
    )  # first: refuses an existing dataset before the robot moves
    task = task or (cfg.env.gym.id if is_gym(cfg) else f"{cfg.env.task} (so101 {cfg.robot.type})")
    action = neutral_action(spec)
    saved = successes = 0
    name = Path(out).name
    with (
        collecting(cfg, f"record {name}", cfg.seed, source, until_time_limit=until_time_limit) as collector,
        writer,
        tqdm(total=episodes, unit="episode", desc=f"recording {name}", disable=not progress) as bar,
    ):
        collector.reset(seed=cfg.seed)
        while saved < episodes:
            truth = sim_success(cfg, collector.env)  # for the frame about to be acted on
            step = collector.step(action)
            label = frame_label(step.info, truth)
            writer.add_frame(dataset_frame(cfg, features, step, label), task=task)
            if step.episode is None:
                continue
            if step.episode.rerecord:
                writer.discard_episode()
                collector.reset()
                continue
            writer.save_episode()
            saved += 1
            successes += step.episode.success or label
            bar.update(1)
            bar.set_postfix(success=f"{successes}/{saved}", steps=collector.steps)
            if saved < episodes:
                collector.reset()
    log.info("recorded %d episodes (%d successful, %d steps) to %s", saved, successes, collector.steps, out)
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
        help="always: the sim's expert acts on every step, a leader arm drives from the first step (demos); "
        "rule: the sim oracle takes over by the config's rule, a person when they choose",
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
    cfg = one_arm(load_config(args.config, [*rest, *NO_BUFFER_MIX]), args.arm, args.config)
    problems = []
    if args.episodes <= 0:
        problems.append(f"--episodes: got {args.episodes}; a positive number of episodes")
    if cfg.pipeline.intervention.source == "none":
        problems.append(
            "pipeline.intervention.source: got 'none'; record needs a source that acts to record its "
            "actions: --pipeline.intervention.source=oracle (the sim's scripted expert, robot.type sim), "
            "keyboard, gamepad, leader (with --pipeline.intervention.leader_port and "
            "--pipeline.intervention.leader_calibration) or web (the console page)"
        )
    if (args.out / "meta" / "info.json").exists():
        problems.append(f"--out: got '{args.out}'; a new directory (it already holds a dataset)")
    elif args.out.exists() and not args.out.is_dir():
        problems.append(f"--out: got '{args.out}', which is a file; a new directory for the dataset")
    elif args.out.is_dir() and any(args.out.iterdir()):
        problems.append(f"--out: got '{args.out}', which holds other files; a new or empty directory")
    elif (blocked := unwritable(args.out)) is not None:
        problems.append(
            f"--out: got '{args.out}'; '{blocked}' is not writable by this user: pick a directory you can write"
        )
    if args.expert != "success" and not scripted_expert(cfg, args.assist):
        problems.append(
            f"--expert: got '{args.expert}'; only the sim's scripted expert fails on purpose "
            "(robot.type sim, pipeline.intervention.source oracle, --assist always)"
        )
    problems += [p.line() for p in check_classifier(cfg)]
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
