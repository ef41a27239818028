"""What a robot actor runs: encoder + actor + gripper critic + normalization, no critics.

`SACAgent` owns one `ActorPolicy` (its encoder is the one the critics train), so the weights a
learner broadcasts (`state_numpy()`) load directly into a robot's `ActorPolicy`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hilserl_ray.config import PolicyConfig
from hilserl_ray.features import FeatureSpec
from hilserl_ray.policy.encoders import ObservationEncoder, backbone_weights_from
from hilserl_ray.policy.networks import GripperCritic, TanhGaussianActor
from hilserl_ray.policy.normalize import resolve_stats


def check_spec(spec: FeatureSpec) -> None:
    want = spec.continuous_action_dim + (1 if spec.discrete_gripper else 0)
    if spec.action.shape != (want,):
        raise ValueError(
            f"feature spec: action shape {spec.action.shape} does not match continuous_action_dim="
            f"{spec.continuous_action_dim} + discrete_gripper={spec.discrete_gripper} (expected ({want},))"
        )
    if spec.continuous_action_dim < 1:
        raise ValueError(
            f"feature spec: continuous_action_dim must be >= 1, got {spec.continuous_action_dim}"
        )


class ActorPolicy(nn.Module):
    def __init__(
        self,
        spec: FeatureSpec,
        cfg: PolicyConfig,
        stats: dict | None = None,
        backbone_weights: dict[str, torch.Tensor] | None = None,
    ):
        super().__init__()
        check_spec(spec)
        self.spec, self.cfg = spec, cfg
        self.stats = resolve_stats(spec, stats, pretrained=cfg.encoder == "pretrained")
        self.encoder = ObservationEncoder(spec, cfg, self.stats, backbone_weights)
        self.actor = TanhGaussianActor(self.encoder.out_dim, cfg.hidden_dims, spec.continuous_action_dim)
        self.gripper = GripperCritic(self.encoder.out_dim, cfg.hidden_dims) if spec.discrete_gripper else None

    # ------------------------------------------------------------------ robot-side inference
    @torch.inference_mode()
    def select_action(self, obs: dict[str, np.ndarray], deterministic: bool = False) -> np.ndarray:
        """One observation (numpy, unbatched, as the env emits it) -> action of spec.action.shape."""
        self.spec.check_observation(obs)
        dev = next(self.parameters()).device
        batch = {
            k: torch.tensor(obs[k])[None].to(dev)
            for k in self.spec.observation  # a copy: obs may be read-only
        }
        feat = self.encoder(batch)
        cont = self.actor.deterministic(feat) if deterministic else self.actor.sample(feat)[0]
        parts = [cont]
        if self.gripper is not None:
            parts.append(self.gripper(feat).argmax(-1, keepdim=True).to(cont.dtype))
        return torch.cat(parts, dim=-1)[0].float().cpu().numpy()

    # ------------------------------------------------------------------ weight broadcast
    def state_numpy(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().contiguous().numpy().copy() for k, v in self.state_dict().items()}

    def load_state_numpy(self, state: dict[str, np.ndarray]) -> None:
        ours = self.state_dict()
        missing, extra = sorted(set(ours) - set(state)), sorted(set(state) - set(ours))
        if missing or extra:
            raise ValueError(
                f"actor state does not fit this policy: missing {missing[:5]}, unexpected {extra[:5]}; "
                "learner and robot actor must be built from the same feature spec and policy config"
            )
        for k, v in ours.items():
            if tuple(state[k].shape) != tuple(v.shape):
                raise ValueError(
                    f"actor state '{k}': shape {tuple(state[k].shape)}, this policy has {tuple(v.shape)}"
                )
        # torch.tensor copies: broadcast arrays arrive read-only from Ray's object store
        self.load_state_dict({k: torch.tensor(state[k]) for k in ours})

    @classmethod
    def from_state_numpy(
        cls, spec: FeatureSpec, cfg: PolicyConfig, state: dict[str, np.ndarray], device=None
    ) -> ActorPolicy:
        """A robot actor's policy from the learner's broadcast alone (no weights file needed)."""
        tensors = {k: torch.tensor(v) for k, v in state.items()}
        policy = cls(spec, cfg, None, backbone_weights_from(tensors, "encoder."))
        policy.load_state_numpy(state)
        return policy.to(device or "cpu").eval()
