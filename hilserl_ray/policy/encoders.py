"""Observation encoders, shared by actor and critics: one per camera plus one for the state.

Default image path (trained from scratch, DrQ/SERL style): a small conv net -- a 4x4/stride-4
patchify stem (16 ch), 3x3 convs (32 ch) down to an 8x8 map -- then a learned spatial embedding
(SERL's `SpatialLearnedEmbeddings`) or a spatial softmax, projected to `latent_dim` with
LayerNorm + tanh. The stem is the speed choice: at 128x128, LeRobot's 7x7/stride-2 stem costs
~2 s of convolutions per UTD-2 update on 2 CPU cores; this net ~0.15 s (profiled variants:
16x16 output maps made the spatial embedding alone cost more than the convs).

Optional frozen backbone: a torchvision-layout ResNet (BasicBlock; ResNet-10/18/34 depth is read
from the weight names) loaded from a local safetensors file; nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hilserl_ray.config import PolicyConfig
from hilserl_ray.features import FeatureSpec
from hilserl_ray.policy.normalize import Normalizer

STEM_CHANNELS = 16
CONV_CHANNELS = 32
SPATIAL_FEATURES = 8  # learned embeddings per channel (SERL default)


class ConvBackbone(nn.Module):
    """uint8 (B, H, W, 3) -> (B, 32, H/16, W/16) float, the input normalization folded into the stem.

    The stem is linear, so `conv((x - shift) * scale)` equals a conv of the raw pixels with
    per-channel rescaled weights and a shifted bias: no full-size float normalization pass.
    """

    def __init__(self, stem: int = STEM_CHANNELS, channels: int = CONV_CHANNELS):
        super().__init__()
        self.stem = nn.Conv2d(3, stem, 4, stride=4)
        self.net = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.Conv2d(stem, channels, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
        )
        self.to(memory_format=torch.channels_last)
        self.cpu_bf16 = False

    def forward(self, images: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        with torch.autocast(
            "cpu", dtype=torch.bfloat16, enabled=self.cpu_bf16 and images.device.type == "cpu"
        ):
            w = self.stem.weight * scale  # scale, shift: (1, 3, 1, 1)
            b = self.stem.bias - (w * shift).sum(dim=(1, 2, 3))
            x = images.permute(0, 3, 1, 2).float()  # a channels_last view of the NHWC pixels
            x = F.conv2d(x, w.contiguous(memory_format=torch.channels_last), b, stride=4)
            return self.net(x)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, downsample: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if downsample
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class PretrainedResNet(nn.Module):
    """A frozen BasicBlock ResNet shaped after its torchvision-layout weights (always in eval mode)."""

    def __init__(self, weights: dict[str, torch.Tensor], source: str):
        super().__init__()
        if "conv1.weight" not in weights:
            raise ValueError(
                f"pretrained encoder weights {source}: no 'conv1.weight'; expected a torchvision-layout ResNet "
                f"(conv1, bn1, layer1.0.conv1, ...), got keys like {sorted(weights)[:5]}"
            )
        width = weights["conv1.weight"].shape[0]
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages = []
        cin = width
        for i in range(1, 5):
            n = 0
            while f"layer{i}.{n}.conv1.weight" in weights:
                n += 1
            if n == 0:
                break
            cout = weights[f"layer{i}.0.conv1.weight"].shape[0]
            blocks = [
                _BasicBlock(
                    cin if j == 0 else cout,
                    cout,
                    2 if (i > 1 and j == 0) else 1,
                    j == 0 and f"layer{i}.0.downsample.0.weight" in weights,
                )
                for j in range(n)
            ]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.layers = nn.Sequential(*stages)
        # torchvision names stages layer1..4; ours are layers.0..3
        ours = {_tv_name(k): k for k in self.state_dict()}
        missing = sorted(k for k in set(ours) - set(weights) if not k.endswith("num_batches_tracked"))
        if missing:
            raise ValueError(
                f"pretrained encoder weights {source}: missing {missing[:5]} (of {len(missing)})"
            )
        self.load_state_dict({ours[k]: weights[k] for k in ours if k in weights}, strict=False)
        self.requires_grad_(False)
        self.eval()
        self.to(memory_format=torch.channels_last)

    def train(self, mode: bool = True) -> PretrainedResNet:  # frozen: BatchNorm keeps its running stats
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
            return self.layers(x)


def _tv_name(key: str) -> str:
    if key.startswith("layers."):
        _, stage, rest = key.split(".", 2)
        return f"layer{int(stage) + 1}.{rest}"
    return key


def load_backbone_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"policy.encoder_weights: {path} does not exist; give a local safetensors file of a "
            "torchvision-layout ResNet (nothing is downloaded at run time), or set policy.encoder=conv"
        )
    if path.suffix != ".safetensors":
        raise ValueError(
            f"policy.encoder_weights: {path} must be a .safetensors file (no pickle), got '{path.suffix}'"
        )
    return load_file(str(path))


class SpatialEmbedding(nn.Module):
    """SERL's learned spatial embeddings: per channel, F learned weightings of the H x W map."""

    def __init__(self, c: int, h: int, w: int, num_features: int = SPATIAL_FEATURES):
        super().__init__()
        self.kernel = nn.Parameter(torch.empty(c, h * w, num_features))
        nn.init.kaiming_normal_(self.kernel, mode="fan_in")
        self.out_dim = c * num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # (C, B, HW) @ (C, HW, F) -> (C, B, F): one batched matmul
        y = torch.bmm(x.reshape(b, c, h * w).transpose(0, 1), self.kernel)
        return y.transpose(0, 1).reshape(b, self.out_dim)


class SpatialSoftmax(nn.Module):
    """Expected (x, y) of a softmax over each channel's map: 2 features per channel."""

    def __init__(self, c: int, h: int, w: int):
        super().__init__()
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        self.register_buffer("pos", torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1))  # (HW, 2)
        self.out_dim = 2 * c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        attn = torch.softmax(x.reshape(b, c, h * w), dim=-1)
        return (attn @ self.pos).reshape(b, self.out_dim)


class ImageEncoder(nn.Module):
    """Raw uint8 camera frames -> `latent_dim` features: backbone -> spatial head -> Linear/LN/tanh.

    With the shared frozen backbone this encoder has none of its own (`backbone=None`) and is
    given the backbone's feature map.
    """

    def __init__(self, cfg: PolicyConfig, backbone: ConvBackbone | None, feature_chw: tuple[int, int, int]):
        super().__init__()
        self.backbone = backbone
        c, h, w = feature_chw
        self.head = (
            SpatialEmbedding(c, h, w) if cfg.image_head == "spatial_embedding" else SpatialSoftmax(c, h, w)
        )
        self.proj = nn.Sequential(
            nn.Linear(self.head.out_dim, cfg.latent_dim), nn.LayerNorm(cfg.latent_dim), nn.Tanh()
        )

    def forward(self, x: torch.Tensor, shift: torch.Tensor | None = None, scale: torch.Tensor | None = None):
        if self.backbone is not None:
            x = self.backbone(x, shift, scale)
        return self.proj(self.head(x.float()))


def _out_chw(backbone: nn.Module, hw: tuple[int, int]) -> tuple[int, int, int]:
    with torch.no_grad():
        if isinstance(backbone, ConvBackbone):
            x = torch.zeros(1, *hw, 3, dtype=torch.uint8)
            return tuple(backbone(x, torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)).shape[1:])
        x = torch.zeros(1, 3, *hw).contiguous(memory_format=torch.channels_last)
        return tuple(backbone(x).shape[1:])


class ObservationEncoder(nn.Module):
    """Raw observation dict (uint8 images, float vectors) -> features (B, out_dim).

    `backbone_weights` (torchvision names) replaces reading `cfg.encoder_weights`: a checkpoint or a
    weight broadcast already carries the frozen backbone, so robots need not have the file.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        cfg: PolicyConfig,
        stats: dict,
        backbone_weights: dict[str, torch.Tensor] | None = None,
    ):
        super().__init__()
        self.normalizer = Normalizer(spec, stats)
        self.image_keys = spec.image_keys
        self.vector_keys = [k for k in spec.observation if k not in self.image_keys]
        for k in self.vector_keys:
            if len(spec.observation[k].shape) != 1:
                raise ValueError(
                    f"feature '{k}': the policy encodes 1-D vectors, got shape {spec.observation[k].shape}"
                )
        self.pretrained: PretrainedResNet | None = None
        if cfg.encoder == "pretrained" and self.image_keys:
            if backbone_weights is None:
                if cfg.encoder_weights is None:
                    raise ValueError(
                        "policy.encoder_weights: required with policy.encoder=pretrained (a local file)"
                    )
                backbone_weights = load_backbone_weights(cfg.encoder_weights)
            self.pretrained = PretrainedResNet(backbone_weights, str(cfg.encoder_weights))
        self.images = nn.ModuleList()
        for k in self.image_keys:
            shape = spec.observation[k].shape
            if len(shape) != 3 or shape[2] != 3:
                raise ValueError(f"feature '{k}': images must be (H, W, 3), got {shape}")
            if self.pretrained is not None:
                self.images.append(ImageEncoder(cfg, None, _out_chw(self.pretrained, shape[:2])))
            else:
                backbone = ConvBackbone()
                self.images.append(ImageEncoder(cfg, backbone, _out_chw(backbone, shape[:2])))
        state_dim = sum(spec.observation[k].shape[0] for k in self.vector_keys)
        self.state = (
            nn.Sequential(nn.Linear(state_dim, cfg.latent_dim), nn.LayerNorm(cfg.latent_dim), nn.Tanh())
            if state_dim
            else None
        )
        self.out_dim = cfg.latent_dim * (len(self.image_keys) + (1 if state_dim else 0))
        if self.out_dim == 0:
            raise ValueError("the feature spec has no observation features to encode")

    def set_cpu_bf16(self, enabled: bool) -> None:
        """bf16 convs on CPU (oneDNN AVX512-BF16/AMX kernels, ~2x); heads and critics stay fp32."""
        for m in self.modules():
            if isinstance(m, ConvBackbone):
                m.cpu_bf16 = enabled

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        for k, enc in zip(self.image_keys, self.images, strict=True):
            if self.pretrained is None:
                parts.append(enc(obs[k], *self.normalizer.image_shift_scale(k)))
            else:
                parts.append(enc(self.pretrained(self.normalizer.image(k, obs[k]))))
        if self.state is not None:
            vec = [self.normalizer.vector(k, obs[k]) for k in self.vector_keys]
            parts.append(self.state(vec[0] if len(vec) == 1 else torch.cat(vec, dim=-1)))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def backbone_weights_from(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor] | None:
    """The frozen backbone's weights (torchvision names) out of a saved state dict, if it has one."""
    p = prefix + "pretrained."
    found = {_tv_name(k[len(p) :]): v for k, v in state.items() if k.startswith(p)}
    return found or None
