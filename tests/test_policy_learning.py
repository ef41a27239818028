"""Slow checks: the agent learns a control task; torch.compile and CUDA paths (when present)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from policy_helpers import make_spec, random_batch, small_cfg

from hilserl_ray.policy import SACAgent


def _bench(name: str):
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~3 min alone on this 2-core machine, far more when it is shared
def test_pendulum_is_solved_from_state():
    """Seeded; the full 15k-step check is `bench/learn_pendulum.py` (solved by ~2.5k steps there)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = _bench("learn_pendulum").run(steps=5_000, seed=0, eval_every=2_500, log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    assert result["final_return"] > -300, result["history"]


@pytest.mark.slow
@pytest.mark.timeout(900)  # compilation alone takes minutes on 2 cores
def test_compiled_update_matches_eager():
    spec = make_spec(state_dim=6, cont=3, gripper=True, cameras={"front": (32, 32)})
    batches = [random_batch(spec, 16, 0), random_batch(spec, 16, 1)]
    results = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        agent = SACAgent(spec, small_cfg(utd_ratio=2, compile=compile_))
        results.append(agent.update(batches))
    for k, v in results[0].items():
        torch.testing.assert_close(results[1][k], v, rtol=1e-3, atol=1e-4, msg=k)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_update_makes_no_host_syncs():
    spec = make_spec(state_dim=6, cont=3, gripper=True, cameras={"front": (32, 32)})
    agent = SACAgent(spec, small_cfg(device="cuda", utd_ratio=2, bf16=True))
    batches = [_to(random_batch(spec, 16, i), "cuda") for i in range(2)]
    agent.update(batches)  # warm-up: lazy init may sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        metrics = agent.update(batches)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(metrics["critic_loss"]).item()


def _to(batch, device):
    return {k: _to(v, device) if isinstance(v, dict) else v.to(device) for k, v in batch.items()}
