"""Sim and real SO-101 envs and the one pipeline of steps that both run behind.

The env assembly (`make_env`, and `make_registered` for the gymnasium ids) is `hilserl_ray.rig`,
above this package and the `hardware` and `reward` parts it puts together.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; set before any GL context exists
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
