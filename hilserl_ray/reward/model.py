"""The classifier network (the policy's per-camera encoders + an MLP head), its save/load, and a
per-step scorer for the env.

Everything trains, encoders included (LeRobot's runs its encoder under no_grad, so only the head
learns), except a frozen pretrained backbone. Image normalization lives in the encoder's buffers
and is saved with the weights, so use normalizes exactly as training did.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hilserl_ray.config import PolicyConfig
from hilserl_ray.features import FeatureSpec
from hilserl_ray.policy.encoders import ObservationEncoder, backbone_weights_from
from hilserl_ray.policy.normalize import default_stats
from hilserl_ray.reward.spec import META_FILE, WEIGHTS_FILE, read_meta

HIDDEN = 256


class RewardClassifier(nn.Module):
    """uint8 camera frames -> success logit. Head as hil-serl: Linear -> Dropout -> LayerNorm -> ReLU -> Linear."""

    def __init__(
        self,
        spec: FeatureSpec,
        cfg: PolicyConfig,
        backbone_weights: dict[str, torch.Tensor] | None = None,
        dropout: float = 0.1,
    ):
        super().__init__()
        stats = default_stats(spec, pretrained=cfg.encoder == "pretrained")
        self.encoder = ObservationEncoder(spec, cfg, stats, backbone_weights)
        self.head = nn.Sequential(
            nn.Linear(self.encoder.out_dim, HIDDEN),
            nn.Dropout(dropout),
            nn.LayerNorm(HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, 1),
        )
        self.image_keys = list(spec.image_keys)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.encoder(obs)).squeeze(-1)


def save(model: RewardClassifier, meta: dict, directory: Path) -> None:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    (directory / META_FILE).write_text(json.dumps(meta, indent=1, default=str))


def load(directory: Path) -> tuple[RewardClassifier, dict]:
    """The model (eval mode, CPU) and its JSON."""
    from safetensors.torch import load_file

    meta = read_meta(Path(directory))
    spec = FeatureSpec.from_dict(meta["spec"])
    state = load_file(str(Path(directory) / WEIGHTS_FILE))
    pcfg = PolicyConfig(**meta["policy"])
    model = RewardClassifier(spec, pcfg, backbone_weights=backbone_weights_from(state, "encoder."))
    model.load_state_dict(state)
    return model.eval(), meta


class Scorer:
    """Success probability of one observation, on CPU: what the env wrapper calls every step."""

    def __init__(self, directory: Path):
        self.model, self.meta = load(directory)
        self.keys = self.model.image_keys
        self.threshold = float(self.meta["threshold"])

    @torch.inference_mode()
    def __call__(self, obs: dict[str, np.ndarray]) -> float:
        batch = {k: torch.from_numpy(np.ascontiguousarray(obs[k]))[None] for k in self.keys}
        return float(torch.sigmoid(self.model(batch))[0])

    @torch.inference_mode()
    def batch(self, images: dict[str, np.ndarray], batch_size: int = 256) -> np.ndarray:
        """Probabilities of many frames (evaluation)."""
        n = len(next(iter(images.values())))
        out = np.empty(n, np.float32)
        for i in range(0, n, batch_size):
            b = {k: torch.from_numpy(np.ascontiguousarray(images[k][i : i + batch_size])) for k in self.keys}
            out[i : i + batch_size] = torch.sigmoid(self.model(b)).numpy()
        return out
