"""Keep freed memory in the process while a large job runs (glibc only).

A comparison at 100 symbols x 100,000 bars allocates and frees arrays of 80-640 MB many
times over (features, feature matrices, sorts, simulation inputs). glibc serves every
allocation above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and gives it back
with ``munmap`` when freed, so every such array pays the kernel's first-touch page faults
again; on the 2-core CI VM that was about a third of ``compare()``'s wall time
(benchmarks/compare.py: 16-17 s -> 11.6 s, the bare vectorbt call unchanged). Engines with
the same allocation pattern ship their own allocator for this reason (Polars and DuckDB link
jemalloc).

:func:`retained_heap` asks glibc (``mallopt``) to serve large blocks from the heap and not to
trim it while the job runs, so freed blocks are reused without new faults; on exit it returns
the free memory to the system (``malloc_trim``) and sets the thresholds back to glibc's
static defaults (glibc has no getter: its *dynamic* mmap threshold, which only rises, stays
off afterwards). Elsewhere (no glibc, or ``MODELYARD_RETAIN_HEAP=0``) it does nothing.
Nested and concurrent uses count: the outermost exit restores.

:func:`retain_heap_for_process` sets the same for good, for worker processes that only run
modelyard's shards (``warm_worker``): a trim after every task would hand the next task fresh
pages again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["retain_heap_for_process", "retained_heap"]

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
# glibc's defaults (malloc/malloc.c): what the exit sets back
_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_TOP_PAD: 128 * 1024, _M_MMAP_MAX: 65536}
_RETAINED = {_M_TRIM_THRESHOLD: 2**31 - 1, _M_TOP_PAD: 64 * 1024 * 1024, _M_MMAP_MAX: 0}

_lock = threading.Lock()
_depth = 0
_active = False  # the outermost use applied the setting
_libc: Any = None


def _glibc() -> Any:
    """The C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    global _libc
    if _libc is None:
        _libc = False
        name = ctypes.util.find_library("c")
        if name:
            try:
                lib = ctypes.CDLL(name)
                if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim"):
                    _libc = lib
            except OSError:
                pass
    return _libc or None


def _enabled() -> bool:
    return os.environ.get("MODELYARD_RETAIN_HEAP", "1") != "0"


def _set(values: dict[int, int]) -> bool:
    lib = _glibc()
    if lib is None:
        return False
    return all(lib.mallopt(ctypes.c_int(k), ctypes.c_int(v)) == 1 for k, v in values.items())


@contextmanager
def retained_heap() -> Iterator[bool]:
    """Within: large blocks come from (and go back to) the heap, not fresh mappings. Yields
    whether the setting took effect."""
    global _depth, _active
    with _lock:
        _depth += 1
        if _depth == 1:
            _active = _enabled() and _set(_RETAINED)
        active = _active
    try:
        yield active
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _active:
                _active = False
                _glibc().malloc_trim(ctypes.c_size_t(0))
                if not _set(_DEFAULTS):
                    log.debug("could not restore glibc's malloc thresholds")


def retain_heap_for_process() -> bool:
    """:func:`retained_heap`'s setting for the rest of this process, never trimmed back: for a
    worker process that only runs modelyard's shards (``warm_worker``), where every task would
    otherwise map and fault its arrays afresh. ``MODELYARD_RETAIN_HEAP=0`` turns it off.
    Returns whether it took effect."""
    global _depth, _active
    if not _enabled():
        return False
    with _lock:
        if _depth == 0 or not _active:
            _active = _set(_RETAINED)
        _depth += 1  # held for good: the outermost exit never comes
        return _active
