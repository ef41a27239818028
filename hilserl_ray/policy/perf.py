"""CPU settings that decide whether the learner keeps up on a small shared machine.

- glibc returns every freed block above 32 MB to the OS, so each batch's float image tensor
  (256 x 3 x 128 x 128 x 4 B = 50 MB) is page-faulted in afresh: ~25 ms per conversion instead
  of ~2 ms. `tune_allocator` raises the mmap/trim thresholds so such blocks are reused.
- OpenMP threads that spin while another process holds the core turn a 0.25 s update into
  seconds: on this 2-core machine shared with other jobs, bench/learner_speed.py measured
  0.4-0.66 updates/s (one camera) with the default wait policy and 2.6-4.1/s with
  OMP_WAIT_POLICY=PASSIVE in the same minutes. libgomp reads it once, when torch loads, so it must
  be in the process environment (e.g. Ray `runtime_env={"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}}`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import torch

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_tuned = False


def tune_allocator(mmap_threshold: int = 1 << 30, trim_threshold: int = 1 << 31) -> bool:
    """Keep large freed blocks in the heap (glibc only; a no-op elsewhere). Idempotent."""
    global _tuned
    if _tuned:
        return True
    name = ctypes.util.find_library("c")
    if not name or os.name != "posix":
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = (
            libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1
            and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1
        )
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    _tuned = ok
    return ok


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def configure_cpu(threads: int | None = None) -> int:
    """Learner process setup: allocator tuning + one torch thread per available core."""
    tune_allocator()
    n = threads or available_cores()
    torch.set_num_threads(n)
    return n
