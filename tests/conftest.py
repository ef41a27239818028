"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(session, config, items):
    """The multi-node tests (test_fleet.py) first: their in-process `Cluster` must be this process's
    first Ray. After other tests' Rays here, Ray 2.60 (token auth on by default) ran it with a token
    the drivers they start in other processes did not have, and refused them."""
    items.sort(key=lambda item: item.path.name != "test_fleet.py")  # stable: the rest keep their order


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
    import ray
    from run_helpers import start_local_ray

    start_local_ray()
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def module_ray():
    """A local Ray shared by a module's tests (each starts its own actors)."""
    import ray
    from run_helpers import start_local_ray

    start_local_ray()
    yield
    ray.shutdown()
