"""A fleet of arms: the `robots` config, placement on labelled nodes, per-arm metrics, failures.

Placement and failure tests run a real multi-node Ray on this machine (`ray.cluster_utils.Cluster`,
one node per arm with its label and resource); sim arms pinned by label stand in for real ones.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import ray
from run_helpers import (
    ENV,
    ROOT,
    SMALL_REACH,
    driver_env,
    module_command,
    start_cluster,
    train_command,
    wait_for,
)

from hilserl_ray.configio import ConfigError, load_config, write_config
from hilserl_ray.fleet import fleet
from hilserl_ray.fleet.arms import local_node_placement
from hilserl_ray.preflight import preflight

SMALL = [*SMALL_REACH[2:-1], "--checkpoint.every_updates=100000"]  # no --config, no ray.num_cpus
TWO_SIM_ARMS = "--robots=[{name: arm1, label: arm1}, {name: arm2, label: arm2}]"


def reach(*extra: str):
    return load_config(ROOT / "configs" / "sim_reach.yaml", [*SMALL, *extra])


# ------------------------------------------------------------------------------ config
def test_one_robot_is_a_fleet_of_one_and_sim_copies_stay():
    (arm,) = fleet(load_config(ROOT / "configs" / "so101_real.yaml"))
    assert (arm.label, arm.resource, arm.cfg.robot.port) == ({"robot": "so101"}, "so101", "/dev/ttyACM0")
    arms = fleet(reach("--actors.num_robot_actors=3"))
    assert [a.name for a in arms] == ["arm0", "arm1", "arm2"] and all(not a.label for a in arms)


def test_each_arm_runs_the_shared_config_with_its_own_devices(tmp_path):
    cfg = load_config(ROOT / "configs" / "so101_fleet.yaml")
    write_config(cfg, tmp_path / "config.yaml")  # a run's resolved config restarts the same fleet
    assert load_config(tmp_path) == cfg
    a1, a2 = fleet(cfg)
    assert (a1.label, a1.resource) == ({"robot": "arm1"}, "so101_arm1")
    assert (a2.label, a2.resource) == ({"robot": "arm2"}, "so101_arm2")
    assert str(a1.cfg.robot.calibration) == "calibration/arm1_follower.json"
    assert str(a2.cfg.robot.calibration) == "calibration/arm2_follower.json"
    assert a1.cfg.env.cameras[0].device.endswith("Webcam_A-video-index0")
    assert a2.cfg.env.cameras[0].device.endswith("Webcam_B-video-index0")
    assert a1.cfg.pipeline.image.crop == {"gripper_cam": (0, 80, 480, 480)}  # the shared crop
    assert a2.cfg.pipeline.image.crop == {"gripper_cam": (0, 60, 480, 480)}  # its own
    assert str(a2.cfg.pipeline.intervention.leader_calibration) == "calibration/arm2_leader.json"
    assert a2.cfg.pipeline.intervention.source == "leader"  # shared, not repeated per arm
    for a in (a1, a2):  # what they share stays shared
        assert a.cfg.robot.max_relative_target_deg == 8.0 and not a.cfg.robots
        assert a.cfg.policy == cfg.policy and a.cfg.pipeline.image.size == (128, 128)


def test_fleet_config_errors_name_the_arm_and_key():
    with pytest.raises(ConfigError) as e:
        load_config(
            ROOT / "configs" / "so101_fleet.yaml",
            [
                "--robots.1.port=null",
                "--robots.0.cameras.front=2",
                "--robots.1.resource=so101_arm1",
                "--actors.num_robot_actors=2",
            ],
        )
    msg = e.value.message()
    assert "robots.1.port: got None; a real robot needs its serial port" in msg and "(arm 'arm2')" in msg
    assert "robots.0.cameras.front: got 2; one of env.cameras ['gripper_cam']" in msg
    assert "robots.1.resource: got 'so101_arm1'; each arm its own resource ('arm1' has it)" in msg
    assert "actors.num_robot_actors: got 2; 1 with `robots`" in msg
    with pytest.raises(ConfigError) as e:
        reach("--robots=[{name: a}, {name: a}]")
    assert "robots: got ['a', 'a']; arm names must be unique" in e.value.message()


def test_two_arms_that_may_share_a_node_cannot_share_a_serial_port():
    """Two actors on one node driving one bus would fight over it: refused before Ray starts."""
    fleet_yaml = ROOT / "configs" / "so101_fleet.yaml"
    assert load_config(fleet_yaml).robots[1].port == load_config(fleet_yaml).robots[0].port  # own nodes: fine
    with pytest.raises(ConfigError) as e:
        load_config(fleet_yaml, ["--robots.1.label=arm1"])
    msg = e.value.message()
    assert "robots.1.port: got '/dev/ttyACM0'; a port of its own: arm 'arm1' on the same node" in msg
    assert "robots.1.intervention.leader_port: got '/dev/ttyACM1'; a port of its own" in msg
    assert load_config(
        fleet_yaml,
        [
            "--robots.1.label=arm1",
            "--robots.1.port=/dev/ttyACM2",
            "--robots.1.intervention.leader_port=/dev/ttyACM3",
        ],
    )


def test_every_arm_must_give_the_same_features_and_the_difference_is_named(tmp_path):
    calib = ROOT / "tests/bad_inputs/calibrations/good.json"
    port = tmp_path / "ttyACM0"  # not under /dev: preflight does not look for it
    real = (
        f"{{name: real, type: so101, port: {port}, calibration: {calib}, intervention: {{source: keyboard}}}}"
    )
    # a state-only sim arm sees the target position (privileged); a real arm cannot
    with pytest.raises(ConfigError) as e:
        preflight(reach(f"--robots=[{{name: sim}}, {real}]"))
    msg = e.value.message()
    assert "robots.1: got 'real'" in msg and "observation.environment_state: absent" in msg
    preflight(reach("--env.environment_state=false", f"--robots=[{{name: sim}}, {real}]"))
    empty = tmp_path / "c.json"
    empty.write_text("{}")
    with pytest.raises(ConfigError) as e:  # each arm's calibration and serial port, named per arm
        preflight(
            reach(
                "--env.environment_state=false",
                f"--robots=[{{name: sim}}, {real}]",
                f"--robots.1.calibration={empty}",
                "--robots.1.port=/dev/nonexistent_ttyACM9",
            )
        )
    msg = e.value.message()
    assert "robots.1.calibration" in msg and "a usable calibration" in msg and "(arm 'real')" in msg
    assert "robots.1.port: got '/dev/nonexistent_ttyACM9'" in msg
    with pytest.raises(ConfigError) as e:  # each arm's own files are checked too
        preflight(
            reach(
                "--env.environment_state=false",
                f"--robots=[{{name: sim}}, {real}]",
                "--robots.1.calibration=/nope.json",
            )
        )
    assert "robots.1.calibration: got '/nope.json'" in e.value.message()


def test_a_missing_camera_is_named_by_arm_and_camera_name():
    with pytest.raises(ConfigError) as e:  # an arm's cameras are keyed by name, not index
        preflight(load_config(ROOT / "configs" / "so101_fleet.yaml"))
    msg = e.value.message()
    assert "robots.1.cameras.gripper_cam: got '/dev/v4l/by-id/usb-046d_HD_Webcam_B-video-index0'" in msg
    assert "(arm 'arm2')" in msg and "env.cameras.0" not in msg


def test_record_and_evaluate_run_on_one_named_arm(tmp_path, capsys):
    from hilserl_ray import record
    from hilserl_ray.fleet import one_arm

    cfg = load_config(ROOT / "configs" / "so101_fleet.yaml")
    arm2 = one_arm(cfg, "arm2", "so101_fleet.yaml")
    assert str(arm2.robot.calibration) == "calibration/arm2_follower.json" and not arm2.robots
    with pytest.raises(ConfigError) as e:
        one_arm(cfg, "arm3", "so101_fleet.yaml")
    assert "--arm: got 'arm3'; one of ['arm1', 'arm2']" in e.value.message()
    args = [
        "--config",
        str(ROOT / "configs" / "so101_fleet.yaml"),
        "--episodes",
        "1",
        "--out",
        str(tmp_path / "d"),
    ]
    assert record.main(args) == 2  # which arm? named before anything opens a port
    assert "--arm: missing; one of ['arm1', 'arm2']" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    assert one_arm(reach(), None, "x") == reach()  # no fleet: the config itself


def test_one_machine_cannot_carry_two_different_labels():
    with pytest.raises(ConfigError) as e:
        local_node_placement(fleet(reach(TWO_SIM_ARMS)))
    assert "robots.1.label" in e.value.message()
    same_host = reach("--robots=[{name: arm1, label: lab}, {name: arm2, label: lab}]")
    assert local_node_placement(fleet(same_host)) == ({"robot": "lab"}, {"so101_arm1": 1, "so101_arm2": 1})


# ----------------------------------------------------------------------- on a Ray cluster
@pytest.fixture(scope="module")
def arm_cluster():
    """A head (driver + learner) and one node per arm, each with its label and its arm's resource."""
    names = ("arm1", "arm2")
    cluster, nodes = start_cluster(*({"labels": {"robot": n}, "resources": {f"so101_{n}": 1}} for n in names))
    yield cluster, {name: n.node_id for name, n in zip(names, nodes, strict=True)}
    cluster.shutdown()


@pytest.mark.ray
def test_each_arm_on_its_own_node_never_two_on_one_arm_weights_and_metrics_per_arm(arm_cluster, tmp_path):
    from hilserl_ray.runtime.learner import LearnerActor
    from hilserl_ray.runtime.robot import RobotActor, robot_actor_options
    from hilserl_ray.runtime.supervise import RobotSupervisor

    cluster, node_of = arm_cluster
    cfg = reach(TWO_SIM_ARMS, f"--output_dir={tmp_path}")
    ray.init(address=cluster.address)
    try:
        learner = LearnerActor.options(num_cpus=1, name="fleet_learner").remote(cfg.model_dump(mode="json"))
        arms = fleet(cfg)
        robots = [
            RobotActor.options(**robot_actor_options(cfg, a)).remote(
                a.cfg.model_dump(mode="json"), a.index, "fleet_learner", a.name
            )
            for a in arms
        ]
        for a, r in zip(arms, robots, strict=True):
            assert ray.get(r.stats.remote(), timeout=120)["node_id"] == node_of[a.name]
        # a second actor for arm1 gets no place: the arm's resource is taken
        again = RobotActor.options(**robot_actor_options(cfg, arms[0])).remote(
            arms[0].cfg.model_dump(mode="json"), 0, "fleet_learner", "arm1"
        )
        ready, _ = ray.wait([again.stats.remote()], timeout=3)
        assert not ready, "two actors on one arm"
        ray.kill(again)

        def per_arm():
            s = ray.get(learner.stats.remote())
            return s if all(s.get(f"arm/{n}/episodes", 0) >= 2 for n in ("arm1", "arm2")) else None

        s = wait_for(per_arm, 180, "episodes from both arms")
        for n in ("arm1", "arm2"):
            assert 0 <= s[f"arm/{n}/success_rate"] <= 1 and 0 <= s[f"arm/{n}/intervention_rate"] <= 1
            assert s[f"arm/{n}/env_steps"] >= s[f"arm/{n}/episodes"] > 0
        assert s["arm/arm1/env_steps"] + s["arm/arm2/env_steps"] == s["env_steps"]
        assert s["episodes"] == s["arm/arm1/episodes"] + s["arm/arm2/episodes"]
        wait_for(
            lambda: all(ray.get(r.stats.remote())["weights_version"] > 0 for r in robots),
            180,
            "trained weights on every arm",
        )

        # arm2 dies for good: the supervisor reports it, arm1 feeds a learner that keeps training
        sup = RobotSupervisor(lambda i: robots[i], 2, max_restarts=0, arms=["arm1", "arm2"], fleet=True)
        sup.await_start(120)
        wait_for(lambda: len(sup.poll_stats()) == 0 and all(r.stats for r in sup.robots), 60, "stats")
        ray.kill(robots[1], no_restart=True)
        wait_for(lambda: sup.poll() is not None, 60, "arm2 reported dead")
        assert [r.arm for r in sup.robots if r.dead] == ["arm2"] and [r.arm for r in sup.alive] == ["arm1"]
        before = ray.get(learner.stats.remote())
        wait_for(
            lambda: ray.get(learner.stats.remote())["arm/arm1/env_steps"] > before["arm/arm1/env_steps"] + 50,
            120,
            "arm1 to go on",
        )
        after = ray.get(learner.stats.remote())
        assert (
            after["updates"] > before["updates"]
            and after["arm/arm2/env_steps"] == before["arm/arm2/env_steps"]
        )
        assert sup.metrics()["arm/arm2/alive"] == 0.0 and sup.metrics()["arms_alive"] == 1
        ray.get(robots[0].stop.remote())
        ray.get(learner.stop.remote())
    finally:
        ray.shutdown()


@pytest.mark.ray
def test_supervisor_tells_a_restart_from_death_for_good(arm_cluster):
    from hilserl_ray.runtime.supervise import RobotSupervisor

    @ray.remote(max_restarts=1, max_task_retries=0, num_cpus=0, max_concurrency=4)
    class Arm:  # a robot actor's supervision surface, without the robot (threaded, as RobotActor)
        def ready(self):
            return True

        def watch(self):
            time.sleep(3600)  # returns when the control loop ends; here: only by dying

        def stats(self):
            return {"pid": os.getpid(), "weights_version": 3}

    cluster, _ = arm_cluster
    ray.init(address=cluster.address)
    try:
        handle = Arm.remote()
        sup = RobotSupervisor(lambda i: handle, 1, max_restarts=1, arms=["arm0"], fleet=True)
        sup.await_start(120)
        (r,) = sup.robots

        def poll_until(pred, what):
            def once():
                dead = sup.poll()
                return pred(sup.poll_stats(), dead)

            return wait_for(once, 120, what)

        poll_until(lambda up, dead: up, "the arm up")
        first = r.stats["pid"]
        os.kill(first, signal.SIGKILL)  # one restart left: Ray brings it back, counted, not final
        poll_until(lambda up, dead: up and r.stats["pid"] != first, "the restarted arm up")
        assert sup.alive and r.failures == 1 and sup.metrics()["arm/arm0/weights_version"] == 3
        os.kill(r.stats["pid"], signal.SIGKILL)  # no restart left: dead for good
        poll_until(lambda up, dead: dead == 0, "the arm dead for good")
        assert r.dead is not None and "arm 'arm0'" in r.dead.what and not sup.alive
        assert sup.metrics() == {"arms_alive": 0, "arm/arm0/alive": 0.0, "arm/arm0/weights_version": 3}
    finally:
        ray.shutdown()


@pytest.mark.ray
def test_one_restart_counts_once_when_a_watch_asked_during_it_fails_late(local_ray):
    """Ray may fail a watch asked while an actor restarts after the new process has answered:
    the same restart, not a second failure (counted twice, a run spent actors.max_restarts on
    half as many deaths; bench/chaos.py showed it after each robot kill)."""
    from hilserl_ray.runtime.supervise import RobotSupervisor

    @ray.remote(num_cpus=0, max_concurrency=8)
    class Arm:  # scripted: watch 1 is the death, watch 2 (asked during the restart) fails late
        def __init__(self):
            self.pid, self.watches, self.late = 1, 0, threading.Event()

        def ready(self):
            return True

        def watch(self):
            self.watches += 1
            if self.watches == 1:
                raise ray.exceptions.ActorUnavailableError("the process died", None)
            if self.watches == 2:
                self.late.wait(60)
                raise ray.exceptions.ActorUnavailableError("asked during the restart", None)
            time.sleep(3600)  # the new process's watch: returns when its loop ends

        def restarted(self):
            self.pid = 2

        def fail_late(self):
            self.late.set()

        def stats(self):
            return {"pid": self.pid}

    handle = Arm.remote()
    sup = RobotSupervisor(lambda i: handle, 1, max_restarts=1, arms=["arm0"])
    sup.await_start(60)
    (r,) = sup.robots
    wait_for(lambda: sup.poll_stats() and r.stats["pid"] == 1, 30, "the arm up")
    wait_for(lambda: sup.poll() is None and r.failures == 1, 30, "the death seen")
    ray.get(handle.restarted.remote())
    wait_for(lambda: sup.poll_stats() and r.stats["pid"] == 2, 30, "the new process up")
    ray.get(handle.fail_late.remote())
    time.sleep(1.0)
    for _ in range(10):
        assert sup.poll() is None
        time.sleep(0.1)
    assert r.failures == 1 and r.dead is None and sup.alive


def driver(cluster, out: Path, log: Path, *extra: str) -> subprocess.Popen:
    cmd = train_command("--config", "configs/sim_reach.yaml", *SMALL, f"--output_dir={out}", *extra)
    return subprocess.Popen(
        cmd, env=driver_env(cluster), cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True
    )


def metrics(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


@pytest.mark.ray
@pytest.mark.subprocess
def test_run_goes_on_with_the_other_arm_when_one_fails_for_good(arm_cluster, tmp_path):
    cluster, _ = arm_cluster
    out, log = tmp_path / "run", tmp_path / "driver.log"
    proc = driver(cluster, out, log, TWO_SIM_ARMS, "--actors.max_restarts=0", "--total_env_steps=900")
    try:
        text = lambda: log.read_text() if log.exists() else ""  # noqa: E731
        pid = int(
            wait_for(lambda: re.search(r"arm 'arm2' up \(pid (\d+)", text()), 240, "arm2 up", proc).group(1)
        )
        wait_for(lambda: any(r.get("updates", 0) >= 5 for r in metrics(out)), 240, "training", proc)
        os.kill(pid, signal.SIGKILL)  # no restarts left: arm2 is gone for good
        wait_for(lambda: "arm 'arm2' failed for good" in text(), 120, "the failure report", proc)
        at_failure = metrics(out)[-1]
        proc.wait(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
        print(text()[-4000:])  # the driver's output, shown when the test fails
    assert proc.returncode == 0, text()[-3000:]
    assert "1 arm(s) left" in text()
    last = metrics(out)[-1]
    assert last["env_steps"] >= 900 and last["updates"] > at_failure["updates"]
    assert last["arm/arm1/env_steps"] > at_failure.get("arm/arm1/env_steps", 0)
    assert last["arm/arm2/alive"] == 0 and last["arm/arm1/alive"] == 1 and last["arms_alive"] == 1
    assert last["arm/arm1/weights_version"] > 0 and last["arm/arm2/episodes"] > 0
    assert re.search(r"arm1: \d+ ep .* \| arm2: \d+ ep.* FAILED", text())  # the console line, per arm
    r = subprocess.run(module_command("hilserl_ray.plot", str(out)), env=ENV, capture_output=True, text=True)
    assert r.returncode == 0 and (out / "curves.png").stat().st_size > 10_000


@pytest.mark.ray
@pytest.mark.subprocess
def test_stop_policy_ends_the_run_when_one_arm_fails_for_good(arm_cluster, tmp_path):
    cluster, _ = arm_cluster
    out, log = tmp_path / "run", tmp_path / "driver.log"
    proc = driver(
        cluster,
        out,
        log,
        TWO_SIM_ARMS,
        "--actors.max_restarts=0",
        "--actors.on_robot_failure=stop",
        "--total_env_steps=100000",
    )
    try:
        text = lambda: log.read_text() if log.exists() else ""  # noqa: E731
        pid = int(
            wait_for(lambda: re.search(r"arm 'arm2' up \(pid (\d+)", text()), 240, "arm2 up", proc).group(1)
        )
        os.kill(pid, signal.SIGKILL)  # no restarts left: arm2 is gone for good
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, text()[-3000:]
    assert "arm 'arm2' failed for good" in text() and "actors.on_robot_failure=stop" in text()
    assert (out / "checkpoints").is_dir()  # stopped the usual way: final checkpoint


# ------------------------------------------------------------------- two twins, one run
def twin_arm(name: str, twin) -> str:
    """A `robots` entry pointing arm `name` at a running twin (its ptys, calibrations, camera, keys)."""
    p = twin.paths
    cams = {k.split(".")[2]: v for k, v in p.items() if k.startswith("env.cameras.")}
    cam = {"gripper_cam": cams["0"]} if cams else {}
    entry = {
        "name": name,
        "label": name,
        "port": p["robot.port"],
        "calibration": p["robot.calibration"],
        "cameras": cam,
        "intervention": {
            "leader_port": p["pipeline.intervention.leader_port"],
            "leader_calibration": p["pipeline.intervention.leader_calibration"],
            "keys_url": p["pipeline.intervention.keys_url"],
        },
    }
    return json.dumps(entry)


@pytest.mark.ray
@pytest.mark.subprocess
def test_two_twins_on_two_labelled_nodes_train_together(arm_cluster, tmp_path):
    from hilserl_ray.twin.launch import TwinProcess

    cluster, _ = arm_cluster
    fast = ["--env.max_episode_steps=30", "--robot.reset_seconds=0.5", "--robot.bus_timeout_ms=500"]
    twins = [
        TwinProcess("configs/so101_twin.yaml", tmp_path / f"twin{i}", "--seed", str(i), *fast) for i in (1, 2)
    ]
    out, log = tmp_path / "run", tmp_path / "driver.log"
    proc = None
    try:
        for t in twins:
            t.wait_ready(timeout=120)
        robots = "[" + ", ".join(twin_arm(f"arm{i}", t) for i, t in zip((1, 2), twins, strict=True)) + "]"
        cmd = train_command(
            "--config", "configs/so101_twin.yaml",
            *SMALL, *fast, "--learner.training_starts=60", "--actors.max_restarts=5",
            "--logging.progress_bar=false", f"--robots={robots}", "--total_env_steps=240",
            f"--output_dir={out}",
        )  # fmt: skip
        proc = subprocess.Popen(
            cmd,
            env=driver_env(cluster),
            cwd=ROOT,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        rc = proc.wait(timeout=900)
        text = log.read_text()
        assert rc == 0, text[-4000:]
        last = metrics(out)[-1]
        for name in ("arm1", "arm2"):
            assert last[f"arm/{name}/env_steps"] > 0 and last[f"arm/{name}/episodes"] > 0, last
            assert last[f"arm/{name}/weights_version"] > 0
        assert last["updates"] > 0
        for t in twins:  # each twin's servos got the policy's commands over its own wire
            assert len(t.events(("goal",))) > 50
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        for t in twins:
            t.stop()
