"""Forward and inverse kinematics of the SO-101 from its MJCF, shared by the sim and the real arm.

Everything runs on a private, model-only `MjData` (no simulation state is touched), so the real
robot needs no URDF and no physics: just joint degrees in, poses out. Joint units are those of
`observation.state`: degrees for the five arm joints (1:1 with the MJCF radians) and 0..100 for
the gripper (ignored by FK/IK of the arm).

Euler angles are roll, pitch, yaw (radians) with R = Rz(yaw) @ Ry(pitch) @ Rx(roll).
"""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np

from hilserl_ray.so101 import ARM, GRIPPER, JOINT_NAMES, NUM_ARM_JOINTS, NUM_JOINTS

ASSETS = Path(__file__).parent / "assets"
DEFAULT_MJCF = ASSETS / "so101.xml"
EE_SITE = "gripperframe"


def mat_to_euler(mat: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 3) roll, pitch, yaw."""
    mat = np.asarray(mat, dtype=np.float64)
    roll = np.arctan2(mat[..., 2, 1], mat[..., 2, 2])
    pitch = np.arcsin(np.clip(-mat[..., 2, 0], -1.0, 1.0))
    yaw = np.arctan2(mat[..., 1, 0], mat[..., 0, 0])
    return np.stack([roll, pitch, yaw], axis=-1)


def euler_to_mat(euler: np.ndarray) -> np.ndarray:
    """(..., 3) roll, pitch, yaw -> (..., 3, 3) rotation matrices."""
    euler = np.asarray(euler, dtype=np.float64)
    cr, cp, cy = np.cos(euler[..., 0]), np.cos(euler[..., 1]), np.cos(euler[..., 2])
    sr, sp, sy = np.sin(euler[..., 0]), np.sin(euler[..., 1]), np.sin(euler[..., 2])
    rows = [
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def gripper_range(model: mujoco.MjModel) -> tuple[float, float]:
    """Radian range of the gripper joint, which 0..100 (closed..open) maps onto linearly."""
    lo, hi = model.joint("gripper").range
    return float(lo), float(hi)


class Kinematics:
    """FK of any site and damped-least-squares IK for an MJCF with the SO-101 joint names.

    Not thread-safe (one scratch MjData); make one per thread/actor. Cheap: about 10 us per FK.
    """

    def __init__(self, mjcf: Path | str | None = None):
        self.mjcf = Path(mjcf) if mjcf is not None else DEFAULT_MJCF
        if not self.mjcf.is_file():
            raise FileNotFoundError(
                f"robot.mjcf: no MJCF file at '{self.mjcf}'; point it at an SO-101 model "
                f"or leave it unset for the built-in one ({DEFAULT_MJCF})"
            )
        self.model = mujoco.MjModel.from_xml_path(str(self.mjcf))
        self.data = mujoco.MjData(self.model)
        missing = [j for j in JOINT_NAMES if mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, j) < 0]
        if missing:
            raise ValueError(
                f"robot.mjcf '{self.mjcf}': joints {missing} not found; the model needs the SO-101 "
                f"joint names {list(JOINT_NAMES)}"
            )
        joints = [self.model.joint(j) for j in JOINT_NAMES]
        self.qpos_adr = np.array([int(j.qposadr[0]) for j in joints])
        self.dof_adr = np.array([int(j.dofadr[0]) for j in joints])
        self.ranges = np.array([j.range for j in joints], dtype=np.float64)  # radians
        self.gripper_range = gripper_range(self.model)
        self.ee_site = self.site_id(EE_SITE)

    # ---------------------------------------------------------------- units
    def site_id(self, site: str) -> int:
        sid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, site)
        if sid < 0:
            raise ValueError(
                f"MJCF '{self.mjcf}' has no site '{site}'; it needs the end-effector site '{EE_SITE}'"
            )
        return sid

    def to_radians(self, q_deg: np.ndarray) -> np.ndarray:
        """State units (..., 6) -> joint radians (..., 6); gripper 0..100 -> its joint range."""
        q = np.deg2rad(np.asarray(q_deg, dtype=np.float64))
        lo, hi = self.gripper_range
        q[..., GRIPPER] = lo + np.asarray(q_deg, dtype=np.float64)[..., GRIPPER] / 100.0 * (hi - lo)
        return q

    def to_state(self, q_rad: np.ndarray) -> np.ndarray:
        """Joint radians (..., 6) -> state units (..., 6)."""
        q = np.rad2deg(np.asarray(q_rad, dtype=np.float64))
        lo, hi = self.gripper_range
        q[..., GRIPPER] = (np.asarray(q_rad, dtype=np.float64)[..., GRIPPER] - lo) / (hi - lo) * 100.0
        return q

    def clip_state(self, q_deg: np.ndarray) -> np.ndarray:
        """Clip joint targets (state units) to the model's joint ranges."""
        q = np.array(q_deg, dtype=np.float64)
        q[..., ARM] = np.clip(q[..., ARM], np.rad2deg(self.ranges[ARM, 0]), np.rad2deg(self.ranges[ARM, 1]))
        q[..., GRIPPER] = np.clip(q[..., GRIPPER], 0.0, 100.0)
        return q

    # ------------------------------------------------------------------- FK
    def _set(self, q_rad_arm: np.ndarray) -> None:
        self.data.qpos[self.qpos_adr[ARM]] = q_rad_arm
        mujoco.mj_kinematics(self.model, self.data)

    def fk(self, q_deg: np.ndarray, site: str = EE_SITE) -> tuple[np.ndarray, np.ndarray]:
        """Pose of `site` in the base frame: (pos (..., 3) metres, euler (..., 3) rad)."""
        q_deg = np.asarray(q_deg, dtype=np.float64)
        if q_deg.shape[-1] not in (NUM_ARM_JOINTS, NUM_JOINTS):
            raise ValueError(f"fk: q_deg must end in 6 joint values (state units), got shape {q_deg.shape}")
        sid = self.ee_site if site == EE_SITE else self.site_id(site)
        flat = np.deg2rad(q_deg[..., ARM].reshape(-1, NUM_ARM_JOINTS))
        pos = np.empty((len(flat), 3))
        mat = np.empty((len(flat), 3, 3))
        for i, q in enumerate(flat):
            self._set(q)
            pos[i] = self.data.site_xpos[sid]
            mat[i] = self.data.site_xmat[sid].reshape(3, 3)
        batch = q_deg.shape[:-1]
        return pos.reshape(*batch, 3), mat_to_euler(mat).reshape(*batch, 3)

    def fk_mat(self, q_deg: np.ndarray, site: str = EE_SITE) -> tuple[np.ndarray, np.ndarray]:
        """Like `fk` for one configuration, but the rotation as a 3x3 matrix."""
        sid = self.ee_site if site == EE_SITE else self.site_id(site)
        self._set(np.deg2rad(np.asarray(q_deg, dtype=np.float64)[ARM]))
        return self.data.site_xpos[sid].copy(), self.data.site_xmat[sid].reshape(3, 3).copy()

    # ------------------------------------------------------------------- IK
    def ik(
        self,
        target_pos: np.ndarray,
        q_init_deg: np.ndarray,
        target_euler: np.ndarray | None = None,
        *,
        approach_dir: np.ndarray | None = None,
        site: str = EE_SITE,
        roll_weight: float = 0.3,
        tol: float = 5e-4,
        max_iters: int = 100,
        damping: float = 1e-3,
        max_step_rad: float = 0.25,
        restarts: bool = True,
        max_turn_rad: float | None = None,
    ) -> np.ndarray:
        """Joint targets (6,) in state units that put `site` at `target_pos` (metres).

        Damped least squares from the warm start `q_init_deg`, with joint limits (an active set:
        a joint at a limit stops pushing into it). Position comes first; the optional orientation
        task moves only in its null space, so a 5-DOF arm gets the position exactly and the
        orientation as close as it allows: `target_euler` (full orientation) or `approach_dir`
        (the site's x axis, the finger direction, along this world vector; wrist_roll, which
        spins the fingers about that axis, is held at its warm start with `roll_weight`). The
        gripper value is copied from `q_init_deg`. Unreachable targets give the closest pose
        found (check with `fk`). `max_turn_rad`: the most the orientation task may move any joint
        in this call (a controller calling every step: where the orientation cannot be reached,
        near full reach, an uncapped task swings the joints each call and the EE creeps). If the
        warm start ends in a local minimum (position error above `tol`), a few fixed seeds aimed
        at the target are tried (`restarts`), so the result stays deterministic.
        """
        q_init_deg = np.asarray(q_init_deg, dtype=np.float64)
        if q_init_deg.shape != (NUM_JOINTS,):
            raise ValueError(f"ik: q_init_deg must have shape (6,) in state units, got {q_init_deg.shape}")
        target_pos = np.asarray(target_pos, dtype=np.float64).reshape(3)
        sid = self.ee_site if site == EE_SITE else self.site_id(site)
        target_mat = euler_to_mat(target_euler) if target_euler is not None else None
        down = None
        if approach_dir is not None:
            down = np.asarray(approach_dir, dtype=np.float64).reshape(3)
            down = down / np.linalg.norm(down)
        turn = np.inf if max_turn_rad is None else max_turn_rad
        args = (target_pos, sid, target_mat, down, roll_weight, tol, max_iters, damping, max_step_rad, turn)
        q, err = self._solve(np.deg2rad(q_init_deg[ARM]), *args)
        if restarts and err > tol:
            pan = -np.arctan2(target_pos[1], target_pos[0] - self.model.body("shoulder").pos[0])
            for lift, elbow, flex in _RESTART_SEEDS:
                seed = np.array([pan, lift, elbow, flex, np.deg2rad(q_init_deg[4])])
                q2, err2 = self._solve(seed, *args)
                if err2 < err:
                    q, err = q2, err2
                if err <= tol:
                    break
        out = q_init_deg.copy()
        out[ARM] = np.rad2deg(q)
        return out

    def _solve(self, q0, target_pos, sid, target_mat, down, w, tol, max_iters, damping, max_step_rad, turn):
        """One damped-least-squares descent from q0 (radians); returns (q, position error).
        `turn`: what is left of the orientation task's joint motion budget (max-norm, summed)."""
        lo, hi = self.ranges[ARM, 0], self.ranges[ARM, 1]
        q = np.clip(q0, lo, hi)
        jacp = np.zeros((3, self.model.nv))
        jacr = np.zeros((3, self.model.nv))
        cols = self.dof_adr[ARM]
        for _ in range(max_iters):
            self._set(q)
            pos = self.data.site_xpos[sid]
            mat = self.data.site_xmat[sid].reshape(3, 3)
            ep = target_pos - pos
            sec_err, ori_err = [], 0.0
            if target_mat is not None:
                rot_err = _rotation_error(target_mat, mat)
                sec_err.append(rot_err)
                ori_err = float(np.linalg.norm(rot_err))
            if down is not None:
                # rotation turning the finger axis onto `down`, in the 2 directions normal to it
                perp = _normal_basis(mat[:, 0])
                axis_err = perp @ _cross(mat[:, 0], down)
                # wrist_roll spins the fingers about their own axis: hold it where it started
                sec_err += [axis_err, [w * (q0[4] - q[4])]]
                ori_err = max(ori_err, float(np.linalg.norm(axis_err)))
            if np.linalg.norm(ep) < tol and ori_err < 1e-3:
                break
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jacSite(self.model, self.data, jacp, jacr, sid)
            jp = jacp[:, cols].copy()
            js, es = None, None
            if sec_err:
                rows = []
                if target_mat is not None:
                    rows.append(jacr[:, cols])
                if down is not None:
                    rows += [perp @ jacr[:, cols], w * _ROLL_ROW]
                js, es = np.concatenate(rows), np.concatenate(sec_err)
            dq, dq_null = _prioritized(jp, ep, js, es, damping)
            # active set: a joint at a limit that the step pushes further out is dropped
            total = dq + dq_null
            blocked = ((q <= lo + 1e-6) & (total < 0)) | ((q >= hi - 1e-6) & (total > 0))
            if blocked.any() and not blocked.all():
                jp[:, blocked] = 0.0
                if js is not None:
                    js[:, blocked] = 0.0
                dq, dq_null = _prioritized(jp, ep, js, es, damping)
                dq[blocked] = dq_null[blocked] = 0.0
            # the step budget goes to the position task first: scaling the sum instead let a
            # large orientation step (near its singularity) starve the position to ~1/20 per
            # iteration, and IK then stopped centimetres short of the target
            norm = np.abs(dq).max()
            if norm > max_step_rad:
                dq *= max_step_rad / norm
            budget = min(max_step_rad - np.abs(dq).max(), turn)
            norm_null = np.abs(dq_null).max()
            if norm_null > budget:
                dq_null *= budget / norm_null
            turn -= min(norm_null, budget)
            dq = dq + dq_null
            q_new = np.clip(q + dq, lo, hi)
            step = np.abs(q_new - q).max()
            if step < 1e-7 or (step < 1e-4 and np.linalg.norm(ep) < tol):  # converged as far as it goes
                break
            q = q_new
        self._set(q)
        return q, float(np.linalg.norm(target_pos - self.data.site_xpos[sid]))


_ROLL_ROW = np.array([[0.0, 0.0, 0.0, 0.0, 1.0]])
_EYE3, _EYE5 = np.eye(3), np.eye(5)
# (shoulder_lift, elbow_flex, wrist_flex) radians: reaching forward low/high, and folded back
_RESTART_SEEDS = [(0.3, 0.3, 1.0), (-0.5, 1.0, 0.8), (-1.2, 1.5, -0.5), (-1.0, -1.2, -0.5), (1.0, 1.2, 0.5)]


def _prioritized(jp, ep, js, es, damping: float) -> tuple[np.ndarray, np.ndarray]:
    """Damped least-squares steps (position, orientation): the orientation task (if any) only
    moves in the position task's null space, so it never costs position accuracy."""
    pinv = jp.T @ np.linalg.inv(jp @ jp.T + damping**2 * _EYE3)
    dq = pinv @ ep
    if js is None:
        return dq, np.zeros_like(dq)
    null = _EYE5 - pinv @ jp
    jn = js @ null
    dq2 = jn.T @ np.linalg.solve(jn @ jn.T + (10 * damping) ** 2 * np.eye(len(es)), es - js @ dq)
    return dq, null @ dq2


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """3-vector cross product (np.cross costs ~15 us of axis handling per call)."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _normal_basis(axis: np.ndarray) -> np.ndarray:
    """(2, 3) orthonormal rows spanning the plane normal to unit vector `axis`."""
    helper = _EX if abs(axis[0]) < 0.9 else _EY
    b1 = _cross(axis, helper)
    b1 /= np.linalg.norm(b1)
    return np.stack([b1, _cross(axis, b1)])


_EX, _EY = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])


def _rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """World-frame axis*angle that rotates `current` onto `target`."""
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, (target @ current.T).reshape(9))
    vel = np.empty(3)
    mujoco.mju_quat2Vel(vel, quat, 1.0)
    return vel
