"""hilserl_ray: Ray-distributed HIL-SERL for the SO-101 arm, real and simulated.

`import hilserl_ray` registers the gymnasium ids (as `import gym_hil` does); the entry points
are strings, so nothing heavy (MuJoCo, torch) loads until `gym.make`:
  hilserl_ray/SO101Reach-v0, hilserl_ray/SO101PickCube-v0 (state only),
  hilserl_ray/SO101ReachImage-v0, hilserl_ray/SO101PickCubeImage-v0 (a 128x128 `front` camera)
"""

__version__ = "0.1.0"

ENV_IDS = {
    "hilserl_ray/SO101Reach-v0": {"task": "reach"},
    "hilserl_ray/SO101PickCube-v0": {"task": "pick_cube"},
    "hilserl_ray/SO101ReachImage-v0": {"task": "reach", "cameras": ["front"]},
    "hilserl_ray/SO101PickCubeImage-v0": {"task": "pick_cube", "cameras": ["front"]},
}


def _register() -> None:
    try:
        from gymnasium.envs.registration import register, registry
    except ImportError:  # gymnasium is a dependency; without it there is nothing to register with
        return
    for env_id, kwargs in ENV_IDS.items():
        if env_id not in registry:
            register(
                env_id,
                entry_point="hilserl_ray.rig:make_registered",
                kwargs=kwargs,
                disable_env_checker=True,
            )


_register()
