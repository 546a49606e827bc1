"""Run :func:`~modelyard.strategies.compare.compare` serially, on a process pool or on Dask.

``compare(..., executor=...)`` splits the per-symbol work into shards
(:mod:`~modelyard.scale.shards`), runs them where :func:`resolve_executor` says, and combines
them in symbol order: the result is the same to the last bit whichever executor ran it.
:func:`local_cluster` starts a local Dask cluster tuned and warmed for this work. Dask is an
optional extra (``pip install 'modelyard[dask]'``): nothing here imports it until asked.
"""

from modelyard.scale.cluster import local_cluster, warm_workers
from modelyard.scale.executors import (
    EXECUTOR_NAMES,
    Runner,
    WorkerLost,
    gather_worker_state,
    resolve_executor,
    shard_size_for,
)
from modelyard.scale.shards import ShardFailure, warm_worker, worker_state

__all__ = [
    "EXECUTOR_NAMES",
    "Runner",
    "ShardFailure",
    "WorkerLost",
    "gather_worker_state",
    "local_cluster",
    "resolve_executor",
    "shard_size_for",
    "warm_worker",
    "warm_workers",
    "worker_state",
]
