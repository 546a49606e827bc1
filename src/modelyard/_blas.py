"""BLAS on one thread, for work whose last bits must not depend on the process it runs in."""

from __future__ import annotations

import contextlib
from typing import Any

__all__ = ["one_blas_thread"]


def one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """BLAS on one thread: a multi-threaded OpenBLAS dot product sums in another order than a
    single-threaded one, so a shard's last bits would depend on the process it runs in (Dask's
    nanny sets ``OPENBLAS_NUM_THREADS=1``, a driver uses every core). The IC itself no longer
    calls BLAS (numba moments, :mod:`modelyard.models.metrics`); this guards any BLAS call a
    shard still makes (numpy, pandas)."""
    global _CONTROLLER
    from threadpoolctl import ThreadpoolController

    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    limited: contextlib.AbstractContextManager[Any] = _CONTROLLER.limit(limits=1, user_api="blas")
    return limited


_CONTROLLER: Any = None
