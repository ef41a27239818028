"""Checkpoints, weight broadcast, normalization, DrQ shift and the frozen pretrained backbone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from policy_helpers import make_spec, numpy_obs, random_batch, small_cfg
from safetensors.torch import save_file

from hilserl_ray.config import PolicyConfig
from hilserl_ray.features import ENV_STATE, STATE, Feature
from hilserl_ray.policy import ActorPolicy, SACAgent
from hilserl_ray.policy.augment import random_shift
from hilserl_ray.policy.normalize import data_stats, resolve_stats
from hilserl_ray.so101 import JOINT_NAMES

CAM = "observation.images.front"


pytestmark = pytest.mark.usefixtures("seeded_single_thread_torch")


def _spec():
    return make_spec(state_dim=6, cont=3, gripper=True, cameras={"front": (32, 32)})


def test_save_load_gives_identical_actions_and_identical_further_training(tmp_path):
    spec = _spec()
    stats = {STATE: {"min": [-2.0] * 6, "max": [2.0] * 6}}
    agent = SACAgent(spec, small_cfg(utd_ratio=2), stats)
    for i in range(2):
        agent.update([random_batch(spec, 16, 2 * i), random_batch(spec, 16, 2 * i + 1)])
    agent.save(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "agent.json",
        "model.safetensors",
        "train.safetensors",
    ]
    assert json.loads((tmp_path / "ckpt" / "agent.json").read_text())["num_updates"] == 2
    restored = SACAgent.load(tmp_path / "ckpt")
    assert restored.num_updates == 2 and restored.stats == agent.stats
    for seed in range(3):
        obs = numpy_obs(spec, seed)
        np.testing.assert_array_equal(agent.select_action(obs, True), restored.select_action(obs, True))
        torch.manual_seed(seed)
        a = agent.select_action(obs)
        torch.manual_seed(seed)
        np.testing.assert_array_equal(a, restored.select_action(obs))
    # training continues identically: same RNG stream, same optimizer moments, same targets
    batches = [random_batch(spec, 16, 10), random_batch(spec, 16, 11)]
    m1, m2 = agent.update(batches), restored.update(batches)
    for k in m1:
        assert torch.equal(m1[k], m2[k]), k
    for (k, v1), v2 in zip(agent.nets.state_dict().items(), restored.nets.state_dict().values(), strict=True):
        assert torch.equal(v1, v2), k


def test_a_resume_trains_on_with_the_configs_rates_and_the_checkpoints_weights(tmp_path):
    """Changing a learning rate or the discount for a resumed run takes effect (it was ignored:
    the agent came back with every setting of the checkpoint)."""
    spec = _spec()
    agent = SACAgent(spec, small_cfg(utd_ratio=2))
    agent.update([random_batch(spec, 16, 0), random_batch(spec, 16, 1)])
    agent.save(tmp_path / "ckpt")
    new = small_cfg(utd_ratio=2).model_copy(update={"actor_lr": 1e-5, "critic_lr": 2e-5, "discount": 0.9})
    restored = SACAgent.load(tmp_path / "ckpt", policy=new)
    assert restored.cfg.discount == 0.9 and restored.num_updates == 1
    assert [g["lr"] for g in restored.optimizers["actor"].param_groups] == [1e-5]
    assert [g["lr"] for g in restored.optimizers["critic"].param_groups] == [2e-5]
    assert restored.optimizers["critic"].state  # the Adam moments came back too
    for (k, v1), v2 in zip(agent.nets.state_dict().items(), restored.nets.state_dict().values(), strict=True):
        assert torch.equal(v1, v2), k
    assert SACAgent.load(tmp_path / "ckpt").cfg.discount == agent.cfg.discount  # default: as saved


def test_load_reports_a_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="agent.json"):
        SACAgent.load(tmp_path)


@pytest.mark.filterwarnings("error")  # e.g. torch's warning on read-only arrays
def test_actor_state_broadcast_reproduces_the_learners_actions():
    spec = _spec()
    learner = SACAgent(spec, small_cfg(utd_ratio=1), {STATE: {"mean": [1.0] * 6, "std": [3.0] * 6}})
    learner.update([random_batch(spec, 16, 0)])
    state = learner.actor_state()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    for v in state.values():  # as they arrive from Ray's object store
        v.flags.writeable = False
    assert not any("critic" in k for k in state)  # robots get no critics
    robot = ActorPolicy.from_state_numpy(spec, small_cfg(), state)
    other = SACAgent(spec, small_cfg(utd_ratio=1))
    other.load_actor_state(state)
    for seed in range(3):
        obs = numpy_obs(spec, seed)
        for v in obs.values():
            v.flags.writeable = False
        want = learner.select_action(obs, True)
        np.testing.assert_array_equal(robot.select_action(obs, True), want)
        np.testing.assert_array_equal(other.select_action(obs, True), want)
    bad = dict(state)
    bad.pop(next(iter(bad)))
    with pytest.raises(ValueError, match="same feature spec"):
        robot.load_state_numpy(bad)


def test_select_action_checks_the_observation():
    spec = _spec()
    agent = SACAgent(spec, small_cfg())
    obs = numpy_obs(spec)
    obs[CAM] = obs[CAM][:16]
    with pytest.raises(ValueError, match=r"observation.images.front.*\(32, 32, 3\)"):
        agent.select_action(obs)


def test_normalization_stats_are_validated_and_applied():
    spec = make_spec(state_dim=2, cameras={"front": (8, 8)})
    stats = resolve_stats(spec, {STATE: {"min": [0, -10], "max": [100, 10], "mean": [5, 5], "std": [1, 1]}})
    assert stats[STATE] == {"min": [0.0, -10.0], "max": [100.0, 10.0]}  # vectors prefer min/max
    assert stats[CAM] == {"mean": [0.0] * 3, "std": [1.0] * 3}  # default: /255
    agent = SACAgent(
        spec, small_cfg(), {STATE: stats[STATE], CAM: {"mean": np.full((3, 1, 1), 0.5), "std": [0.25] * 3}}
    )
    norm = agent.policy.encoder.normalizer
    torch.testing.assert_close(
        norm.vector(STATE, torch.tensor([[100.0, -10.0]])), torch.tensor([[1.0, -1.0]])
    )
    img = torch.full((1, 8, 8, 3), 255, dtype=torch.uint8)
    torch.testing.assert_close(norm.image(CAM, img), torch.full((1, 3, 8, 8), 2.0))  # (1 - 0.5) / 0.25
    with pytest.raises(ValueError, match=r"'observation.state'.*'mean' has shape \(3,\), expected 2"):
        resolve_stats(spec, {STATE: {"mean": [0, 0, 0], "std": [1, 1, 1]}})
    with pytest.raises(ValueError, match="expected 'mean' and 'std' or 'min' and 'max'"):
        resolve_stats(spec, {STATE: {"q01": [0, 0]}})


def test_default_state_stats_follow_the_pipeline_units():
    names = tuple(f"{j}.pos" for j in JOINT_NAMES) + ("ee.x", "ee.yaw")
    spec = make_spec()
    spec = spec.__class__({STATE: Feature(STATE, (8,), "float32", "t", names)}, spec.action, 1, False)
    s = resolve_stats(spec, None)[STATE]
    # SO-101 joint ranges in degrees, gripper 0..100, metres for the end effector
    assert s["min"][0] == -110.0 and s["max"][5] == 100.0 and s["min"][5] == 0.0 and s["max"][6] == 0.5
    assert s["max"][7] == pytest.approx(np.pi)


def test_data_stats_range_only_the_features_the_spec_has_no_units_for():
    joints = tuple(f"{j}.pos" for j in JOINT_NAMES)
    spec = make_spec()
    spec = spec.__class__(
        {
            STATE: Feature(STATE, (6,), "float32", "t", joints),
            ENV_STATE: Feature(ENV_STATE, (3,), "float32", "t", ("env.0", "env.1", "env.2")),
        },
        spec.action,
        1,
        False,
    )
    rows = {STATE: np.zeros((4, 6)), ENV_STATE: np.array([[0.1, -2, 0.02], [0.3, 2, 0.02]] * 2)}
    stats = data_stats(spec, [rows])
    assert set(stats) == {ENV_STATE}  # the joints keep their units
    assert stats[ENV_STATE] == {"min": [0.1, -2.0, -0.98], "max": [0.3, 2.0, 1.02]}  # a constant: raw units
    assert data_stats(spec, []) == {}
    assert resolve_stats(spec, stats)[STATE] == resolve_stats(spec, None)[STATE]


def test_random_shift_is_a_replicate_padded_crop():
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (16, 12, 10, 3), dtype=torch.uint8, generator=g)
    out = random_shift(img, 2, torch.Generator().manual_seed(1))
    padded = F.pad(img.permute(0, 3, 1, 2).float(), (2, 2, 2, 2), mode="replicate").permute(0, 2, 3, 1)
    offsets = set()
    for b in range(16):
        matches = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(padded[b, dy : dy + 12, dx : dx + 10].to(torch.uint8), out[b])
        ]
        assert matches, f"sample {b} is not a crop of its padded image"
        offsets.add(matches[0])
    assert len(offsets) > 4  # offsets differ per sample
    assert torch.equal(random_shift(img, 0), img)


def _resnet10_weights(path):
    """A torchvision-layout ResNet-10 (one BasicBlock per stage) with random weights."""
    w, g = {}, torch.Generator().manual_seed(0)

    def conv(name, cout, cin, k):
        w[name] = torch.randn(cout, cin, k, k, generator=g) * 0.05

    def bn(name, c):
        w[f"{name}.weight"], w[f"{name}.bias"] = torch.ones(c), torch.zeros(c)
        w[f"{name}.running_mean"], w[f"{name}.running_var"] = torch.zeros(c), torch.ones(c)

    conv("conv1.weight", 16, 3, 7)
    bn("bn1", 16)
    cin = 16
    for i, c in enumerate([16, 32, 64, 64], start=1):
        conv(f"layer{i}.0.conv1.weight", c, cin, 3)
        bn(f"layer{i}.0.bn1", c)
        conv(f"layer{i}.0.conv2.weight", c, c, 3)
        bn(f"layer{i}.0.bn2", c)
        if i > 1:
            conv(f"layer{i}.0.downsample.0.weight", c, cin, 1)
            bn(f"layer{i}.0.downsample.1", c)
        cin = c
    save_file(w, str(path))
    return w


def test_pretrained_backbone_is_local_frozen_and_travels_with_the_weights(tmp_path):
    spec = make_spec(state_dim=3, cont=1, gripper=True, cameras={"front": (64, 64), "wrist": (64, 64)})
    weights = _resnet10_weights(tmp_path / "resnet10.safetensors")
    cfg = small_cfg(encoder="pretrained", encoder_weights=tmp_path / "resnet10.safetensors", utd_ratio=1)
    agent = SACAgent(spec, cfg)
    backbone = agent.policy.encoder.pretrained
    torch.testing.assert_close(backbone.conv1.weight, weights["conv1.weight"])
    assert agent.stats[CAM]["mean"] == pytest.approx([0.485, 0.456, 0.406])  # ImageNet defaults
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    agent.update([random_batch(spec, 8, 0)])
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())  # frozen, BN stats too
    assert not backbone.training
    # checkpoints and the broadcast carry the backbone: the weights file is not needed to restore
    agent.save(tmp_path / "ckpt")
    (tmp_path / "resnet10.safetensors").unlink()
    restored = SACAgent.load(tmp_path / "ckpt")
    robot = ActorPolicy.from_state_numpy(spec, cfg, agent.actor_state())
    obs = numpy_obs(spec)
    want = agent.select_action(obs, True)
    np.testing.assert_array_equal(restored.select_action(obs, True), want)
    np.testing.assert_array_equal(robot.select_action(obs, True), want)
    with pytest.raises(FileNotFoundError, match="policy.encoder_weights.*nothing is downloaded"):
        SACAgent(spec, cfg)
    with pytest.raises(ValueError, match=r"\.safetensors file \(no pickle\)"):
        (tmp_path / "w.pt").write_bytes(b"x")
        SACAgent(spec, PolicyConfig(encoder="pretrained", encoder_weights=tmp_path / "w.pt"))
