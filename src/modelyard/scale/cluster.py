"""A local Dask cluster tuned for modelyard shards.

:func:`local_cluster` starts a ``LocalCluster`` of worker *processes* (one thread each by
default: the shards are CPU-bound numpy/numba/onnxruntime work that holds the GIL often) with
two of Dask's defaults changed, each measured to cost 20-45 % CPU per shard on this workload
(../shared/PITFALLS.md):

* the worker profiler is off (``distributed.worker.profile.enabled: False``);
* ``MALLOC_TRIM_THRESHOLD_`` is not set in the workers' environment (the nanny sets it from
  ``distributed.nanny.pre-spawn-environ``; the other entries, one BLAS/OpenMP thread, stay).

It then warms every worker (:func:`~modelyard.scale.shards.warm_worker`, pinned to it), so
numba's compile of the vectorbt kernels that are not cached on disk happens at start-up and not
inside the first shard, and glibc keeps the worker's freed memory in its heap
(:func:`~modelyard._memory.retain_heap_for_process`). A worker the nanny restarts after a crash
starts cold.

A script that starts it needs the ``if __name__ == "__main__":`` guard: worker processes are
spawned and re-import the main module.
"""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["local_cluster", "warm_workers"]

log = logging.getLogger(__name__)


def tuned_config() -> dict[str, Any]:
    """The Dask config :func:`local_cluster` starts its workers with."""
    import dask

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    return {
        "distributed.worker.profile.enabled": False,
        "distributed.nanny.pre-spawn-environ": environ,
    }


def local_cluster(
    n_workers: int = 2,
    *,
    threads_per_worker: int = 1,
    warm: bool = True,
    dashboard_address: str | None = None,
    **kwargs: Any,
) -> Any:
    """A started, warmed ``distributed.LocalCluster`` of ``n_workers`` processes.

    ``dashboard_address`` (e.g. ``":8787"``) turns the dashboard on; other keyword arguments
    go to ``LocalCluster``. Close it (or use it as a context manager) when done, after any
    ``Client`` on it.
    """
    import dask
    from distributed import LocalCluster

    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise ValueError(f"n_workers must be a positive int, got {n_workers!r}")
    started = time.perf_counter()
    if dashboard_address is None:
        # no dashboard; the scheduler's HTTP server (health, metrics) still starts: on a free
        # port, not on 8787 with a "port in use" warning when another cluster runs
        kwargs["scheduler_kwargs"] = {
            "dashboard": False,
            "dashboard_address": ":0",
            **kwargs.get("scheduler_kwargs", {}),
        }
    with dask.config.set(tuned_config()):
        cluster = LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            dashboard_address=dashboard_address,
            **kwargs,
        )
    try:
        if warm:
            warm_workers(cluster)
    except BaseException:
        cluster.close()
        raise
    log.info(
        "local Dask cluster %s: %d workers x %d threads ready in %.1fs",
        cluster.scheduler_address,
        n_workers,
        threads_per_worker,
        time.perf_counter() - started,
    )
    return cluster


def warm_workers(target: Any) -> dict[str, dict[str, Any]]:
    """Run :func:`~modelyard.scale.shards.warm_worker` once on every worker of ``target`` (a
    cluster or a ``Client``), as ordinary tasks pinned to each worker (the workers' event loops
    stay responsive during the compile). Returns each worker's report.

    Warming also keeps each worker process's freed memory in glibc's heap for good
    (:func:`~modelyard._memory.retain_heap_for_process`): meant for processes that run
    modelyard's shards. A cluster of threads in this process (``processes=False``) would keep
    this process's heap too; set ``MODELYARD_RETAIN_HEAP=0`` there, or do not warm it."""
    from distributed import Client

    from modelyard.scale.shards import warm_worker

    own = not isinstance(target, Client)
    client = Client(target) if own else target  # type: ignore[no-untyped-call]
    try:
        workers = list(client.nthreads())
        futures = [
            client.submit(
                warm_worker,
                key=f"modelyard-warm-{n}-{address}",
                workers=[address],
                allow_other_workers=False,
                pure=False,
            )
            for n, address in enumerate(workers)
        ]
        reports: list[dict[str, Any]] = client.gather(futures)
        return dict(zip(workers, reports, strict=True))
    finally:
        if own:
            client.close()
