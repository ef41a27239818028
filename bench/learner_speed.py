"""Learner speed: SAC updates/s for batch 256, 128x128 camera(s) + 18-dim state, UTD 2.

    .venv/bin/python bench/learner_speed.py                  # CPU (+ CUDA when present)
    .venv/bin/python bench/learner_speed.py --threads 1 --updates 20
    .venv/bin/python bench/learner_speed.py --omp-default      # without OMP_WAIT_POLICY=PASSIVE

One "update" = one `SACAgent.update` call = utd_ratio critic updates + one actor/temperature/
gripper update (LeRobot's "optimization step" with the same settings). Batches are prebuilt in
the Batch format on the agent's device (uint8 images), so the figure includes the DrQ shift,
normalization and everything the agent does, but not the replay buffer's sampling.

The machine may be shared: the load average and the process CPU time per update are printed
next to the wall time, so a slow figure caused by other jobs can be told apart. Reference (this
2-core CPU, same settings): LeRobot 0.4.4 does 0.52 updates/s with one camera, 0.26 with two.
"""

from __future__ import annotations

import os
import sys

# libgomp reads this once, when torch loads. Spinning OpenMP threads on cores shared with other
# processes cost 3-8x here (see hilserl_ray/policy/perf.py); --omp-default measures without it.
if "--omp-default" not in sys.argv:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hilserl_ray.config import CameraConfig, EnvConfig, PolicyConfig, TrainConfig  # noqa: E402
from hilserl_ray.envs.pipeline import pipeline_spec  # noqa: E402
from hilserl_ray.policy import ActorPolicy, SACAgent  # noqa: E402
from hilserl_ray.policy.perf import configure_cpu  # noqa: E402

LEROBOT = {1: 0.52, 2: 0.26}
TARGET = {1: 1.6, 2: 0.8}


def make_spec(num_cameras: int):
    cams = [CameraConfig(name=n) for n in ("front", "gripper_cam")[:num_cameras]]
    return pipeline_spec(TrainConfig(env=EnvConfig(cameras=cams), buffer={"online_ratio": 1.0}))


def make_batch(spec, b: int, device: torch.device, gen: torch.Generator) -> dict:
    def obs():
        return {
            k: (
                torch.randint(0, 256, (b, *f.shape), dtype=torch.uint8, generator=gen)
                if f.is_image
                else torch.randn((b, *f.shape), generator=gen)
            ).to(device)
            for k, f in spec.observation.items()
        }

    action = torch.rand((b, spec.action.shape[0]), generator=gen) * 2 - 1
    action[:, -1] = torch.randint(0, 3, (b,), generator=gen).float()
    return {
        "observation": obs(),
        "next_observation": obs(),
        "action": action.to(device),
        "reward": torch.rand(b, generator=gen).to(device),
        "terminated": (torch.rand(b, generator=gen) < 0.05).float().to(device),
        "discrete_penalty": torch.zeros(b, device=device),
        "is_intervention": torch.zeros(b, device=device),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_updates(num_cameras: int, device: torch.device, args) -> dict:
    torch.manual_seed(0)
    spec = make_spec(num_cameras)
    cfg = PolicyConfig(device=str(device), batch_size=256, utd_ratio=2, bf16=args.bf16, compile=args.compile)
    agent = SACAgent(spec, cfg)
    gen = torch.Generator().manual_seed(0)
    batches = [make_batch(spec, cfg.batch_size, device, gen) for _ in range(2 * cfg.utd_ratio)]
    for i in range(args.warmup):
        agent.update(batches[(i % 2) * 2 : (i % 2) * 2 + 2])
    sync(device)
    walls, cpus = [], []
    load_before = os.getloadavg()[0]
    for i in range(args.updates):
        t, c = time.perf_counter(), time.process_time()
        metrics = agent.update(batches[(i % 2) * 2 : (i % 2) * 2 + 2])
        sync(device)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    assert torch.isfinite(metrics["critic_loss"]).item()
    wall = statistics.median(walls)
    return {
        "cams": num_cameras,
        "device": str(device),
        "ups": 1.0 / wall,
        "ms": 1e3 * wall,
        "best_ms": 1e3 * min(walls),
        "cpu_ms": 1e3 * statistics.median(cpus),
        "load": (load_before + os.getloadavg()[0]) / 2,
    }


def bench_select_action(num_cameras: int, n: int = 300) -> dict:
    """The robot actor's path: an ActorPolicy rebuilt from the broadcast numpy state, one thread."""
    torch.manual_seed(0)
    spec = make_spec(num_cameras)
    cfg = PolicyConfig(device="cpu")
    policy = ActorPolicy.from_state_numpy(spec, cfg, SACAgent(spec, cfg).actor_state())
    rng = np.random.default_rng(0)
    obs = {
        k: rng.integers(0, 256, f.shape, dtype=np.uint8)
        if f.is_image
        else rng.normal(size=f.shape).astype(np.float32)
        for k, f in spec.observation.items()
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(20):
            policy.select_action(obs)
        times = []
        for _ in range(n):
            t = time.perf_counter()
            policy.select_action(obs)
            times.append(time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
    times.sort()
    return {"cams": num_cameras, "median_ms": 1e3 * times[n // 2], "p95_ms": 1e3 * times[int(0.95 * n)]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="all", help="cpu, cuda or all (cpu + cuda when present)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: cores available)")
    p.add_argument("--updates", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--cameras", type=int, nargs="+", default=[1, 2])
    p.add_argument("--bf16", action="store_true", help="policy.bf16 (autocast; see PolicyConfig)")
    p.add_argument("--compile", action="store_true", help="policy.compile (torch.compile the losses)")
    p.add_argument("--omp-default", action="store_true", help="keep OpenMP's default (spinning) wait policy")
    args = p.parse_args()

    threads = configure_cpu(args.threads)
    devices = [torch.device("cpu")] if args.device in ("cpu", "all") else []
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    print(
        f"torch {torch.__version__}, {threads} thread(s), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}, "
        f"bf16={args.bf16}, compile={args.compile}; batch 256, 128x128 camera(s) + 18-dim state, UTD 2"
    )
    print(
        f"{'device':<6} {'cams':>4} {'updates/s':>10} {'ms/update':>10} {'best ms':>8} {'cpu ms':>8} {'load':>5}  vs LeRobot / target"
    )
    for device in devices:
        for cams in args.cameras:
            r = bench_updates(cams, device, args)
            ref = (
                f"{r['ups'] / LEROBOT[cams]:.1f}x / {'met' if r['ups'] >= TARGET[cams] else 'MISSED'} (>= {TARGET[cams]})"
                if cams in LEROBOT
                else ""
            )
            print(
                f"{r['device']:<6} {cams:>4} {r['ups']:>10.2f} {r['ms']:>10.0f} {r['best_ms']:>8.0f} {r['cpu_ms']:>8.0f} "
                f"{r['load']:>5.1f}  {ref}",
                flush=True,
            )
    print("(cpu ms = process CPU time per update; ~threads x ms/update when the cores are ours alone)")
    for cams in args.cameras:
        s = bench_select_action(cams)
        print(
            f"select_action, {cams} camera(s), 1 thread: median {s['median_ms']:.2f} ms, p95 {s['p95_ms']:.2f} ms"
        )


if __name__ == "__main__":
    main()
