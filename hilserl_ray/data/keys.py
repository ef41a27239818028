"""Which dataset key holds a pipeline input: the piece `mapping` and `formats` both read.

`dataset.rename` maps dataset keys onto the pipeline's names; the first `so101.NUM_JOINTS` values of
the state (and of joint actions) are the arm's joints, in degrees / gripper 0..100.
"""

from __future__ import annotations

from hilserl_ray.config import TrainConfig


def dataset_key(name: str, cfg: TrainConfig) -> str:
    """The dataset key that provides pipeline input `name` (honouring dataset.rename)."""
    for src, dst in cfg.dataset.rename.items():
        if dst == name:
            return src
    return name
