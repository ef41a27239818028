"""`actors.no_step_timeout_s`: a robot actor whose env stops stepping (no error, no exit) ends the
run after about that long with one line and exit 1, leaving no Ray process; time paused from the
console does not count."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from run_helpers import ENV, ROOT, still_running, train_command, wait_for
from stalling_env import ID

from hilserl_ray.runtime.metrics import read_metrics
from hilserl_ray.runtime.procs import descendants

pytestmark = [pytest.mark.ray, pytest.mark.subprocess]

TIMEOUT_S = 10.0


def stall_config(tmp_path: Path, stall_file: Path) -> Path:
    """A small run of the stalling gym env, its console on (the pause is the page's)."""
    path = tmp_path / "stall.yaml"
    path.write_text(
        f"""
name: stall
output_dir: {tmp_path / "run"}
total_env_steps: 1000000
env:
  type: gym
  max_episode_steps: 20
  gym:
    id: {ID}
    kwargs: {{stall_file: {stall_file}}}
    observation: {{state: observation.state}}
buffer: {{online_ratio: 1.0, online_capacity: 4000}}
policy: {{batch_size: 32, hidden_dims: [64, 64], latent_dim: 32}}
learner: {{training_starts: 50, weights_every: 5}}
actors: {{env_steps_per_update: 1, no_step_timeout_s: {TIMEOUT_S}}}
checkpoint: {{every_updates: 1000000}}
logging: {{every_seconds: 1, tensorboard: false}}
ray: {{num_cpus: 2}}
"""
    )
    return path


def press(url: str, key: str) -> bool:
    """Press and release `key` on a robot's console page, as its browser tab does; paused after?"""

    async def go() -> bool:
        base, token = url.split("?token=")
        async with aiohttp.ClientSession() as session, session.ws_connect(f"{base}ws?token={token}") as ws:
            await ws.send_json({"type": "key", "key": key, "down": True, "id": 1})
            async for msg in ws:
                reply = json.loads(msg.data) if msg.type == aiohttp.WSMsgType.TEXT else {}
                if reply.get("type") == "ack":
                    await ws.send_json({"type": "key", "key": key, "down": False, "id": 2})
                    return bool(reply["paused"])
        raise AssertionError(f"no answer to {key!r} from {base}")

    return asyncio.run(asyncio.wait_for(go(), 30))


def env_steps(out: Path) -> int:
    rows = read_metrics(out)
    return int(rows[-1]["env_steps"]) if rows else -1


@pytest.mark.timeout(600)
def test_a_robot_whose_env_stops_stepping_ends_the_run_after_the_timeout_not_counting_a_pause(tmp_path):
    out, stall = tmp_path / "run", tmp_path / "stall"
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}  # stalling_env
    log, err_log = tmp_path / "driver.log", tmp_path / "driver.err"
    with log.open("w") as f, err_log.open("w") as e:
        cmd = train_command("--config", str(stall_config(tmp_path, stall)))
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=e)
    try:
        try:
            wait_for(lambda: env_steps(out) > 100, 300, "env steps", proc)
        except AssertionError as e:
            raise AssertionError(f"{e}: {err_log.read_text()[-3000:]}") from None
        ray_procs = set(descendants(proc.pid))
        url = json.loads((out / "console.json").read_text())[0]["url"]

        # paused for 1.5 timeouts: the run goes on, without a step
        assert press(url, "p") is True
        time.sleep(2.0)  # a chunk under way lands
        held = env_steps(out)
        time.sleep(1.5 * TIMEOUT_S - 2.0)
        assert proc.poll() is None, err_log.read_text()[-3000:]
        assert env_steps(out) == held

        # the env hangs in its next step: the run ends a whole timeout after the pause ends
        stall.touch()
        assert press(url, "p") is False
        t_unpaused = time.time()
        proc.wait(timeout=120)
        t_exit = time.time()
    finally:
        if proc.poll() is None:
            proc.kill()
    stdout, err = log.read_text(), err_log.read_text()
    assert proc.returncode == 1, stdout[-3000:] + err[-3000:]
    assert "Traceback" not in stdout + err, stdout[-3000:] + err[-3000:]
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert lines == [f"error: no env step for {TIMEOUT_S:g} s (actors.no_step_timeout_s)"], err[-3000:]
    assert "raise actors.no_step_timeout_s" in err  # the fix, on the next line
    assert env_steps(out) == held  # not one step after the pause
    # the driver logs every second until it gives up: its last line dates the end of the wait
    stopped_waiting = read_metrics(out)[-1]["time"] - t_unpaused
    assert TIMEOUT_S - 3.0 <= stopped_waiting <= TIMEOUT_S + 3.0, stopped_waiting
    assert t_exit - t_unpaused < TIMEOUT_S + 60  # robots stopped (the hung one killed), learner saved
    deadline = time.monotonic() + 20
    while still_running(ray_procs) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not still_running(ray_procs), [
        Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in still_running(ray_procs)
    ]
