"""Chaos: kill -9 the learner, the robot actor and the driver (then `--resume`) at seeded random
moments of a sim training run; per kill, what the robots and the replay store went through.

    nice -n 10 python bench/chaos.py                            # 10 kills over 5,000 env steps
    nice -n 10 python bench/chaos.py --kills 3 --steps small    # while developing (~1,200 steps)
    nice -n 10 python bench/chaos.py --kills 10 --seed 0 --eval-episodes 20 [-- --config.override=x]

The run is bench/learn_reach.py's (configs/sim_reach.yaml, 5 oracle demos, the oracle
intervening, one update per env step) with a progress line every 0.5 s, chunks of 8 transitions
(so "sending again" shows within a second), a checkpoint every 500 updates and as many robot
restarts allowed as there are kills. Kill points are seeded: one env-step threshold drawn in each
of `--kills` equal slices of the run (from 100 steps after training starts to 90% of it), the kinds
dealt evenly (learner, robot actor, driver) in a seeded order; a kill waits
until the previous one has recovered.

Per kill it prints: what was killed and when; the seconds until the robots were sending again
(env_steps rising in the driver's progress lines past where they stood when the replacement was
up), measured from the kill and from the replacement being up (learner: its `learner up` line;
robot actor: the driver's `arm ... up` line for the new process; driver: the resumed driver's
`learner up` line); the acknowledged transitions (rows committed to `<output_dir>/replay/online`,
read as the product reads a run's store) just before the kill and after recovery, and how many of
the ones before are missing or changed after; env_steps, updates and episodes before and after.
At the end: transitions lost, counters that went back in any progress line, the slowest recovery,
and the deterministic eval (`python -m hilserl_ray.evaluate`, fixed seed) of the chaos run's final
checkpoint next to a clean run of the same seed and env steps. Everything also goes to
`<out>/chaos.json`; each driver's timestamped output to `<out>/chaos/driver<N>.log`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from demos import record_demos

from hilserl_ray.buffer import ReplayBuffer
from hilserl_ray.runtime.checkpoint import latest_checkpoint
from hilserl_ray.runtime.procs import command_line, descendants
from hilserl_ray.runtime.rundir import replay_dir

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/sim_reach.yaml"
STEPS = {"full": 5000, "small": 1200}
KINDS = ("learner", "robot", "driver")
RECOVERY_LIMIT_S = 5.0  # the bound, on the clock from the replacement being up
EVAL_MARGIN = 0.10
WAIT_S = 600.0  # the most any one step of a kill may take before the benchmark gives up
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
}

PROGRESS = re.compile(r"\[hilserl_ray\] env_steps\s+(\d+) \| updates\s+(\d+) \| episodes (\d+)")
LEARNER_UP = re.compile(r"\[hilserl_ray\] learner up \(pid (\d+)")
ARM_UP = re.compile(r"\[hilserl_ray\] arm '[^']+' up \(pid (\d+)")
COUNTERS = ("env_steps", "updates", "episodes")
UP_MEANS = (
    "learner: its `learner up` line; robot: `arm ... up` for the new process; driver: the resumed learner up"
)
DRIVER_NOTE = (
    "; a resumed run starts its robot actor after its learner: up to {:.1f} s of it is that start-up"
)
PHASES = {  # the moments each kill's row records, as printed
    "learner": {"driver_saw_death": "driver saw it", "process_started": "new process", "up": "learner up"},
    "robot": {"process_started": "new process", "up": "arm up"},
    "driver": {
        "actors_gone": "actors gone, --resume",
        "ray_up": "Ray up",
        "up": "learner up",
        "robot_up": "robot actor up",
    },
}


class Driver:
    """One `python -m hilserl_ray.train` process; its output lines, each stamped on arrival."""

    def __init__(self, args: list[str], log: Path, t0: float):
        self.t_start = time.time()
        self.t0 = t0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hilserl_ray.train", *args],
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._log = log.open("w")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            t = time.time()
            with self._lock:
                self.lines.append((t, line.rstrip()))
            self._log.write(f"{t - self.t0:9.2f} {line}")
            self._log.flush()
            if "[hilserl_ray]" in line and not PROGRESS.search(line):
                print(f"  {t - self.t0:7.1f} s  {line.strip()[14:]}", flush=True)

    def snapshot(self) -> list[tuple[float, str]]:
        with self._lock:
            return list(self.lines)

    def progress(self) -> list[tuple[float, dict]]:
        """(time, counters) of each progress line."""
        return [
            (t, dict(zip(COUNTERS, map(int, m.groups()), strict=True)))
            for t, s in self.snapshot()
            if (m := PROGRESS.search(s))
        ]

    def events(self, pattern: re.Pattern) -> list[tuple[float, int]]:
        """(time, pid) of each line matching `pattern` (learner up, arm up)."""
        return [(t, int(m[1])) for t, s in self.snapshot() if (m := pattern.search(s))]

    def first_line(self, text: str, after: float = 0.0) -> float | None:
        return next((t for t, s in self.snapshot() if t > after and text in s), None)

    def tail(self, n: int = 40) -> str:
        return "\n".join(s for _, s in self.snapshot()[-n:])

    def close(self) -> None:
        self._thread.join(timeout=10)
        self._log.close()


class Stuck(RuntimeError):
    """A kill the run did not recover from within WAIT_S (the benchmark stops there)."""


def wait_for(pred, what: str, driver: Driver | None = None, timeout: float = WAIT_S):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        if driver is not None and driver.proc.poll() is not None and not pred():
            raise Stuck(f"the driver exited {driver.proc.returncode} waiting for {what}:\n{driver.tail()}")
        time.sleep(0.05)
    raise Stuck(
        f"timed out after {timeout:.0f} s waiting for {what}" + (f":\n{driver.tail()}" if driver else "")
    )


# ------------------------------------------------------------------------------ the store
def committed(out: Path) -> dict[int, bytes]:
    """The acknowledged transitions: every committed row of the run's online replay store that
    holds a transition (not an episode's final observation), global row number -> a digest of
    all its fields. Read as the product reads a run's store (read-only, beside its learner)."""
    buf = ReplayBuffer.open(replay_dir(out) / "online")
    try:
        pos = buf.live_positions()
        pos = pos[~np.asarray(buf.column("is_last"))[pos]]
        rows = np.concatenate(
            [
                np.ascontiguousarray(np.asarray(buf.column(f))[pos]).reshape(len(pos), -1).view(np.uint8)
                for f in buf.fields
            ],
            axis=1,
        )
        g = np.asarray(buf.column("row_id"))[pos]
        return {
            int(i): hashlib.blake2b(r.tobytes(), digest_size=8).digest() for i, r in zip(g, rows, strict=True)
        }
    finally:
        buf.close()


# ------------------------------------------------------------------------------ processes
def started_at(pid: int) -> float | None:
    """When process `pid` started (wall clock), from /proc."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


def alive(pids: set[int]) -> set[int]:
    """The ones still running (not zombies)."""
    out = set()
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                out.add(pid)
        except OSError:
            pass
    return out


def robot_pid(driver: Driver) -> int | None:
    """The run's `ray::Robot` worker (as tests/test_run_failures.py finds it)."""
    return next((p for p in descendants(driver.proc.pid) if command_line(p).startswith("ray::Robot")), None)


# ------------------------------------------------------------------------------ the plan
def kill_plan(kills: int, seed: int, first: int, last: int) -> list[tuple[int, str]]:
    """(env_steps threshold, what to kill): one threshold drawn in each of `kills` equal slices of
    [first, last]; the kinds dealt evenly, in a seeded order."""
    rng = np.random.default_rng(seed)
    edges = np.linspace(first, last, kills + 1)
    at = [int(rng.uniform(a, b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    kinds = [KINDS[i % len(KINDS)] for i in range(kills)]
    rng.shuffle(kinds)
    return list(zip(at, kinds, strict=True))


class Chaos:
    """The chaos run: the driver(s), the kills, one row per kill."""

    def __init__(self, out: Path, run_args: list[str], t0: float):
        self.out = out
        self.run_args = run_args
        self.t0 = t0
        self.logs = out.parent / "chaos"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.drivers: list[Driver] = []
        self.rows: list[dict] = []
        self.ray_retries = 0  # resumes tried again because the local Ray did not start

    @property
    def driver(self) -> Driver:
        return self.drivers[-1]

    def start_driver(self, resume: bool) -> tuple[Driver, float]:
        """A driver, awaited until its learner is up: (the driver, when). A local Ray that does not
        start on this loaded machine is tried again, as its error says (at most 3 times)."""
        for attempt in range(3):
            args = [*self.run_args, "--resume" if resume else "--overwrite"]
            d = Driver(args, self.logs / f"driver{len(self.drivers)}.log", self.t0)
            self.drivers.append(d)
            up = wait_for(lambda d=d: d.events(LEARNER_UP) or d.proc.poll() is not None, "the learner")
            if up is not True:
                return d, up[0][0]
            if d.first_line("the local Ray did not start") is None or attempt == 2:
                raise Stuck(f"the driver exited {d.proc.returncode} before its learner was up:\n{d.tail()}")
            self.ray_retries += 1
            print(f"  the local Ray did not start: starting the driver again ({attempt + 2}/3)", flush=True)
        raise AssertionError("unreachable")

    def reached(self, env_steps: int) -> bool:
        p = self.driver.progress()
        return bool(p) and p[-1][1]["env_steps"] >= env_steps

    def run(self, plan: list[tuple[int, str]]) -> int:
        self.start_driver(resume=False)
        for i, (at, kind) in enumerate(plan):
            d = self.driver
            wait_for(lambda a=at, d=d: d.proc.poll() is not None or self.reached(a), f"env_steps {at}")
            if d.proc.poll() is not None:
                print(f"the run ended before env_steps {at}: {len(plan) - i} kill(s) not made", flush=True)
                break
            row = self.kill(i + 1, kind)
            self.rows.append(row)
            print_row(row, header=i == 0)
        rc = self.driver.proc.wait()
        for d in self.drivers:
            d.close()
        return rc

    def kill(self, n: int, kind: str) -> dict:
        """Kill one process; wait until the robots send again; the row of figures."""
        d = self.driver
        t_before, before = d.progress()[-1]
        pid = {
            "learner": lambda: d.events(LEARNER_UP)[-1][1],
            "robot": lambda: wait_for(lambda: robot_pid(d), "the robot actor's process", d),
            "driver": lambda: d.proc.pid,
        }[kind]()
        actors = {
            p for p in descendants(d.proc.pid) if command_line(p).startswith(("ray::Learner", "ray::Robot"))
        }
        acked = committed(self.out)
        t_kill = time.time()
        os.kill(pid, signal.SIGKILL)
        print(
            f"  {t_kill - self.t0:7.1f} s  >>> kill -9 {kind} (pid {pid}) at env_steps >= {before['env_steps']}",
            flush=True,
        )
        replace = {"learner": self._learner_back, "robot": self._robot_back, "driver": self._driver_back}[
            kind
        ]
        t_up, phases = replace(pid, t_kill, actors)
        d = self.driver
        # sending again: env_steps past where they stood once the replacement was up (the first
        # line after it may still hold a chunk re-sent from before the kill)
        t_base, base = wait_for(
            lambda: next(((t, c) for t, c in d.progress() if t >= t_up), None), "a progress line", d
        )
        floor = max(base["env_steps"], before["env_steps"])
        t_rec, after = wait_for(
            lambda: next(((t, c) for t, c in d.progress() if t > t_base and c["env_steps"] > floor), None),
            f"env_steps > {floor}",
            d,
        )
        acked_after = committed(self.out)
        return {
            "n": n,
            "killed": kind,
            "pid": pid,
            "t_kill_s": round(t_kill - self.t0, 1),
            "recovery_from_kill_s": round(t_rec - t_kill, 2),
            "recovery_from_up_s": round(t_rec - t_up, 2),
            "acked_before": len(acked),
            "acked_after": len(acked_after),
            "lost": sum(1 for g, digest in acked.items() if acked_after.get(g) != digest),
            "counters_before": before,
            "counters_before_age_s": round(t_kill - t_before, 2),
            "counters_after": after,
            "went_back": [k for k in COUNTERS if after[k] < before[k]],
            "phases_s": {k: round(v - t_kill, 2) for k, v in phases.items()},
        }

    def _learner_back(self, pid: int, t_kill: float, _actors) -> tuple[float, dict]:
        """The driver restarts the learner: up at its `learner up` line."""
        d = self.driver
        t_up, new = wait_for(
            lambda: next(((t, p) for t, p in d.events(LEARNER_UP) if t > t_kill and p != pid), None),
            "the restarted learner",
            d,
        )
        phases = {
            "driver_saw_death": d.first_line("learner died", after=t_kill),
            "process_started": started_at(new),
        }
        return t_up, {k: v for k, v in {**phases, "up": t_up}.items() if v is not None}

    def _robot_back(self, pid: int, t_kill: float, _actors) -> tuple[float, dict]:
        """Ray restarts the robot actor: up at the driver's `arm ... up` line for the new process."""
        d = self.driver
        t_up, new = wait_for(
            lambda: next(((t, p) for t, p in d.events(ARM_UP) if t > t_kill and p != pid), None),
            "the restarted robot actor",
            d,
        )
        phases = {"process_started": started_at(new), "up": t_up}
        return t_up, {k: v for k, v in phases.items() if v is not None}

    def _driver_back(self, pid: int, t_kill: float, actors: set[int]) -> tuple[float, dict]:
        """The run's actors die with its Ray; then `--resume`: up at the resumed `learner up` line."""
        self.driver.proc.wait()
        wait_for(lambda: not alive(actors), "the killed driver's learner and robot actor to exit")
        phases = {"actors_gone": time.time()}
        d, t_up = self.start_driver(resume=True)
        phases.update(resumed=d.t_start, ray_up=d.first_line("Started a local Ray instance"), up=t_up)
        phases["robot_up"] = wait_for(
            lambda: next((t for t, _ in d.events(ARM_UP)), None), "the robot actor", d
        )
        return t_up, {k: v for k, v in phases.items() if v is not None}

    def went_back(self) -> list[dict]:
        """Every progress line (all drivers, in time order) where a counter is below its highest so far."""
        lines = sorted((t, c) for d in self.drivers for t, c in d.progress())
        high = dict.fromkeys(COUNTERS, 0)
        back = []
        for t, c in lines:
            for k in COUNTERS:
                if c[k] < high[k]:
                    back.append({"t_s": round(t - self.t0, 1), "counter": k, "was": high[k], "now": c[k]})
                high[k] = max(high[k], c[k])
        return back


# ------------------------------------------------------------------------------ printing
def counters_text(c: dict) -> str:
    return "/".join(str(c[k]) for k in COUNTERS)


def print_row(r: dict, header: bool = False) -> None:
    if header:
        print(
            f"\n{'#':>3} {'killed':<8} {'t (s)':>7} {'back from kill':>14} {'from up':>8} "
            f"{'acked before':>12} {'after':>6} {'lost':>5}  {'env_steps/updates/episodes before -> after':<44}"
        )
    print(
        f"{r['n']:>3} {r['killed']:<8} {r['t_kill_s']:>7.1f} {r['recovery_from_kill_s']:>13.1f}s "
        f"{r['recovery_from_up_s']:>7.1f}s {r['acked_before']:>12} {r['acked_after']:>6} {r['lost']:>5}  "
        f"{counters_text(r['counters_before'])} -> {counters_text(r['counters_after'])}"
        + (f"  WENT BACK: {', '.join(r['went_back'])}" if r["went_back"] else ""),
        flush=True,
    )


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| # | killed | t of kill (s) | robots sending again: s after the kill | s after the replacement was up "
        "| acknowledged transitions before | after | lost | env_steps / updates / episodes before -> after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['killed']} | {r['t_kill_s']:.1f} | {r['recovery_from_kill_s']:.1f} | "
            f"{r['recovery_from_up_s']:.1f} | {r['acked_before']:,} | {r['acked_after']:,} | {r['lost']} | "
            f"{counters_text(r['counters_before'])} -> {counters_text(r['counters_after'])} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------ runs
def train_args(args, out: Path, demos: Path) -> list[str]:
    return [
        "--config",
        CONFIG,
        f"--output_dir={out}",
        f"--seed={args.seed}",
        f"--total_env_steps={args.total_steps}",
        f"--dataset.path={demos}",
        "--logging.every_seconds=0.5",
        "--logging.tensorboard=false",
        "--actors.chunk_size=8",
        f"--actors.max_restarts={max(args.kills, 3)}",
        "--checkpoint.every_updates=500",
        *args.overrides,
    ]


def evaluate(out: Path, episodes: int) -> dict:
    r = subprocess.run(
        [sys.executable, "-m", "hilserl_ray.evaluate", str(out), "--episodes", str(episodes), "--no-video"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise SystemExit(f"evaluate {out} exited {r.returncode}:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    ev = json.loads((out / "eval.json").read_text())
    return {k: ev[k] for k in ("checkpoint", "episodes", "success_rate", "mean_return", "mean_length")}


def final_counters(out: Path) -> dict:
    c = json.loads((latest_checkpoint(out / "checkpoints") / "learner.json").read_text())["counters"]
    return {k: int(c[k]) for k in COUNTERS}


def clean_run(args, out: Path, demos: Path) -> dict:
    """The same run without kills (reused when an earlier one had the same arguments)."""
    result = out / "bench_result.json"
    run_args = train_args(args, out, demos)
    if result.is_file():
        old = json.loads(result.read_text())
        if old.get("args") == run_args and old["eval"]["episodes"] == args.eval_episodes:
            print(f"clean run: reusing {out} (same arguments)")
            return old
    print(f"\n== clean run (no kills) -> {out}", flush=True)
    t = time.time()
    r = subprocess.run(
        [sys.executable, "-m", "hilserl_ray.train", *run_args, "--overwrite"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise SystemExit(f"the clean run exited {r.returncode}:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    res = {"args": run_args, "minutes": round((time.time() - t) / 60, 1), "counters": final_counters(out)}
    res["eval"] = evaluate(out, args.eval_episodes)
    result.write_text(json.dumps(res, indent=1))
    return res


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="the run's seed and the kill plan's")
    p.add_argument("--steps", default="full", help="env steps: full (5,000), small (1,200) or a number")
    p.add_argument("--eval-episodes", type=int, default=None, help="default 20 (full), 5 (small)")
    p.add_argument("--out", type=Path, default=None, help="default outputs/bench/chaos/seed<seed>")
    p.add_argument("--no-clean", action="store_true", help="skip the clean run and the eval comparison")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="config overrides after --")
    args = p.parse_args()
    args.overrides = [o for o in args.overrides if o != "--"]
    args.total_steps = STEPS.get(args.steps) or int(args.steps)
    if args.eval_episodes is None:
        args.eval_episodes = 5 if args.steps == "small" else 20
    args.out = (args.out or Path("outputs/bench/chaos") / f"seed{args.seed}").resolve()
    return args


def main() -> int:
    args = parse_args()
    t0 = time.time()
    demos = record_demos(CONFIG, [f"--seed={args.seed + 100}"], 5, args.out / f"demos_seed{args.seed}")
    out = args.out / "run"
    run_args = train_args(args, out, demos)
    starts = 250  # configs/sim_reach.yaml's learner.training_starts: kills once training runs
    plan = kill_plan(args.kills, args.seed, starts + 100, int(args.total_steps * 0.9))
    print(f"kill plan (env_steps, what): {plan}", flush=True)
    print(f"== chaos run -> {out}\n   python -m hilserl_ray.train {' '.join(run_args)}", flush=True)
    chaos = Chaos(out, run_args, time.time())
    try:
        rc = chaos.run(plan)
    except Stuck as e:
        for d in chaos.drivers:
            if d.proc.poll() is None:
                d.proc.send_signal(signal.SIGINT)
        raise SystemExit(f"chaos run stuck: {e}") from None
    chaos_minutes = (time.time() - chaos.t0) / 60
    if rc != 0:
        raise SystemExit(f"the chaos run's last driver exited {rc}:\n{chaos.driver.tail()}")
    rows = chaos.rows
    back = chaos.went_back()
    summary = {
        "kills": len(rows),
        "by_kind": {k: sum(r["killed"] == k for r in rows) for k in KINDS},
        "acked_lost": sum(r["lost"] for r in rows),
        "counters_went_back": back,
        "max_recovery_from_kill_s": max(r["recovery_from_kill_s"] for r in rows),
        "max_recovery_from_up_s": max(r["recovery_from_up_s"] for r in rows),
        "chaos_minutes": round(chaos_minutes, 1),
        "ray_start_retries": chaos.ray_retries,
        "chaos_counters": final_counters(out),
    }
    summary["chaos_eval"] = evaluate(out, args.eval_episodes)
    if not args.no_clean:
        clean = clean_run(args, args.out / "clean", demos)
        summary["clean_eval"] = clean["eval"]
        summary["clean_counters"] = clean["counters"]
        summary["clean_minutes"] = clean["minutes"]
    summary["wall_minutes"] = round((time.time() - t0) / 60, 1)
    report = {
        "command": "python bench/chaos.py " + " ".join(sys.argv[1:]),
        "train_args": run_args,
        "plan": plan,
        "rows": rows,
        "summary": summary,
    }
    (args.out / "chaos.json").write_text(json.dumps(report, indent=1))
    print_summary(rows, summary, args)
    print(f"\n{markdown_table(rows)}\n\nrows and summary: {args.out / 'chaos.json'}")
    return 0


def robot_start_s(r: dict) -> float:
    """A driver kill's seconds from the resumed learner up to the resumed robot actor up."""
    p = r["phases_s"]
    return p.get("robot_up", p["up"]) - p["up"]


def print_summary(rows: list[dict], s: dict, args) -> None:
    print("\n== chaos summary")
    for r in rows:
        print_row(r, header=r is rows[0])
    print(
        f"\nkills: {s['kills']} ({', '.join(f'{v} {k}' for k, v in s['by_kind'].items())}); "
        f"acknowledged transitions lost: {s['acked_lost']}; progress lines where a counter went back: "
        f"{len(s['counters_went_back'])}"
        + (f" {s['counters_went_back'][:5]}" if s["counters_went_back"] else "")
    )
    print(f"robots sending again, s after the replacement was up ({UP_MEANS}) / after the kill:")
    for kind in KINDS:
        mine = [r for r in rows if r["killed"] == kind]
        if mine:
            up = max(r["recovery_from_up_s"] for r in mine)
            print(
                f"  {kind:<8} at most {up:4.1f} s / {max(r['recovery_from_kill_s'] for r in mine):4.1f} s "
                f"(under {RECOVERY_LIMIT_S:g} s after up: {'yes' if up < RECOVERY_LIMIT_S else 'NO'})"
                + (DRIVER_NOTE.format(max(robot_start_s(r) for r in mine)) if kind == "driver" else "")
            )
    print("where the time went (s after the kill):")
    for r in rows:
        names = PHASES[r["killed"]]
        steps = [f"{names[k]} {v:.1f}" for k, v in r["phases_s"].items() if k in names]
        print(
            f"  #{r['n']} {r['killed']:<8} " + ", ".join([*steps, f"sending {r['recovery_from_kill_s']:.1f}"])
        )
    ce = s["chaos_eval"]
    line = f"deterministic eval ({ce['episodes']} episodes, fixed seed): chaos run {ce['success_rate']:.0%} at {counters_text(s['chaos_counters'])}"
    if "clean_eval" in s:
        ke = s["clean_eval"]
        gap = abs(ce["success_rate"] - ke["success_rate"])
        line += (
            f", clean run {ke['success_rate']:.0%} at {counters_text(s['clean_counters'])} "
            f"(within {EVAL_MARGIN:.0%}: {'yes' if gap <= EVAL_MARGIN + 1e-9 else 'NO'})"
        )
    print(line + " (env_steps/updates/episodes)")
    print(
        f"wall clock: chaos run {s['chaos_minutes']:.1f} min"
        + (f", clean run {s['clean_minutes']:.1f} min" if "clean_minutes" in s else "")
        + f", all {s['wall_minutes']:.1f} min"
    )


if __name__ == "__main__":
    sys.exit(main())
