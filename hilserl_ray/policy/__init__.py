"""The HIL-SERL SAC agent: encoders, actor, critic ensemble, discrete gripper critic."""

from hilserl_ray.policy.actor import ActorPolicy
from hilserl_ray.policy.sac import SACAgent

__all__ = ["ActorPolicy", "SACAgent"]
