"""A fleet: several arms (real or sim), one robot actor each, pinned to its node, feeding one learner."""

from hilserl_ray.fleet.arms import Arm, fleet, one_arm
from hilserl_ray.fleet.expand import arm_config, arm_path, arm_placement

__all__ = ["Arm", "arm_config", "arm_path", "arm_placement", "fleet", "one_arm"]
