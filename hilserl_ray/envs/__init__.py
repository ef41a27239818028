"""Sim and real SO-101 envs and the one wrapper pipeline that both run behind.

`make_registered` is the entry point of the gymnasium ids that `import hilserl_ray` registers
(state-only; pass `cameras=["front"]` etc. for image variants, or use the *Image ids).
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; set before any GL context exists
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


def make_registered(
    task: str,
    cameras: list[str] | tuple[str, ...] = (),
    camera_size: tuple[int, int] = (128, 128),
    seed: int | None = None,
    overrides: dict | None = None,
    render_mode: str | None = None,
):
    """Entry point of the registered ids: a default TrainConfig for `task`, plus `overrides`."""
    from hilserl_ray.checks.config import require_valid
    from hilserl_ray.config import TrainConfig
    from hilserl_ray.envs.make import make_env

    data = {
        "env": {
            "task": task,
            "cameras": [{"name": c, "height": camera_size[0], "width": camera_size[1]} for c in cameras],
        },
        "buffer": {"online_ratio": 1.0},
    }
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values) if isinstance(values, dict) else data.update(
            {section: values}
        )
    return make_env(require_valid(TrainConfig.model_validate(data), "overrides"), seed=seed)
