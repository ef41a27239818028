"""Fixtures shared by several test modules.

run_helpers is imported first: it gives every Ray of the session one token before any starts, so
tests that start Ray in different ways (ray.init, a multi-node Cluster, drivers in other processes)
pass in any order."""

from __future__ import annotations

import pytest
import ray
from run_helpers import start_local_ray


@pytest.fixture
def seeded_single_thread_torch():
    """Seeded torch on one thread: tiny nets are faster without OpenMP contention with other jobs."""
    import torch

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def private_offline_cache(tmp_path_factory, monkeypatch):
    """Converted datasets go to a shared cache (~/.cache/hilserl_ray by default): keep tests' own."""
    monkeypatch.setenv("HILSERL_RAY_CACHE_DIR", str(tmp_path_factory.mktemp("offline_cache")))


@pytest.fixture
def local_ray():
    """A local Ray for one test."""
    start_local_ray()
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def module_ray():
    """A local Ray shared by a module's tests (each starts its own actors)."""
    start_local_ray()
    yield
    ray.shutdown()
