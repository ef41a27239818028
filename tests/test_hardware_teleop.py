"""Human intervention sources: keyboard and gamepad (injected device events), leader arm (fake bus)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from fake_sts3215 import FakeBus, real_config, write_calibration

from hilserl_ray.envs.intervention import InterventionSource
from hilserl_ray.envs.kinematics import Kinematics
from hilserl_ray.hardware.keys import KeyboardListener
from hilserl_ray.hardware.leader import make_leader_source
from hilserl_ray.hardware.teleop import GamepadSource, KeyboardSource, make_teleop_source

RESET = np.array([0.0, -20.0, 30.0, 70.0, 0.0, 30.0], dtype=np.float32)


def test_keyboard_takeover_moves_gripper_and_events():
    keys = KeyboardListener()
    src = KeyboardSource(discrete_gripper=True, keys=keys, start=False)
    assert isinstance(src, InterventionSource)
    src.reset()
    obs = {"observation.state": np.zeros(18, np.float32)}
    keys.press("up")
    assert src.action(obs, None) is None  # not taken over: the policy acts
    keys.press("space")
    keys.release("space")
    np.testing.assert_array_equal(src.action(obs, None), [1, 0, 0, 1])  # +x, gripper stays
    keys.release("up")
    keys.press("left")
    keys.press("page_down")
    keys.press("o")
    np.testing.assert_array_equal(src.action(obs, None), [0, 1, -1, 2])  # +y, -z, open
    keys.release("o")
    keys.press("c")
    assert src.action(obs, None)[3] == 0  # close
    keys.press("s")
    assert src.events() == {"success": True, "failure": False, "rerecord": False}
    assert src.events()["success"] is False  # reported once
    keys.press("space")
    assert src.action(obs, None) is None  # handed back
    keys.press("r")
    src.reset()  # a new episode forgets stale presses
    assert src.events()["rerecord"] is False


def test_gamepad_hold_to_steer_triggers_and_button_edges():
    state = {"axes": [0.0, 0.0, -1.0, 0.0, 0.0, -1.0], "buttons": [False] * 11}
    src = GamepadSource(discrete_gripper=False, poll=lambda: (state["axes"], state["buttons"]))
    assert isinstance(src, InterventionSource)
    obs = {}
    src.reset()
    state["axes"][1] = -0.8  # left stick forward
    assert src.action(obs, None) is None
    state["buttons"][5] = True  # RB held
    a = src.action(obs, None)
    np.testing.assert_allclose(a, [0.8, 0, 0, 0], atol=1e-6)
    state["axes"][0], state["axes"][4], state["axes"][5] = 0.05, 0.5, 1.0  # in deadzone, right stick back, RT
    np.testing.assert_allclose(src.action(obs, None), [0.8, 0, -0.5, 1.0], atol=1e-6)
    state["buttons"][3] = True  # Y held over many steps: one success
    src.action(obs, None)
    src.action(obs, None)
    assert src.events()["success"] is True
    assert src.events()["success"] is False


@pytest.mark.skipif(importlib.util.find_spec("pynput") is not None, reason="pynput installed")
def test_missing_optional_dependency_names_the_extra():
    with pytest.raises(ImportError, match=r"hilserl_ray\[teleop\]"):
        KeyboardListener().start()


@pytest.mark.skipif(importlib.util.find_spec("pygame") is not None, reason="pygame installed")
def test_missing_pygame_names_the_extra(tmp_path):
    cfg = real_config("/dev/null", tmp_path / "c.json", pipeline={"intervention": {"source": "gamepad"}})
    with pytest.raises(ImportError, match=r"hilserl_ray\[teleop\]"):
        make_teleop_source(cfg)


def test_leader_arm_takes_over_by_moving_and_by_key(tmp_path):
    cal = write_calibration(tmp_path / "c.json")
    with FakeBus() as leader_bus:
        for s in leader_bus.servos.values():
            s.poke((40, 1), 1)  # left powered by something else: the leader must turn it off
        cfg = real_config(
            "/dev/null",
            cal,
            pipeline={
                "intervention": {
                    "source": "leader",
                    "leader_port": leader_bus.port,
                    "leader_calibration": str(cal),
                }
            },
        )
        keys = KeyboardListener()
        src = make_leader_source(cfg, keys=keys)
        try:
            assert isinstance(src, InterventionSource)
            assert not any(s.torque for s in leader_bus.servos.values())
            raw = src.leader.normalizer.to_raw(RESET)
            for i, name in enumerate(src.leader.bus.motors):
                leader_bus[i + 1].set_present(raw[name])
            src.reset()
            obs = {"observation.state": np.concatenate([RESET, np.zeros(12, np.float32)])}
            assert src.action(obs, None) is None  # leader at rest
            # a small wobble (< leader_divergence_deg = 15) is not a takeover
            leader_bus[1].set_present(raw["shoulder_pan"] + round(10 * 4095 / 360))
            assert src.action(obs, None) is None
            # the human swings the pan 20 degrees and opens the gripper
            leader_bus[1].set_present(raw["shoulder_pan"] + round(20 * 4095 / 360))
            leader_bus[6].set_present(raw["gripper"] + 300)
            a = src.action(obs, None)
            assert a is not None and src.engaged
            kin = Kinematics()
            want = (kin.fk(src.last_leader)[0] - kin.fk(RESET)[0]) / cfg.pipeline.ee_action.step_size_m
            np.testing.assert_allclose(a[:3], np.clip(want, -1, 1), atol=1e-5)
            assert a[1] == -1.0  # positive pan swings the gripper towards -y
            assert a[3] == 2.0  # open
            # follower caught up: no motion left, gripper stays; still the human's until handed back
            caught_up = np.concatenate([src.last_leader, np.zeros(12)]).astype(np.float32)
            np.testing.assert_allclose(
                src.action({"observation.state": caught_up}, None), [0, 0, 0, 1], atol=1e-4
            )
            keys.press("space")  # hand back (a pedal typing a key does the same)
            assert src.action(obs, None) is None and not src.engaged
            keys.release("space")
            keys.press("space")  # take over by key without moving the leader
            assert src.action(obs, None) is not None
            keys.press("f")
            assert src.events()["failure"] is True
        finally:
            src.close()
        assert not any(s.torque for s in leader_bus.servos.values())


def test_human_sources_need_the_ee_action_format(tmp_path):
    # refused by the config itself (so --dry-run names it), before any device opens
    with pytest.raises(ValueError, match=r"pipeline.ee_action.enabled: got False.*'keyboard'"):
        real_config(
            "/dev/null",
            tmp_path / "c.json",
            pipeline={"intervention": {"source": "keyboard"}, "ee_action": {"enabled": False}},
        )


def test_leader_for_record_drives_from_the_first_step_until_handed_back(tmp_path):
    """`record`'s leader (from_start): the person's from step 0, the leader still at rest; space
    hands back for the rest of the episode, and the next episode is the person's again."""
    cal = write_calibration(tmp_path / "c.json")
    with FakeBus() as leader_bus:
        cfg = real_config(
            "/dev/null",
            cal,
            pipeline={
                "intervention": {
                    "source": "leader",
                    "leader_port": leader_bus.port,
                    "leader_calibration": str(cal),
                }
            },
        )
        keys = KeyboardListener()
        src = make_leader_source(cfg, keys=keys, from_start=True)
        try:
            raw = src.leader.normalizer.to_raw(RESET)
            for i, name in enumerate(src.leader.bus.motors):
                leader_bus[i + 1].set_present(raw[name])
            src.reset()
            obs = {"observation.state": np.concatenate([RESET, np.zeros(12, np.float32)])}
            a = src.action(obs, None)  # the leader at rest, where the follower is: hold still
            assert a is not None and np.abs(a[:3]).max() < 0.02 and a[3] == 1.0, a
            keys.press("space")
            assert src.action(obs, None) is None and not src.engaged
            keys.release("space")
            src.reset()
            assert src.action(obs, None) is not None
        finally:
            src.close()
