"""A gym env's feature spec, computed from its spaces, and every way those spaces miss the config.

The env is made once per (id, kwargs, wrappers) in a process to read its spaces (`probe`), so the spec is
known before any actor starts (`train` computes it first); `gym_problems` names each mismatch
(an unmapped observation key, a non-Box action, ...) as a `Problem` the config checks report.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
from functools import lru_cache

import gymnasium as gym
import numpy as np

from hilserl_ray.config import GymEnvConfig, TrainConfig
from hilserl_ray.errors import ConfigError, Problem
from hilserl_ray.features import ACTION, ENV_STATE, IMAGE_PREFIX, STATE, Feature, FeatureSpec
from hilserl_ray.gymenv.expert import load_named

VECTOR_FEATURES = (STATE, ENV_STATE)
_WILDCARD = "*"


def is_gym(cfg: TrainConfig) -> bool:
    return cfg.env.type == "gym"


class WrapperFailed(Exception):
    """An `env.gym.wrappers` entry that resolved but did not take the env: the entry is the user's to fix."""

    def __init__(self, name: str, cause: Exception):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.name = name


def load_wrapper(name: str) -> type[gym.Wrapper]:
    """The gymnasium Wrapper class `module:Class` names; ValueError saying why when it is not one."""
    obj = load_named(name)
    if not (inspect.isclass(obj) and issubclass(obj, gym.Wrapper)):
        what = f"class {obj.__name__}" if inspect.isclass(obj) else f"a {type(obj).__name__}"
        raise ValueError(f"{what}, not a gymnasium.Wrapper subclass")
    return obj


def make_inner(g: GymEnvConfig, max_episode_steps: int | None = None) -> gym.Env:
    """`gymnasium.make(id, **kwargs)` inside `env.gym.wrappers`, importing the id's namespace
    module first if it is not registered."""
    if g.id not in gym.registry and "/" in g.id:
        with contextlib.suppress(ImportError):  # gymnasium names the unknown id below
            importlib.import_module(g.id.split("/")[0])
    extra = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    env = gym.make(g.id, disable_env_checker=True, **extra, **g.kwargs)
    for name in g.wrappers:
        try:
            env = load_wrapper(name)(env)
        except Exception as e:  # e.g. a wrapper for another env's observation keys
            env.close()
            raise WrapperFailed(name, e) from e
    return env


@lru_cache(maxsize=16)
def _probe(env_id: str, kwargs_json: str, wrappers: tuple[str, ...]) -> tuple[gym.Space, gym.Space]:
    env = make_inner(GymEnvConfig(id=env_id, kwargs=json.loads(kwargs_json), wrappers=list(wrappers)))
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def probe(g: GymEnvConfig) -> tuple[gym.Space, gym.Space]:
    """(observation space, action space) of the env, made once per id, kwargs and wrappers in this process."""
    return _probe(g.id, json.dumps(g.kwargs, sort_keys=True, default=str), tuple(g.wrappers))


def flat_keys(space: gym.Space, prefix: str = "") -> dict[str, gym.Space]:
    """A (nested) Dict space's leaves by dotted key: {'agent_pos': Box, 'pixels.front': Box}."""
    if not isinstance(space, gym.spaces.Dict):
        return {prefix: space}
    out: dict[str, gym.Space] = {}
    for k, sub in space.spaces.items():
        out.update(flat_keys(sub, f"{prefix}{k}" if not prefix else f"{prefix}.{k}"))
    return out


def feature_name(key: str, mapping: dict[str, str]) -> str | None:
    """The feature an env key maps to: an exact entry, else a 'prefix.*' entry ('*' -> the rest)."""
    if key in mapping:
        return mapping[key]
    for src, dst in mapping.items():
        if src.endswith(_WILDCARD) and key.startswith(src[:-1]) and len(key) > len(src) - 1:
            return dst.replace(_WILDCARD, key[len(src) - 1 :])
    return None


def observation_map(g: GymEnvConfig, space: gym.spaces.Dict) -> dict[str, str]:
    """env key -> feature name for every key of the env that the config maps."""
    out = {}
    for key in flat_keys(space):
        name = feature_name(key, g.observation)
        if name is not None:
            out[key] = name
    return out


def gripper_dims(g: GymEnvConfig) -> int:
    return 0 if g.gripper == "none" else 1


def _observation_problems(g: GymEnvConfig, space: gym.Space) -> list[Problem]:
    if not isinstance(space, gym.spaces.Dict):
        return [
            Problem(
                "env.gym.id",
                g.id,
                f"an env with dict observations; its observation space is {space} (wrap it: env.gym.wrappers)",
            )
        ]
    problems = []
    mapped = observation_map(g, space)
    for key, sub in flat_keys(space).items():
        name = mapped.get(key)
        if name is None:
            problems.append(
                Problem(
                    "env.gym.observation",
                    key,
                    f"map the env's key {key!r} to a feature ({STATE}, {ENV_STATE} or {IMAGE_PREFIX}<cam>)",
                )
            )
        elif not (name in VECTOR_FEATURES or name.startswith(IMAGE_PREFIX)):
            problems.append(
                Problem(f"env.gym.observation.{key}", name, f"{STATE}, {ENV_STATE} or {IMAGE_PREFIX}<cam>")
            )
        elif not isinstance(sub, gym.spaces.Box):
            problems.append(Problem(f"env.gym.observation.{key}", str(sub), "a Box space"))
        elif name in VECTOR_FEATURES and len(sub.shape) != 1:
            problems.append(
                Problem(f"env.gym.observation.{key}", list(sub.shape), f"a flat vector for {name}")
            )
        elif name.startswith(IMAGE_PREFIX) and (len(sub.shape) != 3 or sub.shape[2] != 3):
            problems.append(
                Problem(f"env.gym.observation.{key}", list(sub.shape), f"an (H, W, 3) image for {name}")
            )
    names = list(mapped.values())
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(Problem("env.gym.observation", name, "one env key per feature"))
    if STATE not in names:
        problems.append(Problem("env.gym.observation", g.observation, f"an entry that maps a key to {STATE}"))
    return problems


def _action_problems(g: GymEnvConfig, space: gym.Space) -> list[Problem]:
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        return [Problem("env.gym.id", g.id, f"an env with a flat Box action; its action space is {space}")]
    if not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
        return [
            Problem(
                "env.gym.id",
                g.id,
                f"finite action bounds (the policy's [-1, 1] is scaled onto them): {space}",
            )
        ]
    n = space.shape[0] - gripper_dims(g)
    if n < 0 or (n == 0 and g.gripper == "none"):
        return [Problem("env.gym.gripper", g.gripper, f"'none' for an action of {space.shape[0]} value(s)")]
    if g.action_names is not None and len(g.action_names) != n:
        return [Problem("env.gym.action_names", g.action_names, f"{n} names, one per continuous action dim")]
    return []


def _spec(g: GymEnvConfig, obs_space: gym.spaces.Dict, act_space: gym.spaces.Box) -> FeatureSpec:
    leaves = flat_keys(obs_space)
    obs = {}
    for key, name in observation_map(g, obs_space).items():
        shape = tuple(int(s) for s in leaves[key].shape)
        if name.startswith(IMAGE_PREFIX):
            obs[name] = Feature(name, shape, "uint8", "robot")
        else:
            obs[name] = Feature(name, shape, "float32", "robot", tuple(f"{key}.{i}" for i in range(shape[0])))
    obs = {k: obs[k] for k in sorted(obs, key=lambda k: (k != STATE, k.startswith(IMAGE_PREFIX), k))}
    n = int(act_space.shape[0])
    action = Feature(ACTION, (n,), "float32", "robot", tuple(f"native.{i}" for i in range(n)))
    return FeatureSpec(obs, action, continuous_action_dim=n, discrete_gripper=False)


def gym_problems(cfg: TrainConfig) -> list[Problem]:
    """Every way env.gym and the env's spaces disagree (the env is made once to read them)."""
    g = cfg.env.gym
    if g is None:
        return [Problem("env.gym", None, "env.type gym needs env.gym.id (a registered gymnasium id)")]
    try:
        obs_space, act_space = probe(g)
    except WrapperFailed as e:
        return [Problem("env.gym.wrappers", e.name, f"a gymnasium.Wrapper that takes this env alone ({e})")]
    except Exception as e:  # an unknown id, a missing package, a bad kwarg: the user's to fix
        return [
            Problem(
                "env.gym.id",
                g.id,
                f"a gymnasium id that makes an env with env.gym.kwargs ({type(e).__name__}: {e})",
            )
        ]
    problems = _observation_problems(g, obs_space) + _action_problems(g, act_space)
    if problems:
        return problems
    images = {
        k[len(IMAGE_PREFIX) :]: f for k, f in _spec(g, obs_space, act_space).observation.items() if f.is_image
    }
    for cam, (top, left, h, w) in cfg.pipeline.image.crop.items():
        if cam not in images:
            problems.append(
                Problem(f"pipeline.image.crop.{cam}", cam, f"one of the env's cameras {sorted(images)}")
            )
        elif top + h > images[cam].shape[0] or left + w > images[cam].shape[1]:
            problems.append(
                Problem(
                    f"pipeline.image.crop.{cam}",
                    [top, left, h, w],
                    f"a box inside the env's {images[cam].shape[0]}x{images[cam].shape[1]} image",
                )
            )
    return problems


def gym_robot_spec(cfg: TrainConfig) -> FeatureSpec:
    """What the gym env reports: its mapped observation features and its native action."""
    problems = gym_problems(cfg)
    if problems:
        raise ConfigError.of("env.gym", problems)
    obs_space, act_space = probe(cfg.env.gym)
    return _spec(cfg.env.gym, obs_space, act_space)
