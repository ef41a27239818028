"""Adding a pipeline step is one entry in `envs.pipeline.STEPS`: the spec, the live env built by
`make_env` (MuJoCo sim) and the dataset conversion all see it, and its params key the cache."""

from __future__ import annotations

from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest

from hilserl_ray.configio import load_config
from hilserl_ray.data.convert import check_dataset, convert, offline_cache_key
from hilserl_ray.data.lerobot_reader import LeRobotReader
from hilserl_ray.data.synthetic import write_dataset
from hilserl_ray.envs import pipeline
from hilserl_ray.envs.pipeline import Step, pipeline_spec
from hilserl_ray.envs.sim import space_from_features
from hilserl_ray.features import STATE, Feature
from hilserl_ray.rig import make_env

LENGTHS = [3, 4]
LEVEL = 0.25  # the toy step's state feature, constant


def toy_spec(spec, cfg):
    state = spec.observation[STATE]
    obs = dict(spec.observation)
    obs[STATE] = Feature(STATE, (state.shape[0] + 1,), "float32", "toy", (*state.names, "toy.level"))
    return replace(spec, observation=obs)


class ToyWrapper(gym.ObservationWrapper):
    def __init__(self, env, cfg):
        super().__init__(env)
        self.feature_spec = toy_spec(env.feature_spec, cfg)
        self.observation_space = space_from_features(self.feature_spec.observation)

    def observation(self, obs):
        return {**obs, STATE: np.append(obs[STATE], np.float32(LEVEL)).astype(np.float32)}


def toy_offline(rec, cfg):
    state = rec.obs[STATE]
    rec.obs[STATE] = np.c_[state, np.full(len(state), LEVEL, np.float32)]
    return rec


def with_toy(level=LEVEL):
    """STEPS with the toy step right after proprioception: the one edit a new step needs."""
    toy = Step(
        "toy",
        online=lambda env, cfg, parts: ToyWrapper(env, cfg),
        spec=toy_spec,
        offline=toy_offline,
        params=lambda cfg: {"toy": level},
    )
    at = [s.name for s in pipeline.STEPS].index("proprioception") + 1
    return [*pipeline.STEPS[:at], toy, *pipeline.STEPS[at:]]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(
        tmp_path_factory.mktemp("ds") / "d", LENGTHS, cameras={"front": (48, 64)}, codec="h264"
    )


@pytest.fixture
def cfg(dataset, tmp_path):
    return load_config(
        None,
        {
            "env.cameras": [{"name": "front", "width": 64, "height": 48}],
            "pipeline.image.size": [32, 32],
            "dataset.path": str(dataset),
            "output_dir": str(tmp_path / "out"),
        },
    )


def test_the_list_is_the_pipeline_order():
    assert [s.name for s in pipeline.STEPS] == [
        "image_crop",
        "image_resize",
        "proprioception",
        "action",
        "intervention",
        "reward_classifier",
        "gripper_penalty",
        "time_limit",
    ]


def test_a_step_added_once_is_in_the_spec_and_the_cache_key(cfg, monkeypatch):
    before = pipeline_spec(cfg)
    reader = LeRobotReader(cfg.dataset.path)
    key_before = offline_cache_key(cfg, before, reader, check_dataset(reader, cfg))
    monkeypatch.setattr(pipeline, "STEPS", with_toy())
    spec = pipeline_spec(cfg)
    assert spec.observation[STATE].names == (*before.observation[STATE].names, "toy.level")
    assert spec.params == {**before.params, "toy": LEVEL}
    key = offline_cache_key(cfg, spec, reader, check_dataset(reader, cfg))
    assert key != key_before
    monkeypatch.setattr(pipeline, "STEPS", with_toy(level=2 * LEVEL))  # a step's param changes: a new key
    assert offline_cache_key(cfg, pipeline_spec(cfg), reader, check_dataset(reader, cfg)) not in (
        key,
        key_before,
    )


def test_a_step_added_once_is_in_the_live_env(cfg, monkeypatch):
    monkeypatch.setattr(pipeline, "STEPS", with_toy())
    env = make_env(cfg, seed=0)  # checks the wrapped env's spaces against pipeline_spec
    try:
        assert env.feature_spec.to_dict() == pipeline_spec(cfg).to_dict()
        obs, _ = env.reset(seed=0)
        assert obs[STATE].shape == (19,) and obs[STATE][-1] == np.float32(LEVEL)
        obs, *_ = env.step(np.array([0.0, 0.0, 0.0, 1.0], np.float32))
        pipeline_spec(cfg).check_observation(obs)
        assert obs[STATE][-1] == np.float32(LEVEL)
    finally:
        env.close()


def test_a_step_added_once_is_in_the_conversion(cfg, monkeypatch):
    plain, _ = convert(cfg, progress=False)
    monkeypatch.setattr(pipeline, "STEPS", with_toy())
    chunk, _ = convert(cfg, progress=False)
    assert chunk[STATE].shape == (sum(LENGTHS) + len(LENGTHS), 19)
    np.testing.assert_array_equal(chunk[STATE][:, :-1], plain[STATE])
    assert (chunk[STATE][:, -1] == np.float32(LEVEL)).all()
    for name in plain:
        if name != STATE:
            np.testing.assert_array_equal(chunk[name], plain[name])
