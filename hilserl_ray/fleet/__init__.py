"""A fleet: several arms (real or sim), one robot actor each, pinned to its node, feeding one learner."""

from hilserl_ray.fleet.arms import Arm, fleet, fleet_spec_problems, one_arm

__all__ = ["Arm", "fleet", "fleet_spec_problems", "one_arm"]
