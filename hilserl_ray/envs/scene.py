"""Build the sim scene around any SO-101 MJCF: table, cube, target marker, cameras, light.

The scene is added with MjSpec rather than an XML `<include>`, so the same table, cube and
cameras work around our primitive arm and around any other model with the SO-101 joint names
(e.g. the official mesh model), and the wrist camera can be put inside the arm's gripper body.
"""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np

from hilserl_ray.envs.kinematics import DEFAULT_MJCF
from hilserl_ray.so101 import JOINT_NAMES

TIMESTEP = 0.004  # s; 25 substeps per 10 Hz control step
CUBE_HALF = 0.0125  # m: a 25 mm cube, narrower than the 40 mm the jaw pads are parallel at
CUBE_MASS = 0.03  # kg
ARM_BODIES = ("shoulder", "upper_arm", "lower_arm", "wrist", "gripper", "moving_jaw_so101_v1")


def _xyaxes_quat(x, y) -> np.ndarray:
    x = np.asarray(x, float) / np.linalg.norm(x)
    y = np.asarray(y, float)
    y = y - (y @ x) * x
    y /= np.linalg.norm(y)
    mat = np.stack([x, y, np.cross(x, y)], axis=1)
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, mat.reshape(9))
    return quat


def _look_at(pos, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Quaternion of a camera at `pos` looking at `target` (a camera looks along its -z)."""
    fwd = np.asarray(target, float) - np.asarray(pos, float)
    fwd /= np.linalg.norm(fwd)
    x = np.cross(fwd, up)
    return _xyaxes_quat(x, np.cross(x, fwd))


def build_scene(mjcf: Path | str | None, offscreen: tuple[int, int] = (128, 128)) -> mujoco.MjModel:
    """Compile the arm in `mjcf` (default: ours) with the task scene. offscreen = (height, width)."""
    path = Path(mjcf) if mjcf is not None else DEFAULT_MJCF
    spec = _load_arm(path)
    _set_options(spec, offscreen)
    _make_servos(spec)
    _add_table_and_cube(spec.worldbody)
    _add_wrist_camera(spec, path)
    return spec.compile()


def _load_arm(path: Path) -> mujoco.MjSpec:
    """The arm's MJCF, which must have the SO-101 joint names."""
    if not path.is_file():
        raise FileNotFoundError(
            f"robot.mjcf: no MJCF file at '{path}'; leave it unset for the built-in SO-101"
        )
    spec = mujoco.MjSpec.from_file(str(path))
    names = {j.name for j in spec.joints}
    missing = [j for j in JOINT_NAMES if j not in names]
    if missing:
        raise ValueError(f"robot.mjcf '{path}': joints {missing} not found; needs {list(JOINT_NAMES)}")
    return spec


def _set_options(spec: mujoco.MjSpec, offscreen: tuple[int, int]) -> None:
    """Physics and offscreen rendering settings."""
    spec.option.timestep = TIMESTEP
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = 5.0  # stiffer friction: a squeezed cube does not creep out of the jaws
    spec.visual.global_.offheight = max(offscreen[0], 64)
    spec.visual.global_.offwidth = max(offscreen[1], 64)
    spec.visual.quality.shadowsize = 0
    spec.visual.quality.offsamples = 0  # no multisampling: llvmpipe rasterizes every sample on the CPU
    spec.visual.quality.numslices = 12  # coarse capsules: fewer triangles for the CPU rasterizer
    spec.visual.quality.numstacks = 4
    spec.visual.headlight.ambient = [0.45, 0.45, 0.45]
    spec.visual.headlight.diffuse = [0.5, 0.5, 0.5]


def _make_servos(spec: mujoco.MjSpec) -> None:
    """Make the arm's joints behave like the SO-101's position-controlled servos."""
    # Servos hold their pose against gravity (their position loop integrates); gravity
    # compensation gives the sim's proportional actuators the same steady state.
    for body in spec.bodies:
        if body.name in ARM_BODIES:
            body.gravcomp = 1.0
    # Position actuators on every joint, if the model has none (ours and the official one do).
    have = {a.target for a in spec.actuators}
    for j in JOINT_NAMES:
        if j not in have:
            act = spec.add_actuator(name=j, target=j, trntype=mujoco.mjtTrn.mjTRN_JOINT)
            act.set_to_position(kp=17.8)
            act.forcerange = [-3.35, 3.35]
            act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE


def _add_table_and_cube(wb: mujoco.MjsBody) -> None:
    """The task around the arm: light, table, cube, target marker and the front camera."""
    wb.add_light(name="top", pos=[0.2, 0, 1.2], dir=[0, 0, -1], diffuse=[0.6, 0.6, 0.6], castshadow=False)
    wb.add_geom(
        name="table",
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[1.0, 1.0, 0.01],
        pos=[0.2, 0, -0.01],
        rgba=[0.55, 0.55, 0.58, 1],
        friction=[1.0, 0.01, 0.001],
        condim=3,
    )
    cube = wb.add_body(name="cube", pos=[0.25, 0, CUBE_HALF])
    cube.add_freejoint(name="cube")
    cube.add_geom(
        name="cube",
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[CUBE_HALF] * 3,
        mass=CUBE_MASS,
        rgba=[0.85, 0.15, 0.15, 1],
        friction=[1.5, 0.02, 0.001],
        condim=4,
        contype=1,
        conaffinity=3,  # bit 2: official jaw pads
    )
    wb.add_site(
        name="target",
        type=mujoco.mjtGeom.mjGEOM_SPHERE,
        size=[0.012] * 3,
        rgba=[0.1, 0.8, 0.2, 0.6],
        pos=[0.25, 0, 0.15],
        group=0,
    )
    wb.add_camera(
        name="front", pos=[0.62, -0.30, 0.40], quat=_look_at([0.62, -0.30, 0.40], [0.2, 0.0, 0.06]), fovy=45
    )


def _add_wrist_camera(spec: mujoco.MjSpec, path: Path) -> None:
    """Wrist camera beside the jaws, looking down the fingers at what is between them."""
    gripper = spec.body("gripper")
    if gripper is None:
        raise ValueError(f"robot.mjcf '{path}': no body 'gripper' (the wrist_roll link) for the wrist camera")
    pos = [-0.02, 0.04, -0.02]
    gripper.add_camera(
        name="gripper_cam", pos=pos, quat=_look_at(pos, [0.005, 0.0, -0.11], up=(1.0, 0.0, 0.0)), fovy=70
    )
