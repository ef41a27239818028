"""The ring prefaulter: pages ahead of the cursor become resident, data is never changed."""

from __future__ import annotations

import time

import pytest

from hilserl_ray.buffer.prefault import Prefaulter, populate
from hilserl_ray.buffer.replay import lazy_zeros


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def test_prefaulter_populates_ahead_of_the_cursor_without_touching_data():
    a = lazy_zeros((4096, 16, 1024), "uint8")  # 64 MiB, untouched
    if not populate(a, 0, 1):
        pytest.skip("MADV_POPULATE_WRITE not supported by this kernel")
    a[:64] = 7  # rows the writer already holds
    before = rss_mb()
    p = Prefaulter({"a": a}, rows=len(a), ahead_bytes=16 << 20)
    p.advance(64)
    deadline = time.time() + 30
    while p._running and time.time() < deadline:
        time.sleep(0.01)
    grown = rss_mb() - before
    assert 12 <= grown <= 24, f"expected ~16 MiB populated ahead of the cursor, RSS grew {grown:.1f} MiB"
    assert (a[:64] == 7).all() and not a[64:].any()  # populating never writes data
