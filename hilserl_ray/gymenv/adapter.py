"""`GymRobotEnv`: a registered gymnasium env as the pipeline's base env (the robot of env.type gym).

It emits the env's observation under the pipeline's feature names (`env.gym.observation`),
takes the env's native action, and reports the env's success (`info[env.gym.success_key]`) as
`info["is_success"]`. It is a base env, not a wrapper, so `env.unwrapped` in the pipeline is
this adapter (record's raw tap, the seeding in `make_env`); the env itself is `inner`, its last
native observation `native_obs` (what an expert reads), and `action_map` the policy's action
mapping (`gymenv.actions`). The first reset seeds the env from this adapter's `np_random`.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from hilserl_ray.config import TrainConfig
from hilserl_ray.envs.sim import space_from_features
from hilserl_ray.gymenv.actions import ActionMap
from hilserl_ray.gymenv.spaces import gym_robot_spec, make_inner, observation_map


def _leaf(obs: dict, key: str):
    for part in key.split("."):
        obs = obs[part]
    return obs


class GymRobotEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, cfg: TrainConfig):
        g = cfg.env.gym
        self.feature_spec = gym_robot_spec(cfg)
        self.success_key = g.success_key
        self.inner = make_inner(g, max_episode_steps=cfg.env.max_episode_steps)
        self.keys = observation_map(g, self.inner.observation_space)
        self.observation_space = space_from_features(self.feature_spec.observation)
        self.action_space = self.inner.action_space
        self.action_map = ActionMap(cfg, self.inner.action_space)
        self.render_mode = "rgb_array"
        self.native_obs: dict | None = None
        self._inner_seeded = False

    def _obs(self, native: dict) -> dict[str, np.ndarray]:
        self.native_obs = native
        out = {}
        for key, name in self.keys.items():
            f = self.feature_spec.observation[name]
            out[name] = np.asarray(_leaf(native, key), f.dtype)
        return out

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is None and not self._inner_seeded:
            seed = int(self.np_random.integers(2**31 - 1))
        self._inner_seeded = True
        native, info = self.inner.reset(seed=seed, options=options)
        self.action_map.reset()
        info = dict(info)
        info["is_success"] = bool(info.get(self.success_key, False))
        return self._obs(native), info

    def step(self, action):
        native, reward, terminated, truncated, info = self.inner.step(np.asarray(action, np.float32))
        info = dict(info)
        info["is_success"] = bool(info.get(self.success_key, False))
        return self._obs(native), float(reward), bool(terminated), bool(truncated), info

    def render(self):
        return self.inner.render()

    def close(self):
        self.inner.close()
