"""SACAgent behaviour: shapes, TD targets, temperature, gripper critic, encoder isolation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from policy_helpers import make_spec, numpy_obs, random_batch, small_cfg

from hilserl_ray.config import CameraConfig, EnvConfig, PolicyConfig, TrainConfig
from hilserl_ray.envs.pipeline import pipeline_spec
from hilserl_ray.features import STATE
from hilserl_ray.policy import SACAgent

pytestmark = pytest.mark.usefixtures("seeded_single_thread_torch")


def test_agent_from_pipeline_spec_shapes_and_ranges():
    cfg = TrainConfig(env=EnvConfig(cameras=[CameraConfig(name="front")]), buffer={"online_ratio": 1.0})
    spec = pipeline_spec(cfg)
    agent = SACAgent(spec, small_cfg(utd_ratio=2))
    assert agent.policy.encoder.out_dim == 2 * 32  # one camera + the state
    for seed in range(3):
        for det in (False, True):
            a = agent.select_action(numpy_obs(spec, seed), deterministic=det)
            assert a.shape == spec.action.shape and a.dtype == np.float32
            assert np.all(np.abs(a[:3]) <= 1.0) and a[3] in (0.0, 1.0, 2.0)
    metrics = agent.update([random_batch(spec, 8, 0), random_batch(spec, 8, 1)])
    for key in ("critic_loss", "actor_loss", "gripper_loss", "temperature", "entropy"):
        assert metrics[key].shape == () and not metrics[key].requires_grad
        assert torch.isfinite(metrics[key])
    assert agent.num_updates == 1


def test_update_rejects_bad_input_with_the_field_named():
    spec = make_spec(gripper=True, cameras={"front": (16, 16)})
    agent = SACAgent(spec, small_cfg(utd_ratio=2))
    with pytest.raises(ValueError, match="utd_ratio is 2"):
        agent.update([random_batch(spec)])
    bad = random_batch(spec)
    bad["observation"]["observation.images.front"] = bad["observation"]["observation.images.front"].float()
    with pytest.raises(ValueError, match=r"observation.images.front.*uint8"):
        agent.update([bad, random_batch(spec)])
    bad = random_batch(spec)
    del bad["next_observation"][STATE]
    with pytest.raises(KeyError, match="next_observation.*observation.state"):
        agent.update([random_batch(spec), bad])
    bad = random_batch(spec)
    bad["action"] = bad["action"][:, :1]
    with pytest.raises(ValueError, match=r"'action' has shape \(16, 1\), expected \(16, 2\)"):
        agent.update([bad, random_batch(spec)])
    with pytest.raises(ValueError, match="action shape"):
        SACAgent(dataclasses.replace(spec, continuous_action_dim=2), small_cfg())


def _three_row_batch(spec):
    """Row 0 terminal (success), row 1 time-limit truncation, row 2 an ordinary step."""
    b = random_batch(spec, 3, seed=5)
    b["reward"] = torch.tensor([1.0, 0.25, -0.5])
    b["terminated"] = torch.tensor([1.0, 0.0, 0.0])
    b["discrete_penalty"] = torch.tensor([-0.02, 0.0, -0.02])
    return b


def test_td_targets_terminal_truncated_and_ordinary_steps():
    spec = make_spec(state_dim=3, cont=1, gripper=True)
    agent = SACAgent(spec, small_cfg(discount=0.9, temperature_init=1e-30))
    with torch.no_grad():  # make Q' independent of the sampled next action
        agent.nets.critic_target.linears[0].weight[:, -1:, :] = 0.0
    batch = _three_row_batch(spec)
    y, _ = agent.td_targets(batch)

    def q_next(next_obs):
        with torch.no_grad():
            f = agent.policy.encoder(next_obs)
            return agent.nets.critic_target(f, torch.zeros(f.shape[0], 1)).min(dim=0).values

    q = q_next(batch["next_observation"])
    assert q.abs().min() > 1e-3  # the bootstrap term is not trivially zero
    assert y[0].item() == pytest.approx(1.0, abs=1e-6)  # terminal: reward only
    assert y[1].item() == pytest.approx(0.25 + 0.9 * q[1].item(), abs=1e-5)  # truncated: bootstraps
    assert y[2].item() == pytest.approx(-0.5 + 0.9 * q[2].item(), abs=1e-5)
    # the truncated step bootstraps from *its* next observation; the terminal one from none
    other = {k: v.clone() for k, v in batch["next_observation"].items()}
    other[STATE] = other[STATE] + 3.0
    y2, _ = agent.td_targets({**batch, "next_observation": other})
    assert y2[0].item() == pytest.approx(1.0, abs=1e-6)
    assert abs(y2[1].item() - y[1].item()) > 1e-4
    assert y2[1].item() == pytest.approx(0.25 + 0.9 * q_next(other)[1].item(), abs=1e-5)


def test_gripper_target_is_double_dqn_with_the_penalty_in_its_reward_only():
    spec = make_spec(state_dim=3, cont=1, gripper=True)
    agent = SACAgent(spec, small_cfg(discount=0.9, temperature_init=1e-30))
    with torch.no_grad():
        online, target = agent.policy.gripper.net[-1], agent.nets.gripper_target.net[-1]
        online.weight.zero_(), target.weight.zero_()
        online.bias.copy_(torch.tensor([0.0, 5.0, 1.0]))  # online picks "stay"
        target.bias.copy_(torch.tensor([10.0, 20.0, 30.0]))  # target rates it 20, not its max 30
        agent.nets.critic_target.linears[0].weight[:, -1:, :] = 0.0
    batch = _three_row_batch(spec)
    y, y_grip = agent.td_targets(batch)
    expected = torch.tensor([1.0 - 0.02, 0.25 + 0.9 * 20, -0.5 - 0.02 + 0.9 * 20])
    torch.testing.assert_close(y_grip, expected)
    assert y[0].item() == pytest.approx(1.0, abs=1e-6)  # no penalty in the continuous critic's target


@pytest.mark.parametrize("target, direction", [(-10.0, -1), (10.0, +1)])
def test_temperature_moves_toward_the_target_entropy(target, direction):
    spec = make_spec(state_dim=4, cont=2)
    agent = SACAgent(spec, small_cfg(utd_ratio=1, target_entropy=target, temperature_lr=1e-2))
    before = agent.temperature.item()
    for i in range(30):
        m = agent.update([random_batch(spec, 32, seed=i)])
    after = agent.temperature.item()
    # entropy above target -> alpha shrinks; below target -> alpha grows
    assert (m["entropy"].item() - target) * direction < 0
    assert (after - before) * direction > 0 and abs(np.log(after / before)) > 0.1


@pytest.mark.heavy
def test_gripper_critic_learns_a_bandit_including_the_grasp_penalty():
    """close pays 1.0 but flips the gripper (penalty -0.5), open pays 0.7, stay 0: open is best."""
    spec = make_spec(state_dim=3, cont=1, gripper=True)
    agent = SACAgent(spec, small_cfg(utd_ratio=1, critic_lr=3e-3))
    payoff, penalty = torch.tensor([1.0, 0.0, 0.7]), torch.tensor([-0.5, 0.0, 0.0])
    for i in range(250):
        b = random_batch(spec, 64, seed=i)
        g = b["action"][:, 1].long()
        b["reward"], b["discrete_penalty"], b["terminated"] = payoff[g], penalty[g], torch.ones(64)
        agent.update([b])
    with torch.no_grad():
        q = agent.policy.gripper(agent.policy.encoder(random_batch(spec, 64, seed=999)["observation"]))
    torch.testing.assert_close(q.mean(0), torch.tensor([0.5, 0.0, 0.7]), atol=0.08, rtol=0)
    for seed in range(5):
        assert agent.select_action(numpy_obs(spec, seed), deterministic=True)[-1] == 2.0


def test_actor_loss_leaves_the_encoder_untouched():
    spec = make_spec(state_dim=5, cont=2, gripper=True, cameras={"front": (32, 32)})
    agent = SACAgent(spec, small_cfg(utd_ratio=1))
    enc = agent.policy.encoder
    critic_step = agent.optimizers["critic"].step
    seen = {}

    def step_and_record():
        critic_step()
        seen["params"] = [p.detach().clone() for p in enc.parameters()]
        seen["grads"] = [None if p.grad is None else p.grad.clone() for p in enc.parameters()]
        seen["actor"] = [p.detach().clone() for p in agent.policy.actor.parameters()]

    agent.optimizers["critic"].step = step_and_record
    agent.update([random_batch(spec, 16, seed=1)])
    # after the critic step, the actor+temperature step ran: encoder weights and grads unchanged
    for p, before in zip(enc.parameters(), seen["params"], strict=True):
        assert torch.equal(p.detach(), before)
    for p, g in zip(enc.parameters(), seen["grads"], strict=True):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    assert any(g is not None and g.abs().sum() > 0 for g in seen["grads"])  # the critics do train it
    assert any(
        not torch.equal(p, b) for p, b in zip(agent.policy.actor.parameters(), seen["actor"], strict=True)
    )


def test_redq_target_is_min_over_a_random_subset():
    spec = make_spec(state_dim=3, cont=1)
    agent = SACAgent(spec, small_cfg(num_critics=6, num_subsample_critics=2, temperature_init=1e-30))
    with torch.no_grad():
        agent.nets.critic_target.linears[0].weight[:, -1:, :] = 0.0
    batch = random_batch(spec, 8, seed=3)
    batch["terminated"] = torch.zeros(8)
    with torch.no_grad():
        f = agent.policy.encoder(batch["next_observation"])
        q_all = agent.nets.critic_target(f, torch.zeros(8, 1))
    seen = set()
    for _ in range(20):
        y, _ = agent.td_targets(batch)
        v = (y - batch["reward"]) / agent.cfg.discount
        pairs = {
            (i, j)
            for i in range(6)
            for j in range(i + 1, 6)
            if torch.allclose(v, torch.minimum(q_all[i], q_all[j]), atol=1e-5)
        }
        assert pairs, "the target is the min over some pair of critics"
        seen |= pairs
    assert len(seen) > 3  # a different pair from call to call


def test_uses_the_config_device_and_rejects_missing_cuda():
    spec = make_spec()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            SACAgent(spec, PolicyConfig(device="cuda"))
    assert SACAgent(spec, PolicyConfig(device="auto")).device.type == (
        "cuda" if torch.cuda.is_available() else "cpu"
    )


def test_spatial_softmax_head_and_two_cameras():
    spec = make_spec(state_dim=4, cont=3, gripper=True, cameras={"front": (32, 32), "wrist": (32, 48)})
    agent = SACAgent(spec, small_cfg(utd_ratio=1, image_head="spatial_softmax"))
    assert agent.policy.encoder.out_dim == 3 * 32
    before = [p.detach().clone() for p in agent.policy.encoder.images[1].parameters()]
    agent.update([random_batch(spec, 8, 0)])
    after = list(agent.policy.encoder.images[1].parameters())
    assert all(
        not torch.equal(a, b) for a, b in zip(after, before, strict=True)
    )  # each camera's encoder trains
    assert agent.select_action(numpy_obs(spec), deterministic=True).shape == (4,)


def test_critic_learns_a_reward_that_only_the_camera_shows():
    """End to end through the conv encoder (normalization folded into the stem, DrQ shift)."""
    spec = make_spec(state_dim=2, cont=1, cameras={"front": (32, 32)})
    agent = SACAgent(spec, small_cfg(utd_ratio=1, critic_lr=1e-3))
    cam = "observation.images.front"

    def batch(seed):
        b = random_batch(spec, 32, seed)
        bright = torch.arange(32) % 2 == 0
        img = torch.where(bright[:, None, None, None], 200, 40).to(torch.uint8).expand(32, 32, 32, 3)
        b["observation"][cam] = (img + torch.randint(0, 30, img.shape, dtype=torch.uint8)).contiguous()
        b["reward"], b["terminated"] = bright.float(), torch.ones(32)
        return b

    for i in range(80):
        agent.update([batch(i)])
    test = batch(1000)
    with torch.no_grad():
        q = agent.nets.critic(agent.policy.encoder(test["observation"]), test["action"][:, :1]).mean(0)
    assert q[0::2].mean() - q[1::2].mean() > 0.8  # bright frames pay 1, dark ones 0
