"""`make twin-test`: the real-arm training path, whole, against the twin, with the failures a lab sees.

    python -m hilserl_ray.twin.rehearse [--out outputs/twin_rehearsal] [--steps 300]

Starts the twin and `python -m hilserl_ray.train --config configs/so101_twin.yaml` (local Ray,
this node labelled robot=so101 with the so101 resource, as on the robot's machine), then:
1. waits for training (the person's interventions, keys, cameras, checkpoints);
2. kill -9 of the robot actor: the twin must see a hold (the guard process) within
   robot.watchdog_seconds and the torque off within robot.watchdog_release_seconds of the last
   command; Ray restarts the actor, which takes the arm again (torque on, commands resume);
3. pulls the USB cable for 3 s: the actor fails, is restarted, waits, reconnects when it is back;
4. runs to `--steps` env steps and a checkpoint, then Ctrl+C: the run exits 130 with a final
   checkpoint and the twin sees a hold, then the torque off, and nothing after.
Prints each check; exits 1 if one fails. Everything it makes is under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from hilserl_ray.errors import ConfigError, command
from hilserl_ray.twin.launch import TwinProcess, running_twin

WATCHDOG_S, RELEASE_S = 0.5, 2.0
SLACK_S = 1.5  # a loaded CI machine delays every process a little
FAST = [
    "--env.max_episode_steps=40",
    "--robot.reset_seconds=0.5",
    "--robot.bus_timeout_ms=500",  # a starved twin on a loaded CI machine: wait, don't crash
    f"--robot.watchdog_seconds={WATCHDOG_S}",
    f"--robot.watchdog_release_seconds={RELEASE_S}",
    "--learner.training_starts=100",
    "--policy.batch_size=32",
    "--policy.hidden_dims=[64,64]",
    "--policy.latent_dim=32",
    "--buffer.online_capacity=5000",
    "--checkpoint.every_updates=20",
    "--logging.every_seconds=2",
    "--logging.tensorboard=false",
    "--logging.progress_bar=false",
    "--ray.num_cpus=2",
    "--actors.max_restarts=10",  # kill -9 and the unplug use two; a starved camera may cost one more
    "--total_env_steps=1000000",  # it ends by Ctrl+C, as a user ends a real-arm run
]


class Failed(AssertionError):
    pass


def check(ok: bool, what: str) -> None:
    print(f"[twin-test] {'ok  ' if ok else 'FAIL'} {what}", flush=True)
    if not ok:
        raise Failed(what)


def wait_for(pred, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise Failed(f"the training run exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.2)
    raise Failed(f"timed out after {timeout:.0f} s waiting for {what}")


def holders(device: str, exclude: set[int]) -> list[int]:
    """Processes with `device` open: the robot actor (the twin itself excluded)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) in exclude:
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == device:
                    out.append(int(pid))
                    break
            except OSError:
                continue
    return out


def after(events: list[dict], t: float, kind: str, **match) -> list[dict]:
    return [
        e
        for e in events
        if e["t"] >= t and e["event"] == kind and all(e.get(k) == v for k, v in match.items())
    ]


def env_steps(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip().endswith("}")]
    return max((int(r.get("env_steps", 0)) for r in rows), default=0)


def fresh_out(out: Path) -> None:
    """Empty `out` for this rehearsal, refusing to delete a directory a rehearsal did not make."""
    marker = out / ".twin_rehearsal"
    if out.exists() and any(out.iterdir()):
        if not marker.exists():  # delete only what a rehearsal made
            raise ConfigError(
                "command line", [f"--out: {out} is not empty and not a rehearsal's; pick another dir"]
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    marker.touch()


def train_command(config: str, twin: TwinProcess, run: Path) -> list[str]:
    """The user's training command line, made fast, pointed at the twin's devices and into `run`."""
    cmd = [sys.executable, "-m", "hilserl_ray.train", "--config", config, *FAST, *twin.overrides()]
    cmd.append(f"--output_dir={run}")
    return cmd


@contextmanager
def training(cmd: list[str], log_path: Path):
    """The training run as a subprocess logging to `log_path`; killed on the way out if still running."""
    with log_path.open("w") as log:
        train = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield train
        finally:
            if train.poll() is None:
                train.kill()
                train.wait()


def check_training_drives_the_arm(twin: TwinProcess, train: subprocess.Popen) -> dict:
    """1. Training runs: commands reach the arm, the person takes over and presses keys."""
    wait_for(lambda: len(twin.events(("goal",))) >= 60, 420, "the robot actor to drive the arm", train)
    st = twin.status()
    check(
        st["torque"] and all(st["torque"].values()),
        "the robot actor took the arm: torque on, goals arriving",
    )
    return st


def check_kill9(twin: TwinProcess, train: subprocess.Popen, device: str) -> None:
    """2. kill -9 of the robot actor: a hold, then the torque off in time; Ray restarts the actor."""
    pids = wait_for(lambda: holders(device, {twin.proc.pid}), 10, "the robot actor's pid")
    t_kill = time.time()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    print(f"[twin-test] kill -9 {pids} (the process with {device} open)", flush=True)
    off = wait_for(lambda: after(twin.events(), t_kill, "torque", all_off=True), RELEASE_S + 15, "torque off")
    ev = twin.events()
    last_cmd = max([e["t"] for e in ev if e["event"] == "goal" and e["t"] <= t_kill] or [t_kill])
    holds = after(ev, t_kill, "hold")
    check(bool(holds) and holds[0]["t"] - t_kill <= WATCHDOG_S + SLACK_S,
          f"hold {holds[0]['t'] - t_kill if holds else float('nan'):.2f} s after kill -9 (robot.watchdog_seconds {WATCHDOG_S})")  # fmt: skip
    check(off[0]["t"] - last_cmd <= RELEASE_S + SLACK_S and off[0]["t"] > holds[0]["t"],
          f"then torque off {off[0]['t'] - last_cmd:.2f} s after the last command (watchdog_release_seconds {RELEASE_S})")  # fmt: skip
    back = wait_for(
        lambda: after(twin.events(), off[0]["t"], "torque", all_on=True),
        120,
        "the restarted actor",
        train,
    )
    wait_for(
        lambda: after(twin.events(), back[0]["t"], "goal"), 60, "commands from the restarted actor", train
    )
    check(
        True,
        f"Ray restarted the robot actor: torque on again {back[0]['t'] - t_kill:.1f} s after the kill",
    )


def check_unplug(twin: TwinProcess, train: subprocess.Popen) -> None:
    """3. The USB cable out for 3 s: the actor fails, is restarted, waits, reconnects when it is back."""
    t_unplug = time.time()
    twin.post("unplug?seconds=3")
    plug = wait_for(lambda: after(twin.events(), t_unplug, "plug"), 20, "the cable back")
    again = wait_for(
        lambda: after(twin.events(), plug[0]["t"], "torque", all_on=True), 120, "a reconnect", train
    )
    wait_for(lambda: after(twin.events(), again[0]["t"], "goal"), 60, "commands after the reconnect", train)
    check(
        True,
        f"unplugged 3 s: the actor failed, restarted and reconnected {again[0]['t'] - plug[0]['t']:.1f} s after the plug",
    )


def check_ctrl_c(twin: TwinProcess, train: subprocess.Popen, run: Path, steps: int) -> None:
    """4. Train on to `steps` and a checkpoint, then Ctrl+C: exit 130, a hold, the torque off, nothing after."""
    wait_for(lambda: env_steps(run) >= steps and (run / "checkpoints" / "last").exists(), 240,
             f"{steps} env steps and a checkpoint", train)  # fmt: skip
    t_int = time.time()
    train.send_signal(signal.SIGINT)
    rc = train.wait(timeout=90)
    ev = twin.events()
    holds, offs = after(ev, t_int, "hold"), after(ev, t_int, "torque", all_off=True)
    check(rc == 130, f"Ctrl+C: the run exited {rc} (130 = interrupted, final checkpoint written)")
    check(
        bool(holds) and bool(offs) and holds[0]["t"] <= offs[0]["t"],
        "the twin felt a hold, then the torque off",
    )
    later = [e for e in ev if e["t"] > offs[0]["t"] and e["event"] in ("goal", "torque") and e.get("on")]
    check(not later, "and nothing moved the arm after that")


def print_summary(twin: TwinProcess, run: Path) -> None:
    """What the run did to the twin's arm, from the twin's counters."""
    summary = twin.status()
    counts = summary["counts"]
    print(
        f"[twin-test] {env_steps(run)} env steps, {summary['human']['episode']} episodes, "
        f"{summary['human']['interventions']} takeovers, {summary['human']['successes']} successes (s key), "
        f"{counts.get('goal', 0)} commands, {counts.get('beyond_limits', 0)} beyond limits, "
        f"{counts.get('over_step', 0)} over max step, {summary['bus']['dropped_replies']} replies dropped",
        flush=True,
    )


def rehearse(out: Path, steps: int = 300, config: str = "configs/so101_twin.yaml") -> float:
    """Run the four stages of the module docstring against a fresh twin; the seconds it took.

    Raises `Failed` at the first check that fails; the twin and the run are stopped either way.
    """
    t_start = time.monotonic()
    fresh_out(out)
    run, log_path = out / "run", out / "train.log"
    with (
        running_twin(config, out / "twin", *FAST) as twin,
        training(train_command(config, twin, run), log_path) as train,
    ):
        print(f"[twin-test] twin on port {twin.port}, training into {run} (log {log_path})", flush=True)
        st = check_training_drives_the_arm(twin, train)
        check_kill9(twin, train, st["devices"]["follower"])
        check_unplug(twin, train)
        check_ctrl_c(twin, train, run, steps)
        print_summary(twin, run)
    return time.monotonic() - t_start


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m hilserl_ray.twin.rehearse", description=__doc__.splitlines()[0]
    )
    p.add_argument("--out", type=Path, default=Path("outputs/twin_rehearsal"))
    p.add_argument("--steps", type=int, default=300)
    args = p.parse_args(argv)
    try:
        seconds = rehearse(args.out, args.steps)
    except Failed as e:
        print(f"[twin-test] FAILED: {e} (logs in {args.out})", file=sys.stderr)
        return 1
    print(f"[twin-test] passed in {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
