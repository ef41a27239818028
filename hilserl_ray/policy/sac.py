"""SACAgent: the learner's HIL-SERL SAC (RLPD-style), read top to bottom.

One `update(batches)` = `cfg.utd_ratio` critic updates (one per batch); the last one also trains
the discrete gripper critic, then the actor and the temperature. Targets:

    y      = r + discount * (1 - terminated) * (min_{sub-ensemble} Q'(s', a') - alpha * log pi(a'|s'))
    y_grip = r + discrete_penalty + discount * (1 - terminated) * Qg'(s', argmax_g Qg(s', g))

`terminated` is 1 only for success/failure; a time-limit truncation is 0 there and bootstraps from
its own next observation (the buffer keeps an episode's last observation for that). Targets Q'
and Qg' are Polyak copies of the heads; the encoder is shared (targets use it without gradient).
The actor reads the encoder's features detached: only the critics train the encoder.

All randomness (DrQ shifts, policy samples, REDQ subsets) comes from the agent's own generator,
saved with the checkpoint, so a restored agent continues bit-identically. Nothing in `update`
moves a value to the host; the returned metrics are detached tensors.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hilserl_ray.config import PolicyConfig
from hilserl_ray.device import resolve_device
from hilserl_ray.features import ACTION, FeatureSpec
from hilserl_ray.policy.actor import ActorPolicy
from hilserl_ray.policy.augment import random_shift
from hilserl_ray.policy.encoders import backbone_weights_from
from hilserl_ray.policy.io import read_agent, restore_agent, save_agent
from hilserl_ray.policy.networks import CriticEnsemble
from hilserl_ray.policy.perf import tune_allocator

Batch = dict  # {"observation": {...}, "next_observation": {...}, "action", "reward", "terminated", ...}
_BATCH_VECTORS = ("reward", "terminated", "discrete_penalty", "is_intervention")


class _Nets(nn.Module):
    """Every tensor of the agent, so one state_dict holds the whole model."""

    def __init__(self, policy: ActorPolicy, critic: CriticEnsemble, log_alpha: float):
        super().__init__()
        self.policy = policy
        self.critic = critic
        self.critic_target = copy.deepcopy(critic).requires_grad_(False)
        self.gripper_target = (
            copy.deepcopy(policy.gripper).requires_grad_(False) if policy.gripper is not None else None
        )
        self.log_alpha = nn.Parameter(torch.tensor(log_alpha, dtype=torch.float32))


def _adam(params, lr: float) -> torch.optim.Adam:
    params = list(params)
    try:  # fused Adam: one kernel for all parameters (CPU and CUDA in torch >= 2.4)
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


class SACAgent:
    """The learner's agent, sized from the FeatureSpec and PolicyConfig.

    `stats`: per-feature normalization stats ({"mean", "std"} or {"min", "max"}); missing ones
    default from the spec (see normalize.py). They are stored in the weights and the checkpoint.
    `backbone_weights`: the frozen pretrained backbone's tensors, to skip reading
    `cfg.encoder_weights` (used by `load`).
    """

    def __init__(
        self,
        spec: FeatureSpec,
        cfg: PolicyConfig,
        stats: dict | None = None,
        device: str | torch.device | None = None,
        *,
        backbone_weights: dict[str, torch.Tensor] | None = None,
    ):
        self.spec, self.cfg = spec, cfg
        self.device = resolve_device(device if device is not None else cfg.device)
        if self.device.type == "cpu":
            tune_allocator()  # see perf.py: without it every batch's image tensor is page-faulted in
        policy = ActorPolicy(spec, cfg, stats, backbone_weights)
        self.stats = policy.stats
        self.action_dim = spec.continuous_action_dim
        critic = CriticEnsemble(cfg.num_critics, policy.encoder.out_dim + self.action_dim, cfg.hidden_dims)
        self.nets = _Nets(policy, critic, math.log(cfg.temperature_init)).to(self.device)
        self.policy = self.nets.policy
        self.target_entropy = float(
            cfg.target_entropy if cfg.target_entropy is not None else -self.action_dim / 2
        )
        self.num_subsample = cfg.num_subsample_critics
        if self.num_subsample is not None and self.num_subsample > cfg.num_critics:
            raise ValueError(
                f"policy.num_subsample_critics: {self.num_subsample} > policy.num_critics ({cfg.num_critics})"
            )

        n = self.nets
        self._encoder_params = [p for p in n.policy.encoder.parameters() if p.requires_grad]
        self._critic_params = self._encoder_params + list(n.critic.parameters())
        self._actor_params = list(n.policy.actor.parameters())
        self._gripper_params = list(n.policy.gripper.parameters()) if n.policy.gripper is not None else []
        self.optimizers: dict[str, torch.optim.Optimizer] = {
            "critic": _adam(self._critic_params, cfg.critic_lr),
            "actor": _adam(self._actor_params, cfg.actor_lr),
            "temperature": _adam([n.log_alpha], cfg.temperature_lr),
        }
        if self._gripper_params:
            self.optimizers["gripper"] = _adam(self._gripper_params, cfg.critic_lr)
        self._polyak_pairs = [
            (list(n.critic_target.parameters()), list(n.critic.parameters())),
        ]
        if n.gripper_target is not None:
            self._polyak_pairs.append((list(n.gripper_target.parameters()), self._gripper_params))

        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))  # follows torch.manual_seed
        self.num_updates = 0  # full updates (calls to `update`) so far

        self._bf16 = cfg.bf16 and self.device.type == "cuda"
        if cfg.bf16 and self.device.type == "cpu":
            self.policy.encoder.set_cpu_bf16(True)
        self._critic_losses = self._critic_losses_eager
        self._actor_losses = self._actor_losses_eager
        if cfg.compile:
            self._critic_losses = torch.compile(self._critic_losses_eager)
            self._actor_losses = torch.compile(self._actor_losses_eager)

    # ======================================================================== public API
    def update(self, batches: Sequence[Batch]) -> dict[str, torch.Tensor]:
        """utd_ratio - 1 critic-only updates, then critic + gripper critic + actor + temperature."""
        if len(batches) != self.cfg.utd_ratio:
            raise ValueError(
                f"update: got {len(batches)} batches, policy.utd_ratio is {self.cfg.utd_ratio}; "
                "sample one batch per critic update"
            )
        metrics: dict[str, torch.Tensor] = {}
        for i, raw in enumerate(batches):
            batch = self._check_batch(raw, i)
            last = i == len(batches) - 1
            features, m = self._critic_update(batch, with_gripper=last)
            metrics.update(m)
        metrics.update(self._actor_update(features))
        self.num_updates += 1
        return {k: v.detach() for k, v in metrics.items()}

    def select_action(self, obs: dict[str, np.ndarray], deterministic: bool = False) -> np.ndarray:
        return self.policy.select_action(obs, deterministic)

    def actor_state(self) -> dict[str, np.ndarray]:
        """Everything `select_action` needs, as numpy (the learner -> robot weight broadcast)."""
        return self.policy.state_numpy()

    def load_actor_state(self, state: dict[str, np.ndarray]) -> None:
        self.policy.load_state_numpy(state)

    @property
    def temperature(self) -> torch.Tensor:
        return self.nets.log_alpha.detach().exp()

    def save(self, directory: Path) -> None:
        save_agent(self, Path(directory))

    @classmethod
    def load(
        cls, directory: Path, device: str | torch.device | None = None, policy: PolicyConfig | None = None
    ) -> SACAgent:
        """The agent saved in `directory`. `policy`: go on with these settings (learning rates,
        discount, batch size, ...) instead of the saved ones; its network fields must match the
        checkpoint's (a resume checks that first)."""
        directory = Path(directory)
        meta, model, train = read_agent(directory)
        spec = FeatureSpec.from_dict(meta["spec"])
        cfg = policy or PolicyConfig(**meta["policy_config"])
        backbone = backbone_weights_from(model, "policy.encoder.")  # the frozen backbone: no file read
        agent = cls(spec, cfg, meta["stats"], device, backbone_weights=backbone)
        restore_agent(agent, directory, meta, model, train, new_policy=policy is not None)
        return agent

    def td_targets(self, batch: Batch, augment: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The critic's and the gripper critic's regression targets for a batch (for inspection)."""
        batch = self._check_batch(batch, 0)
        with torch.no_grad():
            nxt = self._images(batch["next_observation"], augment)
            return self._targets(self.policy.encoder(nxt), batch)

    # ======================================================================== internals
    def _autocast(self):
        if self._bf16:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _images(self, obs: dict[str, torch.Tensor], augment: bool) -> dict[str, torch.Tensor]:
        if not augment or self.cfg.drq_pad == 0:
            return obs
        out = dict(obs)
        for k in self.spec.image_keys:
            out[k] = random_shift(obs[k], self.cfg.drq_pad, self.generator)
        return out

    def _targets(self, next_feat: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = self.nets
        next_action, next_log_prob = n.policy.actor.sample(next_feat, self.generator)
        q_next = n.critic_target(next_feat, next_action).float()  # (E, B)
        if self.num_subsample is not None and self.num_subsample < self.cfg.num_critics:
            pick = torch.randperm(self.cfg.num_critics, generator=self.generator, device=self.device)
            q_next = q_next.index_select(0, pick[: self.num_subsample])
        alpha = n.log_alpha.detach().exp()
        not_done = 1.0 - batch["terminated"]
        value = q_next.min(dim=0).values - alpha * next_log_prob.float()
        y = batch["reward"] + self.cfg.discount * not_done * value
        y_grip = None
        if n.gripper_target is not None:
            best = n.policy.gripper(next_feat).argmax(dim=-1, keepdim=True)  # double DQN: online picks
            q_grip_next = n.gripper_target(next_feat).float().gather(-1, best).squeeze(-1)  # target rates
            y_grip = batch["reward"] + batch["discrete_penalty"] + self.cfg.discount * not_done * q_grip_next
        return y, y_grip

    def _critic_losses_eager(self, batch: Batch, with_gripper: bool):
        n = self.nets
        with self._autocast():
            with torch.no_grad():
                next_feat = n.policy.encoder(self._images(batch["next_observation"], augment=True))
                y, y_grip = self._targets(next_feat, batch)
            feat = n.policy.encoder(self._images(batch["observation"], augment=True))
            action = batch["action"]
            q = n.critic(feat, action[:, : self.action_dim].clamp(-1.0, 1.0)).float()
        critic_loss = (q - y).pow(2).mean(dim=1).sum()
        metrics = {"critic_loss": critic_loss, "q_mean": q.mean(), "td_target_mean": y.mean()}
        loss = critic_loss
        if with_gripper and y_grip is not None:
            with self._autocast():
                q_grip_all = n.policy.gripper(feat).float()
            index = action[:, self.action_dim].round().long().clamp(0, 2)
            q_grip = q_grip_all.gather(-1, index[:, None]).squeeze(-1)
            grip_loss = (q_grip - y_grip).pow(2).mean()
            metrics.update(gripper_loss=grip_loss, gripper_q_mean=q_grip.mean())
            loss = loss + grip_loss
        return loss, feat.detach(), metrics

    def _critic_update(
        self, batch: Batch, with_gripper: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        opt = self.optimizers
        use_grip = with_gripper and "gripper" in opt
        opt["critic"].zero_grad(set_to_none=True)
        if use_grip:
            opt["gripper"].zero_grad(set_to_none=True)
        loss, feat, metrics = self._critic_losses(batch, use_grip)
        loss.backward()
        metrics["critic_grad_norm"] = nn.utils.clip_grad_norm_(
            self._critic_params, self.cfg.grad_clip, foreach=True
        )
        opt["critic"].step()
        torch._foreach_lerp_(*self._polyak_pairs[0], self.cfg.tau)
        if use_grip:
            metrics["gripper_grad_norm"] = nn.utils.clip_grad_norm_(
                self._gripper_params, self.cfg.grad_clip, foreach=True
            )
            opt["gripper"].step()
            torch._foreach_lerp_(*self._polyak_pairs[1], self.cfg.tau)
        return feat, metrics

    def _actor_losses_eager(self, feat: torch.Tensor):
        n = self.nets
        with self._autocast():
            action, log_prob = n.policy.actor.sample(feat, self.generator)
            q = n.critic(feat, action, detach_params=True).float().mean(dim=0)
        log_prob = log_prob.float()
        alpha = n.log_alpha.exp()
        actor_loss = (alpha.detach() * log_prob - q).mean()
        entropy = -log_prob.detach().mean()
        temperature_loss = alpha * (entropy - self.target_entropy)
        return actor_loss, temperature_loss, entropy

    def _actor_update(self, feat: torch.Tensor) -> dict[str, torch.Tensor]:
        """`feat` is detached: the actor's loss cannot reach the encoder (nor the critics)."""
        opt = self.optimizers
        opt["actor"].zero_grad(set_to_none=True)
        opt["temperature"].zero_grad(set_to_none=True)
        actor_loss, temperature_loss, entropy = self._actor_losses(feat)
        (actor_loss + temperature_loss).backward()
        grad_norm = nn.utils.clip_grad_norm_(self._actor_params, self.cfg.grad_clip, foreach=True)
        opt["actor"].step()
        opt["temperature"].step()
        return {
            "actor_loss": actor_loss.detach(),
            "temperature_loss": temperature_loss.detach(),
            "temperature": self.nets.log_alpha.detach().exp(),
            "entropy": entropy,
            "actor_grad_norm": grad_norm,
        }

    def _check_batch(self, batch: Batch, index: int) -> Batch:
        """Shape/dtype checks on host metadata only (no device sync); moves tensors to the device."""
        where = f"batch {index}"
        for key in ("observation", "next_observation", "action", "reward", "terminated"):
            if key not in batch:
                raise KeyError(f"{where}: missing '{key}'; a Batch has {sorted(batch)}")
        action = self._tensor(batch["action"], f"{where} '{ACTION}'")
        b = action.shape[0]
        if tuple(action.shape) != (b, *self.spec.action.shape):
            raise ValueError(
                f"{where}: 'action' has shape {tuple(action.shape)}, expected {(b, *self.spec.action.shape)}"
            )
        out: Batch = {"action": action.float()}
        for key in _BATCH_VECTORS:
            if key not in batch:
                if key == "discrete_penalty" and not self.spec.discrete_gripper or key == "is_intervention":
                    out[key] = torch.zeros(b, device=self.device)
                    continue
                raise KeyError(f"{where}: missing '{key}' (needed with a discrete gripper)")
            v = self._tensor(batch[key], f"{where} '{key}'")
            if tuple(v.shape) != (b,):
                raise ValueError(f"{where}: '{key}' has shape {tuple(v.shape)}, expected ({b},)")
            out[key] = v.float()
        for part in ("observation", "next_observation"):
            obs = batch[part]
            missing = sorted(set(self.spec.observation) - set(obs))
            if missing:
                raise KeyError(f"{where}: '{part}' is missing features {missing}")
            out[part] = {}
            for k, f in self.spec.observation.items():
                v = self._tensor(obs[k], f"{where} '{part}.{k}'")
                if tuple(v.shape) != (b, *f.shape):
                    raise ValueError(
                        f"{where}: '{part}' feature '{k}' has shape {tuple(v.shape)}, expected {(b, *f.shape)}"
                    )
                if f.is_image and v.dtype != torch.uint8:
                    raise ValueError(
                        f"{where}: '{part}' image '{k}' must stay uint8 in a batch, got {v.dtype}"
                    )
                out[part][k] = v
        return out

    def _tensor(self, value, what: str) -> torch.Tensor:
        if not isinstance(value, torch.Tensor):
            if isinstance(value, np.ndarray):
                value = torch.from_numpy(value) if value.flags.writeable else torch.tensor(value)
            else:
                raise TypeError(f"{what}: expected a torch tensor, got {type(value).__name__}")
        return value.to(self.device, non_blocking=True)
