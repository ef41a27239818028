"""Agent checkpoints without pickle: tensors in safetensors, everything else in JSON.

    <dir>/agent.json          format, feature spec, policy config, normalization stats, step counter,
                              optimizer hyperparameters
    <dir>/model.safetensors   all weights: encoder, actor, critics, target heads, gripper critic,
                              log-alpha, normalization buffers
    <dir>/train.safetensors   optimizer moments and the agent's RNG state

Each file is written to a temporary name and renamed, so an interrupted save never leaves a
half-written file under the final name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FORMAT = "hilserl_ray.sac/1"
_RNG_KEY = "rng.generator"


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_agent(agent, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    model = {k: v.detach().cpu().contiguous() for k, v in agent.nets.state_dict().items()}
    train: dict[str, torch.Tensor] = {_RNG_KEY: agent.generator.get_state().cpu()}
    optim_meta = {}
    for name, opt in agent.optimizers.items():
        sd = opt.state_dict()
        plain: dict[str, dict] = {}
        for pid, state in sd["state"].items():
            for k, v in state.items():
                if isinstance(v, torch.Tensor):
                    train[f"optim.{name}.{pid}.{k}"] = v.detach().cpu().contiguous()
                else:
                    plain.setdefault(str(pid), {})[k] = v
        optim_meta[name] = {"param_groups": sd["param_groups"], "plain_state": plain}
    meta = {
        "format": FORMAT,
        "spec": agent.spec.to_dict(),
        "policy_config": agent.cfg.model_dump(mode="json"),
        "stats": agent.stats,
        "num_updates": agent.num_updates,
        "target_entropy": agent.target_entropy,
        "optimizers": optim_meta,
    }
    _atomic(directory / "model.safetensors", lambda p: save_file(model, str(p)))
    _atomic(directory / "train.safetensors", lambda p: save_file(train, str(p)))
    _atomic(directory / "agent.json", lambda p: p.write_text(json.dumps(meta, indent=1, default=str)))


def read_agent(directory: Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(agent.json, the model's tensors, the optimizers' tensors and RNG state) of a saved agent."""
    meta_path = directory / "agent.json"
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{meta_path}: no agent checkpoint here (expected agent.json + *.safetensors)"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: format {meta.get('format')!r}, this version reads {FORMAT!r}")
    model = load_file(str(directory / "model.safetensors"))
    train = load_file(str(directory / "train.safetensors"))
    return meta, model, train


def restore_agent(agent, directory: Path, meta: dict, model: dict, train: dict, new_policy: bool) -> None:
    """Put a saved agent's state into `agent` (built from the saved spec and stats).

    `new_policy`: the agent goes on with other settings than the saved ones (learning rates,
    discount, batch size, ...): its optimizers take the new learning rates, it keeps its own
    target entropy."""
    missing, extra = (
        sorted(set(agent.nets.state_dict()) - set(model)),
        sorted(set(model) - set(agent.nets.state_dict())),
    )
    if missing or extra:
        raise ValueError(f"{directory / 'model.safetensors'}: missing {missing[:5]}, unexpected {extra[:5]}")
    agent.nets.load_state_dict(model)
    for name, opt in agent.optimizers.items():
        om = meta["optimizers"][name]
        state: dict[int, dict] = {}
        prefix = f"optim.{name}."
        for key, v in train.items():
            if key.startswith(prefix):
                pid, k = key[len(prefix) :].split(".", 1)
                state.setdefault(int(pid), {})[k] = v
        for pid, plain in om["plain_state"].items():
            state.setdefault(int(pid), {}).update(plain)
        opt.load_state_dict({"state": state, "param_groups": om["param_groups"]})
        _match_layouts(opt)
    agent.generator.set_state(train[_RNG_KEY])
    agent.num_updates = int(meta["num_updates"])
    if not new_policy:
        agent.target_entropy = float(meta["target_entropy"])
    else:  # the optimizers' saved state carries the old learning rates
        cfg = agent.cfg
        lrs = {"critic": cfg.critic_lr, "gripper": cfg.critic_lr, "actor": cfg.actor_lr}
        lrs["temperature"] = cfg.temperature_lr
        for name, opt in agent.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = lrs[name]


def _match_layouts(opt: torch.optim.Optimizer) -> None:
    """Give moments their parameter's memory layout (channels_last convs): safetensors stores them
    contiguous, and a fused optimizer kernel walks a parameter and its moments in memory order."""
    for group in opt.param_groups:
        for p in group["params"]:
            for k, v in opt.state.get(p, {}).items():
                if isinstance(v, torch.Tensor) and v.shape == p.shape and v.stride() != p.stride():
                    opt.state[p][k] = torch.empty_like(p).copy_(v)
