"""Fault a lazily allocated ring's pages in ahead of its write cursor, on a thread of its own.

The ring's memory is mapped on first write (`replay.lazy_zeros`), and on a VM that first write
costs far more than the copy itself: measured on the project's 2-core VM, 3.1 MB of fresh
128x128 images took 5-15 ms to write into never-touched pages against ~1 ms into touched ones,
and an add_chunk stream of two-camera chunks ran ~6x faster into a touched ring. So a helper
thread populates the next `ahead_bytes` past the cursor (MADV_POPULATE_WRITE, Linux >= 5.14, via
ctypes so the GIL is released) and add_chunk mostly finds its pages ready. RAM still grows with
the data, by at most `ahead_bytes` more; where the call is missing nothing is prefaulted.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading

import numpy as np

MADV_POPULATE_WRITE = 23
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
STEP_BYTES = 8 << 20  # populate in pieces, so a stop or a new target is seen soon

_madvise = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        _madvise = _libc.madvise
        _madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        _madvise.restype = ctypes.c_int
    except (OSError, AttributeError):
        _madvise = None


def populate(a: np.ndarray, row0: int, row1: int) -> bool:
    """Fault in rows [row0, row1) of a C-contiguous array for writing. False if unsupported."""
    if _madvise is None or row1 <= row0:
        return _madvise is not None
    row_bytes = a.strides[0]
    start = a.ctypes.data + row0 * row_bytes
    end = a.ctypes.data + row1 * row_bytes
    start -= start % PAGE
    return _madvise(start, end - start, MADV_POPULATE_WRITE) == 0


class Prefaulter:
    """Keeps `arrays` (each `rows` long, rows in the same order) populated `ahead_bytes` past a cursor."""

    def __init__(self, arrays: dict[str, np.ndarray], rows: int, ahead_bytes: int = 128 << 20):
        self.arrays = {k: a for k, a in arrays.items() if a.flags.c_contiguous}
        self.rows = rows
        row_bytes = sum(a.strides[0] for a in self.arrays.values()) or 1
        self.ahead_rows = max(1, ahead_bytes // row_bytes)
        self.step_rows = max(1, STEP_BYTES // row_bytes)
        self._done = -1  # rows [0, _done) are populated (or were written before we started)
        self._target = 0
        self._lock = threading.Lock()
        self._running = False  # a thread runs only while there is work: it never outlives its buffer
        self._closed = _madvise is None or not self.arrays

    def advance(self, cursor: int) -> None:
        """The writer is at row `cursor`: keep rows up to cursor + ahead populated."""
        if self._closed:
            return
        with self._lock:
            self._done = max(self._done, cursor)
            self._target = min(self.rows, max(self._target, cursor + self.ahead_rows))
            if self._running or self._done >= self._target:
                return
            self._running = True
        threading.Thread(target=self._run, name="ring-prefault", daemon=True).start()

    def close(self) -> None:
        self._closed = True

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed or self._done >= self._target:
                    self._running = False
                    return
                r0 = self._done
                r1 = min(self._target, r0 + self.step_rows)
            for a in self.arrays.values():
                if not populate(a, r0, r1):
                    self._closed = True  # the kernel refuses it (older than 5.14): writes fault instead
            with self._lock:
                self._done = max(self._done, r1)
                if self._done >= self.rows:
                    self._closed = True
