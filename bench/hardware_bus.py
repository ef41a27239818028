"""Real-robot I/O overhead, measured on the fake STS3215 pty bus (no hardware needed).

Prints: 6-servo sync read and sync write latency (median / p99) through the unmodified SDK and
the CPU time they cost this process,
the real env's step overhead beyond the control period (bus + safety/FK + camera frame), and
the time a silent servo costs before the error. On a real 1 Mbaud bus add about 0.2 ms of wire
time per sync read plus the USB adapter's latency (1-2 ms with a 1 ms latency timer, 16 ms with
the default ftdi_sio timer: set it to 1).

    .venv/bin/python bench/hardware_bus.py [--n 500]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import contextlib

from fake_sts3215 import FakeBus, real_config, write_calibration, write_video  # noqa: E402

from hilserl_ray.hardware.feetech import FeetechBus, FeetechError  # noqa: E402
from hilserl_ray.hardware.robot_env import make_real_env  # noqa: E402

NAMES = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")


def stats(xs: list[float]) -> str:
    a = np.array(xs) * 1e3
    return f"median {np.median(a):.2f} ms, p99 {np.percentile(a, 99):.2f} ms"


def serve(conn, silent: tuple[int, ...]) -> None:
    """The fake servos in their own process, as real ones would be (no GIL shared with the SDK)."""
    with FakeBus() as fake:
        for i in silent:
            fake[i].silent = True
        conn.send(fake.port)
        conn.recv()  # until the parent is done


def fake_bus_process(silent: tuple[int, ...] = ()):
    parent, child = mp.Pipe()
    proc = mp.Process(target=serve, args=(child, silent), daemon=True)
    proc.start()
    return proc, parent, parent.recv()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=500)
    args = p.parse_args()
    proc, conn, port = fake_bus_process()
    with tempfile.TemporaryDirectory() as tmp:
        bus = FeetechBus(port, dict(zip(NAMES, range(1, 7), strict=True)))
        bus.connect()
        reads, writes = [], []
        cpu0 = time.process_time()
        for k in range(args.n):
            t = time.perf_counter()
            bus.sync_read("Present_Position")
            reads.append(time.perf_counter() - t)
            t = time.perf_counter()
            bus.sync_write("Goal_Position", {n: 2000 + k % 50 for n in NAMES})
            writes.append(time.perf_counter() - t)
        cpu = (time.process_time() - cpu0) / args.n
        print(f"sync read, 6 servos:  {stats(reads)}")
        print(f"CPU time of this process per read+write pair: {cpu * 1e3:.2f} ms (no busy wait)")
        print(f"sync write, 6 servos: {stats(writes)}")
        bus.close()

        cfg = real_config(port, write_calibration(Path(tmp) / "c.json"), write_video(Path(tmp) / "cam.avi"))
        cfg.env.fps = 50.0
        env = make_real_env(cfg)
        obs, _ = env.reset()
        overhead, io = [], []
        for _ in range(min(args.n, 200)):
            obs, *_ = env.step(obs["observation.state"])
            overhead.append(env.timing["step_s"] - 1 / cfg.env.fps)
            io.append(env.timing["io_s"])
        env.close()
        print(
            f"env step at 50 Hz: observation (bus read + camera) {stats(io)}; step beyond the 20 ms period {stats(overhead)}"
        )

        conn.send("stop")
        proc.join()
        proc, conn, port = fake_bus_process(silent=(4,))
        bus = FeetechBus(port, dict(zip(NAMES, range(1, 7), strict=True)))
        t = time.perf_counter()
        with contextlib.suppress(FeetechError):
            bus.connect()
        print(f"connect with one silent servo fails after {1e3 * (time.perf_counter() - t):.0f} ms")
        conn.send("stop")
        proc.join()


if __name__ == "__main__":
    main()
