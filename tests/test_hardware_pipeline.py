"""The real-robot env through the one wrapper pipeline (make_env), on fake buses and a video camera.

Full episode: EE-delta actions solved by MuJoCo IK reach the fake servos, the observation is the
pipeline's (18-dim proprioception by FK, cropped/resized image), the time limit ends the episode,
and close() leaves the torque off. Leader arm: moving the leader takes over and the follower
converges to the leader's gripper position.
"""

from __future__ import annotations

import numpy as np
from fake_sts3215 import FakeBus, real_config, write_calibration, write_video

from hilserl_ray import rig
from hilserl_ray.envs.kinematics import Kinematics
from hilserl_ray.envs.pipeline import pipeline_spec

RESET = np.array([0.0, -20.0, 30.0, 70.0, 0.0, 30.0])


def _cfg(fake, tmp_path, **sections):
    return real_config(
        fake.port,
        write_calibration(tmp_path / "c.json"),
        write_video(tmp_path / "cam.avi", width=64, height=48),
        env={"max_episode_steps": 8},
        pipeline={
            "image": {"size": [32, 32], "crop": {"wrist": [0, 8, 48, 48]}},
            **sections.pop("pipeline", {}),
        },
        **sections,
    )


def test_full_episode_through_the_pipeline(tmp_path):
    kin = Kinematics()
    with FakeBus() as fake:
        cfg = _cfg(fake, tmp_path)
        spec = pipeline_spec(cfg)
        env = rig.make_env(cfg, seed=0)
        try:
            obs, info = env.reset(seed=0)
            spec.check_observation(obs)
            assert obs["observation.state"].shape == (18,)
            assert obs["observation.images.wrist"].shape == (32, 32, 3)
            np.testing.assert_allclose(obs["observation.state"][:6], RESET, atol=0.2)
            x0 = kin.fk(obs["observation.state"][:6])[0]
            np.testing.assert_allclose(obs["observation.state"][12:15], x0, atol=1e-4)  # ee xyz by FK
            steps, truncated = 0, False
            while not truncated:
                obs, reward, terminated, truncated, info = env.step(
                    np.array([1.0, 0.0, 0.0, 2.0], np.float32)
                )
                spec.check_observation(obs)
                assert not terminated and info["is_success"] is False
                steps += 1
                assert steps <= cfg.env.max_episode_steps
            assert steps == cfg.env.max_episode_steps
            x1 = kin.fk(obs["observation.state"][:6])[0]
            # +x for 8 steps of step_size_m = 2 cm (the fingers also turn down, which costs some x
            # and z on the way), always inside the workspace
            assert x1[0] - x0[0] > 0.04
            assert abs(x1[1] - x0[1]) < 0.01
            assert np.all(x1 >= np.array(cfg.pipeline.ee_action.workspace_low) - 1e-3)
            assert obs["observation.state"][5] > RESET[5] + 10  # the gripper opened
            # the servos are where the observation says (the fake reports raw positions)
            raw = env.unwrapped.follower.normalizer.to_raw(obs["observation.state"][:6])
            assert abs(fake[1].present - raw["shoulder_pan"]) <= 1
            assert all(s.torque for s in fake.servos.values())
        finally:
            env.close()
        assert not any(s.torque for s in fake.servos.values())


def test_leader_arm_intervention_through_the_pipeline(tmp_path):
    kin = Kinematics()
    with FakeBus() as fake, FakeBus() as leader_bus:
        cal = write_calibration(tmp_path / "leader.json")
        cfg = _cfg(
            fake,
            tmp_path,
            pipeline={
                "intervention": {
                    "source": "leader",
                    "leader_port": leader_bus.port,
                    "leader_calibration": str(cal),
                }
            },
        )
        env = rig.make_env(cfg, seed=0)
        try:
            src = _find_leader_source(env)
            src.control = None  # no keyboard on a CI machine: engagement by moving the leader only
            raw = src.leader.normalizer.to_raw(RESET)
            for i, name in enumerate(src.leader.bus.motors):
                leader_bus[i + 1].set_present(raw[name])
            obs, _ = env.reset(seed=0)
            policy_action = np.array([0.0, 0.0, 0.0, 1.0], np.float32)
            obs, *_, info = env.step(policy_action)
            assert not info["is_intervention"]  # leader at rest: the policy drives
            # the human moves the leader: shoulder_lift forward 15+ degrees, elbow 10
            target = RESET + [0, 18, 10, 0, 0, 0]
            for name, value in src.leader.normalizer.to_raw(target).items():
                leader_bus[list(src.leader.bus.motors).index(name) + 1].set_present(value)
            goal = kin.fk(target)[0]
            dist0 = np.linalg.norm(kin.fk(obs["observation.state"][:6])[0] - goal)
            for _ in range(6):
                obs, *_, info = env.step(policy_action)
                assert info["is_intervention"]
            dist1 = np.linalg.norm(kin.fk(obs["observation.state"][:6])[0] - goal)
            assert dist0 > 0.03 and dist1 < 0.01  # the follower's gripper went to the leader's
        finally:
            env.close()
        assert not any(s.torque for s in fake.servos.values())
        assert not any(s.torque for s in leader_bus.servos.values())


def _find_leader_source(env):
    from hilserl_ray.hardware.leader import LeaderSource

    e = env
    while e is not None:
        for value in vars(e).values():
            if isinstance(value, LeaderSource):
                return value
        e = getattr(e, "env", None)
    raise AssertionError("make_env did not build a LeaderSource for pipeline.intervention.source='leader'")
