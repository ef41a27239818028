"""The real-arm journey, whole, on the twin: the user's own commands in the order docs/real_arm.md
gives them, from calibration to an exported run.

    python -m hilserl_ray.twin.journey [--smoke] [--out outputs/journey] [--seed 0] [--time-scale S] [--print-commands]

It starts a twin and plays the owner: runs each command of the guide as a subprocess, spelled as
the guide spells it with the twin's ports, URLs and the journey's paths in place of a user's
devices, answers `calibrate`'s prompts (Enter; the twin's person moves the joints), edits the
config as the guide says (ports, calibration files, camera), and tells the twin's person what a
person would do at each step (demonstrate, fail on purpose, intervene, keep hands off). Prints one
table: stage, command, wall time, figure. `--smoke` is the CI size (`make journey-smoke`);
without it the sizes of issue 24's benchmark. `--print-commands` prints the commands only (what
tests/test_journey.py compares with the guide). `--time-scale S` runs the twin's world at S x the
wall clock and the config's env.fps (and camera fps) at S x theirs: each step is still 1/env.fps s
of twin time, and the learner has 1/S x the wall time per step (a CPU learner's updates per env
step as a GPU learner's at the real rate); the table's head says the scale and the rates.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hilserl_ray.errors import ConfigError, command
from hilserl_ray.twin.clock import TwinClock, fmt_hz, parse_time_scale
from hilserl_ray.twin.launch import TwinProcess

CONFIG = "configs/so101_twin.yaml"  # configs/so101_real.yaml as the twin stands in for the arm
PY = ".venv/bin/python"  # how the guide spells the interpreter; the journey runs sys.executable
# the twin answers from Python threads a loaded machine starves: calibrate waits as long as the
# journey's config does (robot.bus_timeout_ms; make twin-test's value), as the guide says for a
# slow USB adapter
TIMEOUT_MS = 500


@dataclass(frozen=True)
class Sizes:
    demos: int
    labelled: int  # classifier training episodes (label, near miss, label, slip, hover in turn)
    labelled_test: int
    classifier_steps: int
    env_steps: int
    eval_episodes: int
    episode_steps: int  # env.max_episode_steps
    config: dict = field(default_factory=dict)  # further config edits (dotted keys)


SMOKE = Sizes(
    demos=2,
    labelled=4,  # label, near miss, label, slip: CI's 5 minutes hold no hover
    labelled_test=3,
    classifier_steps=30,
    env_steps=200,
    eval_episodes=2,
    episode_steps=80,
    config={
        "learner.training_starts": 100,
        "policy.batch_size": 32,
        "policy.hidden_dims": [64, 64],
        "policy.latent_dim": 32,
        "checkpoint.every_updates": 20,
    },
)
FULL = Sizes(
    demos=10,
    labelled=100,  # 40 label + 60 failures
    labelled_test=70,  # 28 label + 42 failures: the bound is judged on >= 40 negative episodes
    classifier_steps=1500,
    env_steps=10000,
    eval_episodes=10,
    episode_steps=100,
)


# (stage, the twin's person's mode, the command after `python -m`), in the guide's order
STAGES = [
    (
        "calibrate follower",
        None,
        "hilserl_ray.calibrate --port {follower} --out {follower_cal} --timeout-ms {timeout_ms}",
    ),  # fmt: skip
    (
        "calibrate leader",
        None,
        "hilserl_ray.calibrate --port {leader} --out {leader_cal} --leader --timeout-ms {timeout_ms}",
    ),  # fmt: skip
    ("find cameras", None, "hilserl_ray.find_cameras {camera} --save-dir {cameras}"),
    ("check config", None, "hilserl_ray.train --config {config} --dry-run"),
    ("record demos", "demo", "hilserl_ray.record --config {config} --episodes {demos_n} --out {demos}"),
    ("inspect demos", None, "hilserl_ray.data.inspect {demos} --config {config}"),
    ("record labelled", "mix", "hilserl_ray.record --config {config} --episodes {labelled_n} --out {clf}"),
    ("record held out", "mix", "hilserl_ray.record --config {config} --episodes {test_n} --out {clf_test}"),
    (
        "reward train",
        None,
        "hilserl_ray.reward train --config {config} --dataset {clf} --out {model} --steps {clf_steps}",
    ),  # fmt: skip
    (
        "reward evaluate",
        None,
        "hilserl_ray.reward evaluate --model {model} --dataset {clf_test} --out {model_eval}",
    ),  # fmt: skip
    (
        "train",
        "oracle",
        "hilserl_ray.train --config {config} --dataset.path={demos} --pipeline.reward.classifier={model} --pipeline.reward.consecutive_frames=3 --pipeline.reward.min_ee_height_m=0.05",
    ),  # fmt: skip
    ("plot", None, "hilserl_ray.plot {run}"),
    ("evaluate", "hands_off", "hilserl_ray.evaluate {run} --episodes {eval_n} --no-video"),
    ("export run", None, "hilserl_ray.data.export --run {run} --out {export_all}"),
    (
        "export interventions",
        None,
        "hilserl_ray.data.export --run {run} --out {export} --only-interventions",
    ),  # fmt: skip
    ("inspect export", None, "hilserl_ray.data.inspect {export}"),
]


@dataclass
class Stage:
    name: str
    argv: list[str]  # after the interpreter: ["-m", module, ...]
    person: str | None = None  # the twin's person's mode for this stage
    figure: str = ""
    seconds: float = 0.0
    rc: int | None = None

    def spelled(self) -> str:
        return shlex.join([PY, *self.argv])


class Journey:
    def __init__(
        self, out: Path, sizes: Sizes, seed: int = 0, twin_port: int | None = None, time_scale: float = 1.0
    ):
        self.out, self.sizes, self.seed = out, sizes, seed
        self.clock = TwinClock(time_scale)  # the twin's; here for the rates the config gets
        self.twin: TwinProcess | None = None
        self.twin_port = twin_port
        self.cfg_path = out / "so101.yaml"
        self.p = {  # the journey's paths, in place of the guide's
            "follower_cal": out / "calibration" / "follower.json",
            "leader_cal": out / "calibration" / "leader.json",
            "cameras": out / "cameras",
            "demos": out / "data" / "so101_pick_demos",
            "clf": out / "data" / "so101_clf",
            "clf_test": out / "data" / "so101_clf_test",
            "model": out / "models" / "so101_clf",
            "model_eval": out / "so101_clf_eval",
            "run": out / "run",
            "export_all": out / "data" / "so101_run1",
            "export": out / "data" / "so101_run1_interventions",
        }

    # ------------------------------------------------------------------ the commands, as the guide spells them
    def stages(self, devices: dict[str, str]) -> list[Stage]:
        s = self.sizes
        values = {**self.p, **devices, "config": self.cfg_path, "demos_n": s.demos, "labelled_n": s.labelled}
        values |= {
            "test_n": s.labelled_test,
            "timeout_ms": TIMEOUT_MS,
            "clf_steps": s.classifier_steps,
            "eval_n": s.eval_episodes,
        }
        quoted = {k: shlex.quote(str(v)) for k, v in values.items()}
        return [
            Stage(name, ["-m", *shlex.split(line.format(**quoted))], person) for name, person, line in STAGES
        ]

    # ------------------------------------------------------------------ the config the owner edits
    def write_config(self, devices: dict[str, str]) -> None:
        """configs/so101_twin.yaml with what the guide says to edit: ports, calibration files, the
        camera (steps 1 and 2), and the journey's sizes and output dir; with a slowed twin the
        rates x its scale."""
        cfg = yaml.safe_load(Path(CONFIG).read_text())
        edits = {
            "output_dir": str(self.p["run"]),
            "total_env_steps": self.sizes.env_steps,
            "env.max_episode_steps": self.sizes.episode_steps,
            "robot.port": devices["follower"],
            "robot.calibration": str(self.p["follower_cal"]),
            "pipeline.intervention.leader_port": devices["leader"],
            "pipeline.intervention.leader_calibration": str(self.p["leader_cal"]),
            "pipeline.intervention.keys_url": devices["keys"],
            "env.cameras.0.device": devices["camera"],
            # a frame may be 5/fps s old before the robot stops (hardware/robot_env.py): on a
            # loaded 2-core machine the twin's renderer lags by a second; it still streams at 5
            # (x the scale, as every rate of a slowed twin)
            "env.cameras.0.fps": self.clock.wall_hz(2),
            "env.fps": self.rates(cfg)["env.fps"],
            "robot.bus_timeout_ms": TIMEOUT_MS,  # as make twin-test: a starved twin, wait, don't crash
            "logging.progress_bar": False,
            **self.sizes.config,
        }
        for key, value in edits.items():
            node = cfg
            *parents, last = key.split(".")
            for k in parents:
                node = node[int(k)] if isinstance(node, list) else node.setdefault(k, {})
            node[int(last) if isinstance(node, list) else last] = value
        self.cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))

    def rates(self, cfg: dict | None = None) -> dict[str, float]:
        """The control rate on the twin's clock (the config's) and on the wall clock (the run's)."""
        cfg = yaml.safe_load(Path(CONFIG).read_text()) if cfg is None else cfg
        real = float(cfg["env"]["fps"])
        return {"real": real, "env.fps": self.clock.wall_hz(real)}

    def summary(self) -> str:
        r = self.rates()
        if self.clock.scale == 1:
            return f"time scale 1: the twin keeps the wall clock; env.fps {fmt_hz(r['real'])} Hz"
        return (
            f"time scale {self.clock.scale:g}: the twin's clock runs at {self.clock.scale:g} x the wall clock; "
            f"env.fps {fmt_hz(r['env.fps'])} Hz on the wall clock = {fmt_hz(r['real'])} Hz of twin time "
            f"(the learner has {1 / self.clock.scale:g} x the wall time per env step)"
        )

    # ------------------------------------------------------------------ running
    def run(self) -> list[Stage]:
        self.out.mkdir(parents=True, exist_ok=True)
        twin_args = ["--seed", str(self.seed), f"--env.max_episode_steps={self.sizes.episode_steps}"]
        twin_args += ["--time-scale", f"{self.clock.scale:g}"]
        print(f"[journey] {self.summary()}", flush=True)
        self.twin = TwinProcess(CONFIG, self.out / "twin", *twin_args, port=self.twin_port).wait_ready()
        paths = self.twin.paths
        devices = {
            "follower": paths["robot.port"],
            "leader": paths["pipeline.intervention.leader_port"],
            "camera": paths["env.cameras.0.device"],
            "keys": paths["pipeline.intervention.keys_url"],
        }
        stages = self.stages(devices)
        try:
            for st in stages:
                if st.name == "check config":
                    self.write_config(devices)
                self.run_stage(st)
                print(f"[journey] {st.name}: {st.figure} ({st.seconds:.0f} s)", flush=True)
                if st.rc != 0:
                    break
        finally:
            self.twin.stop()
        return stages

    def run_stage(self, st: Stage) -> None:
        if st.person is not None:
            self.twin.post(f"person?mode={st.person}")
        log = self.out / "logs" / f"{st.name.replace(' ', '_')}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        before = self.twin.status()["human"]
        if st.argv[1] == "hilserl_ray.calibrate":
            text, st.rc = self.calibrate(st, log)
        else:
            with log.open("w") as f:
                st.rc = subprocess.run(
                    [sys.executable, *st.argv], stdout=f, stderr=subprocess.STDOUT
                ).returncode
            text = log.read_text()
        st.seconds = time.monotonic() - t0
        after = self.twin.status()["human"]
        try:
            st.figure = FIGURES.get(st.name, lambda *_: "")(self, text, before, after)
        except Exception as e:  # a figure that cannot be read is shown, not fatal
            st.figure = f"? ({type(e).__name__}: {e})"
        if st.rc != 0:
            st.figure = f"FAILED exit {st.rc}: " + " | ".join(text.strip().splitlines()[-3:])

    def calibrate(self, st: Stage, log: Path) -> tuple[str, int]:
        """Play the person at the keyboard: on each prompt the twin's person poses the arm, then Enter."""
        which = "leader" if "--leader" in st.argv else "follower"
        proc = subprocess.Popen(
            [sys.executable, *st.argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        chunks: list[str] = []
        reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stdout.read(1), "")))
        reader.start()
        for prompt, step in (("middle of its range", "mid"), ("Recording:", "sweep")):
            deadline = time.monotonic() + 60
            while prompt not in "".join(chunks) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.poll() is not None:
                break
            self.twin.post(f"person/calibrate?bus={which}&step={step}", timeout=120)
            try:
                proc.stdin.write("\n")
                proc.stdin.flush()
            except BrokenPipeError:  # it stopped (its error is in its output)
                break
        rc = proc.wait(timeout=60)
        reader.join(timeout=5)
        text = "".join(chunks)
        log.write_text(text)
        return text, rc


# ---------------------------------------------------------------------- figures, one per stage
def _calibration(j: Journey, text, before, after) -> str:
    which = "leader" if "leader" in text.rsplit("saved", 1)[-1][:200] else "follower"
    mine = json.loads(j.p[f"{which}_cal"].read_text())
    arm = json.loads((j.out / "twin" / "calibration" / f"{which}.json").read_text())
    diff = max(
        abs(mine[m][k] - arm[m][k]) for m in arm for k in ("range_min", "range_max") if m != "wrist_roll"
    )
    return f"ranges within {diff} steps of the arm's"


def _cameras(j: Journey, text, before, after) -> str:
    found = [x for x in text.splitlines() if "fps" in x]
    return f"{len(found)} camera(s): " + "; ".join(x.replace("\t", " ") for x in found)


def _recorded(j: Journey, text, before, after) -> str:
    m = re.search(r"recorded (\d+) episodes \((\d+) successful", text)
    truth = after["successes"] - before["successes"]
    return f"{m[2]}/{m[1]} successful (twin's ground truth: {truth})"


def _inspect(j: Journey, text, before, after) -> str:
    m = re.search(r"(\d+) episodes?, (\d+) frames", text)
    return f"{m[1]} episodes, {m[2]} frames" if m else text.strip().splitlines()[0][:80]


def _reward_train(j: Journey, text, before, after) -> str:
    m = re.search(r"balanced accuracy ([\d.]+%), false successes on (\S+) of (\d+) negative", text)
    return f"held-out balanced accuracy {m[1]}, false successes {m[2]} of {m[3]} negative episodes"


def _reward_eval(j: Journey, text, before, after) -> str:
    m = re.search(r"balanced accuracy ([\d.]+%).*negative episodes ([\d.]+%) \((\d+) episodes\)", text)
    return f"balanced accuracy {m[1]}, false positives {m[2]} of {m[3]} negative episodes"


def _train(j: Journey, text, before, after) -> str:
    rows = [json.loads(x) for x in (j.p["run"] / "metrics.jsonl").read_text().splitlines() if x.strip()]
    last = {k: int(v) for k, v in rows[-1].items() if k in ("env_steps", "episodes", "updates")}
    per_step = last["updates"] / last["env_steps"] if last.get("env_steps") and "updates" in last else None
    return (
        f"{last.get('env_steps')} env steps, {last.get('episodes')} episodes, {last.get('updates')} updates"
        + (f" ({per_step:.2f} per env step)" if per_step is not None else "")
        + "; "
        f"the person took over in {after['interventions'] - before['interventions']} episodes, "
        f"twin successes {after['successes'] - before['successes']}" + _robot_hz(j)
    )


def _robot_hz(j: Journey) -> str:
    """The rate the twin saw the robot step at (its last 20 steps, wall clock)."""
    hz = j.twin.status()["clock"]["robot_hz"] if j.twin is not None else None
    return "" if hz is None else f"; the twin saw it step at {hz:g} Hz"


def _evaluate(j: Journey, text, before, after) -> str:
    ev = json.loads((j.p["run"] / "eval.json").read_text())
    truth = after["successes"] - before["successes"]
    return f"success {ev['success_rate']:.0%} (twin's ground truth {truth}/{ev['episodes']})"


def _export(j: Journey, text, before, after) -> str:
    m = re.search(r"(\d+) (intervention stretches|episodes), (\d+) frames", text)
    return f"{m[1]} {m[2]}, {m[3]} frames"


FIGURES = {
    "calibrate follower": _calibration,
    "calibrate leader": _calibration,
    "find cameras": _cameras,
    "check config": lambda j, text, *_: "config OK" if "config OK" in text else "?",
    "record demos": _recorded,
    "inspect demos": _inspect,
    "record labelled": _recorded,
    "record held out": _recorded,
    "reward train": _reward_train,
    "reward evaluate": _reward_eval,
    "train": _train,
    "evaluate": _evaluate,
    "plot": lambda j, text, *_: ", ".join(x.name for x in sorted(j.p["run"].glob("*.png"))),
    "export run": _export,
    "export interventions": _export,
    "inspect export": _inspect,
}


def table(stages: list[Stage], total_s: float, summary: str = "") -> str:
    rows = [("stage", "command", "wall s", "figure")]
    rows += [(s.name, s.spelled(), f"{s.seconds:.0f}" if s.rc is not None else "-", s.figure) for s in stages]
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:>{w[2]}}  {r[3]}" for r in rows]
    return "\n".join([*([summary] if summary else []), *lines, f"total {total_s:.0f} s"])


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m hilserl_ray.twin.journey", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--out", type=Path, default=Path("outputs/journey"))
    p.add_argument("--smoke", action="store_true", help="CI sizes: 2 demos, 200 env steps, 2 eval episodes")
    p.add_argument("--seed", type=int, default=0, help="the twin's seed (scene, person)")
    p.add_argument("--port", type=int, default=None, help="the twin's HTTP port (default: a free one)")
    p.add_argument(
        "--time-scale",
        default="1",
        metavar="S",
        help="0 < S <= 1: the twin's clock runs at S x the wall clock and env.fps is set to S x its own",
    )
    p.add_argument("--print-commands", action="store_true", help="print the commands, run nothing")
    args = p.parse_args(argv)
    time_scale = parse_time_scale(args.time_scale)
    journey = Journey(args.out, SMOKE if args.smoke else FULL, args.seed, args.port, time_scale)
    if args.print_commands:
        devices = {"follower": "<follower>", "leader": "<leader>", "camera": "<camera>", "keys": "<keys>"}
        for st in journey.stages(devices):
            print(st.spelled())
        return 0
    marker = args.out / ".journey"
    if args.out.exists() and any(args.out.iterdir()):
        if not marker.exists():  # delete only what a journey made
            raise ConfigError("command line", [f"--out: {args.out} is not empty and not a journey's; pick another dir"])  # fmt: skip
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    marker.touch()
    t0 = time.monotonic()
    stages = journey.run()
    print(table(stages, time.monotonic() - t0, journey.summary()), flush=True)
    return 0 if all(s.rc == 0 for s in stages) else 1


if __name__ == "__main__":
    sys.exit(main())
