"""Fleet scaling on this machine: 1, 2 and 4 sim robot actors feeding one learner.

For each fleet size, the real runtime (LearnerActor + RobotActors placed as the driver places
them) runs pick-cube from the 128x128 wrist camera, free-running (no sim pacing), and after a
warm-up the script prints over a fixed window: env steps/s reaching the learner, the learner's
updates/s, each process's CPU use, and where the bottleneck is. The machine may be shared: the
load average is printed, and the verdict reads CPU use, not wall-clock guesses.

    .venv/bin/python bench/fleet_scaling.py [--sizes 1 2 4] [--seconds 40] [--task pick_cube|reach]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import ray

from hilserl_ray.configio import load_config
from hilserl_ray.fleet import fleet
from hilserl_ray.runtime.learner import LearnerActor
from hilserl_ray.runtime.robot import RobotActor, robot_actor_options

# bench/transport_speed.py, chunk 64, two 128x128 cameras, into the store, sustained (the disk)
TRANSPORT_LIMIT = 3200
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def make_cfg(task: str, n: int, out: str):
    base = "configs/sim_pick_cube.yaml" if task == "pick_cube" else "configs/sim_reach.yaml"
    return load_config(
        base,
        [
            f"--actors.num_robot_actors={n}",
            "--actors.env_steps_per_update=null",  # free-running: measure what the fleet can do
            "--learner.training_starts=300",
            "--buffer.online_capacity=30000",
            f"--output_dir={out}",
        ],
    )


def measure(task: str, n: int, seconds: float) -> dict:
    cores = os.cpu_count() or 1
    cfg = make_cfg(task, n, tempfile.mkdtemp(prefix="fleet_bench_"))
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")  # a loaded machine registers slowly
    ray.init(num_cpus=n + 1, include_dashboard=False)  # logical CPUs: one per actor, as the driver asks
    try:
        learner = LearnerActor.options(
            num_cpus=1, name="bench_learner", runtime_env={"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}}
        ).remote(cfg.model_dump(mode="json"))
        learner_pid = ray.get(learner.describe.remote())["pid"]
        robots = [
            RobotActor.options(**robot_actor_options(cfg, a)).remote(
                a.cfg.model_dump(mode="json"), a.index, "bench_learner", a.name
            )
            for a in fleet(cfg)
        ]
        robot_pids = [ray.get(r.stats.remote())["pid"] for r in robots]
        deadline = time.time() + 600
        while ray.get(learner.stats.remote())["updates"] < 3 and time.time() < deadline:
            time.sleep(1)  # warm-up: every actor stepping, training under way
        s0, t0 = ray.get(learner.stats.remote()), time.perf_counter()
        c0 = {p: cpu_seconds(p) for p in [learner_pid, *robot_pids]}
        time.sleep(seconds)
        s1, t1 = ray.get(learner.stats.remote()), time.perf_counter()
        c1 = {p: cpu_seconds(p) for p in c0}
        dt = t1 - t0
        for r in robots:
            ray.get(r.stop.remote())
        ray.get(learner.stop.remote())
    finally:
        ray.shutdown()
    robot_cpu = [(c1[p] - c0[p]) / dt for p in robot_pids]
    steps = s1["env_steps"] - s0["env_steps"]
    return {
        "n": n,
        "steps_per_s": steps / dt,
        "updates_per_s": (s1["updates"] - s0["updates"]) / dt,
        "learner_cpu": (c1[learner_pid] - c0[learner_pid]) / dt,
        "robot_cpu": robot_cpu,
        "cpu_ms_per_step": 1000 * sum(robot_cpu) * dt / max(steps, 1),
        "cores": cores,
        "load": os.getloadavg()[0],
    }


def verdict(r: dict, first: dict) -> str:
    used = r["learner_cpu"] + sum(r["robot_cpu"])
    if r["steps_per_s"] > 0.8 * TRANSPORT_LIMIT:
        return "transport: near the measured robot->learner limit"
    scale = (
        f"; {r['n']} actors give {r['steps_per_s'] / max(first['steps_per_s'], 1e-9):.2f}x the steps of one "
        f"and {r['updates_per_s'] / max(first['updates_per_s'], 1e-9):.2f}x its updates"
        if r["n"] > first["n"]
        else ""
    )
    transport = f"; transport is not it ({r['steps_per_s']:.0f} steps/s vs its ~{TRANSPORT_LIMIT:,}/s)"
    if max(used, r["load"]) >= 0.9 * r["cores"]:
        return (
            f"CPU: the {r['cores']} cores are saturated (load {r['load']:.1f}; our processes got {used:.2f} "
            f"cores, {r['cpu_ms_per_step']:.0f} ms of robot CPU per env step){scale}. Env steps and updates "
            f"compete for the same cores: more arms need more nodes{transport}"
        )
    if r["learner_cpu"] >= 0.9:
        return f"learner: its core is busy with updates{scale}{transport}"
    return f"robot actors: each spends its CPU stepping the env and its policy{scale}{transport}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--seconds", type=float, default=40.0)
    p.add_argument("--task", choices=["pick_cube", "reach"], default="pick_cube")
    args = p.parse_args()
    print(f"task {args.task}; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at start")
    print(
        f"{'actors':>6} {'env steps/s':>11} {'updates/s':>9} {'learner CPU':>11} {'robot CPU each':>16} "
        f"{'CPU ms/step':>11}  bottleneck"
    )
    first = None
    for n in args.sizes:
        r = measure(args.task, n, args.seconds)
        first = first or r
        each = "/".join(f"{c:.2f}" for c in r["robot_cpu"])
        print(
            f"{n:>6d} {r['steps_per_s']:>11.1f} {r['updates_per_s']:>9.2f} {r['learner_cpu']:>11.2f} "
            f"{each:>16} {r['cpu_ms_per_step']:>11.1f}  {verdict(r, first)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
