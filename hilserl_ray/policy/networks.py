"""The heads on top of the shared encoder: actor, critic ensemble, discrete gripper critic.

Hidden layers are Linear -> LayerNorm -> SiLU (HIL-SERL/RLPD use LayerNorm in every MLP). The
critic ensemble keeps its members' weights stacked, (E, in, out), so all E critics run as one
batched matmul rather than a Python loop over modules.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def hidden_layers(in_dim: int, hidden: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h), nn.LayerNorm(h), nn.SiLU()]
        in_dim = h
    return nn.Sequential(*layers)


def mlp(in_dim: int, hidden: list[int], out_dim: int) -> nn.Sequential:
    return nn.Sequential(*hidden_layers(in_dim, hidden), nn.Linear(hidden[-1] if hidden else in_dim, out_dim))


class TanhGaussianActor(nn.Module):
    """Gaussian over pre-tanh actions, squashed to [-1, 1]; tanh(mean) in deterministic mode."""

    def __init__(self, in_dim: int, hidden: list[int], action_dim: int):
        super().__init__()
        self.trunk = hidden_layers(in_dim, hidden)
        trunk_out = hidden[-1] if hidden else in_dim
        self.mean = nn.Linear(trunk_out, action_dim)
        self.log_std = nn.Linear(trunk_out, action_dim)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(features)
        log_std = torch.tanh(self.log_std(h))
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)
        return self.mean(h), log_std

    def sample(
        self, features: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterized sample and its log-probability (with the tanh change of variables)."""
        mean, log_std = self(features)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        u = mean + log_std.exp() * eps
        log_prob = (-0.5 * eps.pow(2) - log_std - _HALF_LOG_2PI).sum(-1)
        # log(1 - tanh(u)^2), numerically stable form
        log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return torch.tanh(u), log_prob

    def deterministic(self, features: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self(features)[0])


class EnsembleLinear(nn.Module):
    """E independent Linear layers evaluated as one batched matmul: (E, B, in) -> (E, B, out)."""

    def __init__(self, num: int, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(num, 1, out_dim))
        bound = 1 / math.sqrt(in_dim)  # nn.Linear's default init, per member
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, detach: bool = False) -> torch.Tensor:
        w, b = (self.weight.detach(), self.bias.detach()) if detach else (self.weight, self.bias)
        if x.dim() == 2:  # the same input for every member
            return torch.matmul(x, w) + b
        return torch.baddbmm(b, x, w)


class EnsembleLayerNorm(nn.Module):
    def __init__(self, num: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num, 1, dim))
        self.bias = nn.Parameter(torch.zeros(num, 1, dim))

    def forward(self, x: torch.Tensor, detach: bool = False) -> torch.Tensor:
        w, b = (self.weight.detach(), self.bias.detach()) if detach else (self.weight, self.bias)
        return F.layer_norm(x, x.shape[-1:]) * w + b


class CriticEnsemble(nn.Module):
    """E Q-functions Q(features, action) -> (E, B)."""

    def __init__(self, num: int, in_dim: int, hidden: list[int]):
        super().__init__()
        self.num = num
        dims = [in_dim, *hidden]
        self.linears = nn.ModuleList(
            EnsembleLinear(num, a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )
        self.norms = nn.ModuleList(EnsembleLayerNorm(num, h) for h in hidden)
        self.out = EnsembleLinear(num, dims[-1], 1)

    def forward(
        self, features: torch.Tensor, action: torch.Tensor, detach_params: bool = False
    ) -> torch.Tensor:
        """`detach_params`: gradients reach the inputs only (the actor's loss must not train the critics)."""
        x = torch.cat([features, action], dim=-1)
        for lin, norm in zip(self.linears, self.norms, strict=True):
            x = F.silu(norm(lin(x, detach_params), detach_params))
        return self.out(x, detach_params).squeeze(-1)


class GripperCritic(nn.Module):
    """Q(features, .) over the 3 gripper commands: close / stay / open."""

    NUM_ACTIONS = 3

    def __init__(self, in_dim: int, hidden: list[int]):
        super().__init__()
        self.net = mlp(in_dim, hidden, self.NUM_ACTIONS)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)
