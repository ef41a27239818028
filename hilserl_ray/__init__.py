"""hilserl_ray: Ray-distributed HIL-SERL for the SO-101 arm, real and simulated."""

__version__ = "0.1.0"
