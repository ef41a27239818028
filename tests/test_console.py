"""The operator's console: the `web` source's semantics, and the page driven in real headless Chromium
(Debian's package, driven by Playwright) against a real robot actor on local Ray and real MuJoCo."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest
from run_helpers import ROOT, module_command, start_local_ray

from hilserl_ray.configio import ConfigError, load_config
from hilserl_ray.console.controls import WebControls, WebSource
from hilserl_ray.console.headless import CHROMIUM, launch
from hilserl_ray.envs.intervention import no_events
from hilserl_ray.features import STATE

SMALL = [
    "--env.cameras.0.width=96",
    "--env.cameras.0.height=96",
    "--pipeline.image.size=[64,64]",
    "--policy.hidden_dims=[64,64]",
    "--policy.latent_dim=32",
    "--env.dense_reward=false",
    "--env.max_episode_steps=3000",
    "--pipeline.intervention.source=web",
]
WAIT_MS = 60_000  # generous: six other jobs share this machine's two cores


# ------------------------------------------------------------------- the web source itself
class Script:
    """A stand-in configured source (as the oracle would be): acts with a fixed action, signals failure."""

    def __init__(self):
        self.fail = False

    def reset(self):
        pass

    def action(self, obs, env):
        return np.full(4, 0.5, np.float32)

    def events(self):
        ev = no_events()
        ev["failure"], self.fail = self.fail, False
        return ev

    def close(self):
        pass


def test_web_source_has_the_keyboards_semantics_over_the_configured_source():
    controls = WebControls(discrete_gripper=True)
    other = Script()
    src = WebSource(controls, other)
    src.reset()
    assert np.allclose(src.action({}, None), 0.5)  # not taken over: the configured source acts
    assert controls.press("space", press_id=1)
    controls.release("space")
    controls.press("up", press_id=2)
    controls.press("page_up", press_id=3)
    controls.press("o")
    a = src.action({}, None)
    assert a.tolist() == [1.0, 0.0, 1.0, 2.0]  # +x, +z, gripper open: the page wins while engaged
    assert src.applied_ids == [1, 2, 3] and controls.engaged
    for k in ("up", "page_up", "o"):
        controls.release(k)
    controls.press("left")
    controls.press("c")
    assert src.action({}, None).tolist() == [0.0, 1.0, 0.0, 0.0]
    controls.press("s")
    other.fail = True
    ev = src.events()
    assert ev["success"] and ev["failure"] and not ev["rerecord"]  # both sources' events count
    assert src.events() == no_events()  # each event reported once
    assert not controls.press("x") and not controls.press("rm -rf")  # not a console key
    src.reset()  # a new episode: the operator hands back
    assert not controls.engaged and np.allclose(src.action({}, None), 0.5)


def test_pause_holds_the_env_thread_until_resumed_and_close_releases_it():
    class Arm:
        holds = 0

        def hold_still(self):
            Arm.holds += 1

    class Env:
        unwrapped = Arm()

    controls = WebControls()
    src = WebSource(controls, None)
    assert controls.press("p") and controls.paused
    done = threading.Event()
    out = []
    t = threading.Thread(target=lambda: (out.append(src.action({}, Env())), done.set()))
    t.start()
    assert not done.wait(0.5)  # paused: no step happens
    assert Arm.holds >= 2  # the real arm's watchdog is fed meanwhile
    controls.press("p")
    assert done.wait(5) and out == [None]  # resumed: the step goes on (policy acts)
    controls.press("p")
    t = threading.Thread(target=lambda: out.append(src.action({}, Env())))
    t.start()
    controls.close()  # shutdown while paused: the loop ends holding still
    t.join(5)
    assert not t.is_alive() and out[-1].tolist() == [0.0, 0.0, 0.0, 1.0]


def test_joint_space_actions_disable_takeover_but_not_judging():
    controls = WebControls(steer=False)
    src = WebSource(controls, None)
    assert not controls.press("space") and not controls.press("up")
    assert src.action({}, None) is None
    assert controls.press("s") and src.events()["success"]


def test_config_rules_for_the_console():
    with pytest.raises(ConfigError, match="console.enabled"):
        load_config(
            "configs/sim_pick_cube.yaml", ["--pipeline.intervention.source=web", "--console.enabled=false"]
        )
    with pytest.raises(ConfigError, match="console.port"):
        load_config("configs/sim_pick_cube.yaml", ["--console.port=8000", "--actors.num_robot_actors=2"])
    cfg = load_config("configs/sim_pick_cube.yaml", [])
    assert cfg.console.enabled and cfg.console.host == "127.0.0.1" and cfg.console.port == 0
    assert not cfg.logging.sounds  # quiet by default


# --------------------------------------------------------------------------- the browser
@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium under Playwright. Missing is a failure, not a skip: CI installs it."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"no Chromium at {CHROMIUM}: `apt-get install chromium` (.ci/run does), or set HILSERL_CHROMIUM"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


COUNT_BEEPS = """
window.__beeps = 0;
const orig = AudioContext.prototype.createOscillator;
AudioContext.prototype.createOscillator = function () { window.__beeps += 1; return orig.call(this); };
"""


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.add_init_script(COUNT_BEEPS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    resp = page.goto(url)
    assert resp.status == 200, resp.status
    return page, errors


def wait_js(page, expr: str, timeout_ms: int = WAIT_MS):
    page.wait_for_function(expr, timeout=timeout_ms)


def js(page, expr: str):
    return page.evaluate(expr)


def forbidden(url: str) -> int:
    try:
        urllib.request.urlopen(url, timeout=10)
    except urllib.error.HTTPError as e:
        return e.code
    return 200


@pytest.mark.ray
def test_operator_takes_over_steers_and_judges_a_robot_actor_from_the_page(browser, tmp_path):
    """The robot actor (real Ray, real MuJoCo, real learner) serves the page; keys pressed in
    Chromium move the sim arm, and 'success' ends the episode with reward 1 and the human's steps
    marked `is_intervention` in what the learner received."""
    import ray

    from hilserl_ray.envs.pipeline import pipeline_spec
    from hilserl_ray.runtime.learner import LearnerActor
    from hilserl_ray.runtime.robot import RobotActor, robot_actor_options

    cfg = load_config(
        "configs/sim_pick_cube.yaml",
        [
            *SMALL,
            f"--output_dir={tmp_path}",
            "--learner.training_starts=1000000",
            "--actors.env_steps_per_update=null",
        ],
    )
    ee_x = list(pipeline_spec(cfg).observation[STATE].names).index("ee.x")
    cfg_dict = cfg.model_dump(mode="json")
    start_local_ray(num_cpus=2, log_to_driver=False)
    try:
        name = f"learner_{uuid.uuid4().hex[:8]}"
        learner = LearnerActor.options(num_cpus=1, name=name).remote(cfg_dict, None)
        ray.get(learner.describe.remote(), timeout=180)
        robot = RobotActor.options(**robot_actor_options(cfg)).remote(cfg_dict, 0, name)
        info = ray.get(robot.console_info.remote(), timeout=180)
        assert info["url"].startswith("http://127.0.0.1:") and "token=" in info["url"]

        # a wrong or missing token gets 403, for the page and for the websocket
        base, token = info["url"].split("?token=")
        assert forbidden(f"{base}?token=wrong") == 403
        assert forbidden(f"{base}ws?token={token[:-1]}") == 403
        assert forbidden(base) == 403

        page, errors = open_page(browser, info["url"])
        for img in ("img.raw", "img.policy"):  # a frame shown (naturalWidth reads 0 while the next decodes)
            wait_js(page, f"document.querySelector('{img}')?.dataset.frames > 0")
        assert js(page, "document.querySelector('img.raw').dataset.size") == "96x96"  # as the robot sends it
        assert js(page, "document.querySelector('img.policy').dataset.size") == "64x64"  # after resize

        page.keyboard.press("Space")
        wait_js(page, "window.consoleStats.status?.engaged && window.consoleStats.status?.human")
        assert js(page, "document.getElementById('mode').textContent") == "HUMAN"
        # each axis both ways: wherever the untrained policy left the arm (at a workspace bound,
        # at the edge of its reach), one of the two moves is open to it
        for key in ("PageUp", "PageDown", "ArrowUp", "ArrowDown"):
            step0 = js(page, "window.consoleStats.status.step")
            page.keyboard.down(key)
            wait_js(page, f"window.consoleStats.status.step >= {step0 + 9}")  # the page's count lags
            page.keyboard.up(key)
        page.keyboard.press("s")
        wait_js(page, "window.consoleStats.cues.some(c => c.cue === 'end' && c.success)")
        wait_js(page, "window.consoleStats.status.last_success === true")
        assert js(page, "window.consoleStats.keyToApplied.length") >= 2  # key -> applied in a step
        assert js(page, "window.__beeps") == 0  # logging.sounds is off by default
        assert errors == []

        def rows():
            fields = ("action", "reward", "terminated", "is_intervention", "episode_id", "is_last", STATE)
            return ray.get(
                learner.__ray_call__.remote(
                    lambda self: {k: self.online._data[k][: self.online._written].copy() for k in fields}
                )
            )

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            r = rows()
            ended = np.flatnonzero((r["reward"] == 1.0) & r["terminated"] & ~r["is_last"])
            if ended.size:
                break
            time.sleep(0.5)
        assert ended.size == 1, "the learner got no episode ended by 'success' with reward 1"
        ep = r["episode_id"][ended[0]]
        mine = (r["episode_id"] == ep) & ~r["is_last"]
        human = r["is_intervention"][mine]
        acts, state = r["action"][mine], r[STATE][mine]
        first = int(np.argmax(human))
        pattern = "".join("H" if h else "p" for h in human)
        assert human[first:].all() and not human[:first].any(), (
            f"policy, then the human to the end: {pattern}"
        )
        pose = state[:, [ee_x, ee_x + 1, ee_x + 2]]
        for axis, name in ((2, "z"), (0, "x")):
            moved = []
            for sign in (1.0, -1.0):  # the rows with only this key held, in order
                others = np.delete(acts[:, :3], axis, axis=1)
                rows_k = np.flatnonzero(human & (acts[:, axis] == sign) & (others == 0).all(axis=1))
                assert rows_k.size >= 5, (name, sign, rows_k.size, pattern)
                moved.append(sign * (pose[rows_k[-1], axis] - pose[rows_k[0], axis]))
            # the arm really moved as told (state[i]: the observation step i's action was taken from)
            assert max(moved) > 0.03, (name, moved, pose[human][0])
        assert r["reward"][mine][-1] == 1.0 and r["terminated"][mine][-1]
        page.close()
        ray.get(robot.stop.remote(), timeout=60)
    finally:
        ray.shutdown()


@pytest.fixture
def live_console():
    """A console over a sim env stepped on a thread of its own, as `record` and the actor do."""
    import gymnasium as gym

    from hilserl_ray.console.session import open_console
    from hilserl_ray.rig import make_env

    cfg = load_config(
        "configs/sim_pick_cube.yaml",
        [*SMALL, "--logging.sounds=true", "--pipeline.image.crop={gripper_cam: [8, 16, 80, 72]}"],
    )
    console = open_console(cfg, "test")

    class Judge(gym.Wrapper):  # stands in for envs.wrappers.ClassifierReward's info field
        def step(self, action):
            out = self.env.step(action)
            out[4]["classifier_prob"] = np.float32(0.25)
            return out

    env = console.watch(Judge(make_env(cfg, seed=0, intervention=console.source(None))))
    stop = threading.Event()
    episodes: list[dict] = []

    def loop():  # the env (its GL context) lives on this thread only
        env.reset(seed=0)
        while not stop.is_set():
            _, _, term, trunc, info = env.step(np.array([0, 0, 0, 1], np.float32))
            if term or trunc:
                episodes.append({"success": info["is_success"], "rerecord": bool(info.get("rerecord"))})
                env.reset()
            time.sleep(0.01)
        env.close()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield console, episodes
    stop.set()
    console.controls.close()
    t.join(30)
    console.close()


@pytest.mark.heavy
def test_page_buttons_pause_crop_tool_and_sounds(browser, live_console):
    console, episodes = live_console
    page, errors = open_page(browser, console.url)
    wait_js(page, "document.querySelector('img.raw')?.dataset.frames > 1")
    assert js(page, "document.getElementById('sounds').checked")  # logging.sounds=true
    wait_js(page, "document.getElementById('s-classifier').textContent === '0.25'")
    # the configured crop is shown, and dragging on the raw image gives a new one to paste
    assert "gripper_cam: [8, 16, 80, 72]" in js(page, "document.getElementById('crop-out').textContent")
    box = page.locator("figure.cam canvas.overlay").bounding_box()
    sx, sy = box["width"] / 96, box["height"] / 96
    page.mouse.move(box["x"] + 10 * sx, box["y"] + 20 * sy)
    page.mouse.down()
    page.mouse.move(box["x"] + 50 * sx, box["y"] + 60 * sy, steps=5)
    page.mouse.move(box["x"] + 70 * sx, box["y"] + 80 * sy, steps=5)
    page.mouse.up()
    out = js(page, "document.getElementById('crop-out').textContent")
    assert "gripper_cam: [20, 10, 60, 60]" in out and "--pipeline.image.crop.gripper_cam=[20,10,60,60]" in out
    cfg = load_config(
        "configs/sim_pick_cube.yaml", [*SMALL, "--pipeline.image.crop.gripper_cam=[20,10,60,60]"]
    )
    assert cfg.pipeline.image.crop["gripper_cam"] == (20, 10, 60, 60)  # what the page shows is valid config

    # pause holds the env: no step while paused, steps again after resume (button, then key)
    page.locator("#b-pause").click()
    wait_js(page, "window.consoleStats.status.paused")
    assert js(page, "document.getElementById('mode').textContent") == "PAUSED"
    time.sleep(0.6)
    s0 = console.view.snapshot()[2]["step"]
    time.sleep(1.0)
    assert console.view.snapshot()[2]["step"] == s0
    page.keyboard.press("p")
    wait_js(page, f"!window.consoleStats.status.paused && window.consoleStats.status.step > {s0}")

    # the takeover button, then failure and re-record end episodes; cues beep (sounds on)
    page.locator("#b-takeover").click()
    wait_js(page, "window.consoleStats.status.engaged")
    page.keyboard.press("f")
    wait_js(page, "window.consoleStats.cues.some(c => c.cue === 'end' && !c.success)")
    page.keyboard.press("r")
    wait_js(page, "window.consoleStats.cues.some(c => c.cue === 'rerecord')")
    assert js(page, "window.__beeps") >= 3  # start / takeover / end cues, after the first key press
    assert {"success": False, "rerecord": False} in episodes and {
        "success": False,
        "rerecord": True,
    } in episodes
    assert errors == []
    page.close()


@pytest.mark.heavy
def test_pause_holds_the_real_arm_with_torque_on_past_its_watchdog(tmp_path):
    """The real env on the fake servo bus: a pause longer than the watchdog's release time keeps
    the torque on (the paused env thread feeds it), then the run resumes."""
    from fake_sts3215 import INST_SYNC_WRITE, FakeBus, real_config, write_calibration

    from hilserl_ray.hardware.robot_env import make_real_env

    with FakeBus(actual={1: 2048, 2: 2048, 3: 2048, 4: 2048, 5: 2048, 6: 2048}) as fake:
        cfg = real_config(
            fake.port,
            write_calibration(tmp_path / "c.json"),
            robot={"watchdog_seconds": 0.1, "watchdog_release_seconds": 0.3},
        )
        env = make_real_env(cfg)
        try:
            obs, _ = env.reset()
            env.step(obs[STATE])
            controls = WebControls()
            src = WebSource(controls, None)
            controls.press("p")
            fake.clear_log()
            t = threading.Thread(target=src.action, args=({}, env))
            t.start()
            time.sleep(1.0)  # over three times the watchdog's release time
            assert t.is_alive() and all(s.torque for s in fake.servos.values())
            held = [p for _, _, p in fake.instructions(INST_SYNC_WRITE) if p[0] == 42]
            assert len(set(held)) == 1  # "stop where you are" (goal = present), no move
            controls.press("p")
            t.join(5)
            assert not t.is_alive()
            env.step(obs[STATE])  # and the arm takes commands again
        finally:
            env.close()
        assert not any(s.torque for s in fake.servos.values())


def test_a_taken_port_is_a_user_error_naming_the_key():
    import socket

    from hilserl_ray.console.session import open_console
    from hilserl_ray.errors import UserError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = load_config("configs/sim_pick_cube.yaml", [f"--console.port={port}"])
        with pytest.raises(UserError, match="console.port") as e:
            open_console(cfg, "x")
        assert f"127.0.0.1:{port}" in str(e.value) and "console.port=0" in str(e.value)


@pytest.mark.subprocess
def test_evaluate_counts_an_operators_takeover_apart_from_the_policy(browser, tmp_path):
    """`evaluate` serves the page too: an episode a person steered and judged is counted as a
    takeover, and the policy-alone success rate leaves it out."""
    from hilserl_ray.configio import write_config
    from hilserl_ray.runtime.checkpoint import write_checkpoint
    from hilserl_ray.runtime.learner import Learner

    out = tmp_path / "run"
    out.mkdir()
    cfg = load_config(
        "configs/sim_pick_cube.yaml",
        [
            *SMALL,
            f"--output_dir={out}",
            "--env.max_episode_steps=100000",
            "--learner.training_starts=1000000000",
        ],
    )
    write_config(cfg, out / "config.yaml")
    learner = Learner(cfg.model_dump(mode="json"))
    write_checkpoint(out / "checkpoints", None, lambda d: {**learner.save(str(d)), "step": 0})  # untrained
    learner.close()
    proc = subprocess.Popen(
        module_command("hilserl_ray.evaluate", str(out), "--episodes", "2", "--no-video"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("console: http://127.0.0.1:"), line + proc.stderr.read()
        page, errors = open_page(browser, line.split()[1])
        wait_js(page, "window.consoleStats.status?.episode === 1")
        page.keyboard.press("Space")  # take over, steer a little, then judge it a success
        wait_js(page, "window.consoleStats.status?.human === true")
        step0 = js(page, "window.consoleStats.status.step")
        page.keyboard.down("PageUp")
        wait_js(page, f"window.consoleStats.status.step >= {step0 + 5}")
        page.keyboard.up("PageUp")
        page.keyboard.press("s")
        wait_js(page, "window.consoleStats.status?.episode === 2")
        page.keyboard.press("f")  # the policy alone, judged a failure without a takeover
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr[-2000:]
        assert errors == []
    finally:
        proc.kill()
    ev = json.loads((out / "eval.json").read_text())
    first, second = ev["per_episode"]
    assert first["success"] and first["intervention_steps"] >= 5
    assert not second["success"] and second["intervention_steps"] == 0
    assert ev["success_rate"] == 0.5 and ev["episodes_with_takeover"] == 1
    assert ev["policy_alone_success_rate"] == 0.0
    assert "a person took over in 1 (policy alone: 0%)" in stdout
