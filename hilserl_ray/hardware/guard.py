"""The watchdog that outlives the robot process: hold, then torque off, when that process dies.

The STS3215 has no watchdog of its own: it holds its last goal at full torque forever. The
follower's `Watchdog` thread covers a controller that stops commanding, but it dies with its
process (kill -9, the OOM killer, a segfault, Ray killing the actor), leaving the arm stiff at
whatever it was doing. So the follower also starts this guard, a separate small process
(`python -m hilserl_ray.hardware.guard`, double-forked into its own session, so neither Ray nor
a process-group signal takes it down with the robot). The robot's watchdog thread writes a
heartbeat byte into the guard's stdin every tick: `k` if a command went out since the last
beat, `.` if not; `q` on a clean close (the follower stopped the arm itself).

Why a pipe: the kernel closes it the instant the robot process dies, however it dies, so the
guard learns of a death at once (EOF) without trusting timing on a loaded machine; and the
guard touches the bus only then, when nobody else can be writing to it (it never shares a live
bus). On EOF it holds the arm right away (goal = present position) and turns the torque off
at `release_s` after the last command, the same schedule as the in-process watchdog; a port
that is gone (unplugged) is retried until then. A robot process that stays alive but goes
silent for `release_s` (frozen) is treated the same way. A new controller for the same port
stops a previous guard first (`stop_previous`), via a pid file keyed by the port.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hilserl_ray.hardware.feetech import FeetechBus, check_sdk

log = logging.getLogger(__name__)

GUARD_MODULE = "hilserl_ray.hardware.guard"


def pid_file(port: str) -> Path:
    key = hashlib.sha1(os.path.abspath(port).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "hilserl_ray_guard" / f"{key}.pid"


def _is_guard(pid: int) -> bool:
    try:
        return GUARD_MODULE in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def stop_previous(port: str, timeout_s: float = 3.0) -> bool:
    """Stop a guard still watching `port` (its robot process died): the new controller takes over."""
    path = pid_file(port)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return False
    if not _is_guard(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _is_guard(pid):
        time.sleep(0.02)
    if _is_guard(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    log.info("stopped the previous guard (pid %d) of %s", pid, port)
    return True


class GuardLink:
    """The robot side: spawns the guard and feeds it heartbeats (never blocks, never raises)."""

    def __init__(self, port: str, motor_ids, release_s: float, timeout_margin_ms: float):
        stop_previous(port)
        cmd = [
            sys.executable, "-m", GUARD_MODULE, "--port", port, "--ids", ",".join(map(str, motor_ids)),
            "--release", str(release_s), "--margin-ms", str(timeout_margin_ms),
        ]  # fmt: skip
        launcher = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=None, start_new_session=True
        )
        launcher.wait(timeout=30)  # the launcher forks the guard and exits at once
        self._w = launcher.stdin
        os.set_blocking(self._w.fileno(), False)
        self.port = port

    def beat(self, commanded: bool) -> None:
        self._send(b"k" if commanded else b".")

    def close(self) -> None:
        """Clean stop: the follower held the arm and turned the torque off itself."""
        self._send(b"q")
        with contextlib.suppress(OSError):
            self._w.close()

    def _send(self, byte: bytes) -> None:
        with contextlib.suppress(OSError, ValueError):  # guard gone, pipe full: nothing to do here
            self._w.write(byte)
            self._w.flush()


# ---------------------------------------------------------------------------- the guard process
def _stop_arm(port: str, ids: list[int], margin_ms: float, release_at: float, stop) -> None:
    motors = {f"id{i}": i for i in ids}
    held = False
    while not stop():
        bus = FeetechBus(port, motors, timeout_margin_ms=margin_ms)
        try:
            bus.connect(check_ids=False)
            if not held:
                bus.sync_write("Goal_Position", bus.sync_read("Present_Position"))
                held = True
                log.warning("guard: the robot process is gone: holding the arm on %s", port)
            while time.monotonic() < release_at and not stop():
                time.sleep(0.02)
            if stop():
                return
            bus.disable_torque(best_effort=False)
            log.warning("guard: torque off on %s", port)
            return
        except Exception as e:  # port gone (unplugged) or servos silent: try again until release time
            if time.monotonic() > release_at + 30:
                log.error("guard: could not stop the arm on %s: %s", port, e)
                return
            time.sleep(0.5)
        finally:
            with contextlib.suppress(Exception):
                bus.close()


def run_guard(port: str, ids: list[int], release_s: float, margin_ms: float) -> int:
    stopping = {"now": False}

    def on_term(*_):
        stopping["now"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl+C meant for the trainer is not for us
    check_sdk()  # import and check the SDK now: the moment the robot dies is no time for it
    fd = sys.stdin.fileno()
    last_kick = last_beat = time.monotonic()
    while not stopping["now"]:
        ready, _, _ = select.select([fd], [], [], 0.05)
        now = time.monotonic()
        if ready:
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b""
            if not data:  # EOF: the robot process is gone
                break
            if b"q" in data:
                return 0
            last_beat = now
            if b"k" in data:
                last_kick = now
        elif now - last_beat >= release_s:  # alive but silent that long: frozen
            break
    if stopping["now"]:
        return 0
    _stop_arm(port, ids, margin_ms, last_kick + release_s, lambda: stopping["now"])
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m {GUARD_MODULE}", description=__doc__.splitlines()[0])
    p.add_argument("--port", required=True)
    p.add_argument("--ids", required=True, help="comma-separated servo ids")
    p.add_argument("--release", type=float, required=True)
    p.add_argument("--margin-ms", type=float, default=50.0)
    p.add_argument("--foreground", action="store_true", help="do not fork (debugging)")
    args = p.parse_args(argv)
    if not args.foreground and os.fork() > 0:
        os._exit(0)  # the launcher returns; the guard lives on in its own session, child of init
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    path = pid_file(args.port)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(os.getpid()))
    try:
        return run_guard(args.port, [int(i) for i in args.ids.split(",")], args.release, args.margin_ms)
    finally:
        with contextlib.suppress(OSError, ValueError):
            if int(path.read_text()) == os.getpid():
                path.unlink()


if __name__ == "__main__":
    sys.exit(main())
