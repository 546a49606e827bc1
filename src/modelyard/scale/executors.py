"""Where the shards of a run execute: in the caller, on a process pool or on a Dask cluster.

:func:`resolve_executor` turns what a user passes as ``executor`` into a :class:`Runner`:

============================== ==========================================================
``None`` or ``"serial"``       in this process, one shard after the other
``"threads"``                  a ``ThreadPoolExecutor`` of ``workers`` threads in this process:
                               nothing is copied or pickled; the kernels (features, ONNX,
                               ranks, moments) release the GIL, vectorbt's simulation holds it
``"processes"``                a ``ProcessPoolExecutor`` of ``workers`` processes (forkserver
                               start, each warmed by :func:`~modelyard.scale.shards.warm_worker`)
``"dask"``                     a tuned local Dask cluster (:func:`~modelyard.scale.local_cluster`)
``"tcp://host:port"``          the Dask scheduler at that address (any ``scheme://`` works)
a ``concurrent.futures.Executor``  that executor (not shut down here)
a ``distributed.Client``       that client (not closed here)
============================== ==========================================================

What the runner creates (pools, clusters, clients) it closes when its context exits; what the
caller passed in stays open. :meth:`Runner.map` returns results in call order whatever the
completion order, and retries a call whose worker died: Dask reschedules it itself
(``retries=`` on submit for exceptions; the scheduler's ``allowed-failures``, default 3, when
a worker dies running it). A ``concurrent.futures`` process pool breaks as a whole when one
process dies (``BrokenProcessPool``) and every unfinished call fails with it, so those are
resubmitted to a fresh pool of the same size; once a call has been caught in ``retries``
breaks, the remaining calls run one at a time, so that a break names its call and a shard
that kills its worker every time does not take the others down with it. A call that broke
its pool more than ``retries`` times comes back as :class:`WorkerLost`; any other exception
propagates.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import difflib
import functools
import logging
import multiprocessing
import os
import socket
import sys
import threading
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence, Sized
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from modelyard.errors import ConfigError

__all__ = [
    "EXECUTOR_NAMES",
    "Batch",
    "Runner",
    "WorkerLost",
    "gather_worker_state",
    "resolve_executor",
    "shard_size_for",
    "symbol_shards",
]

log = logging.getLogger(__name__)

EXECUTOR_NAMES: tuple[str, ...] = ("serial", "threads", "processes", "dask")
DEFAULT_RETRIES = 2
Done = Callable[[int, int], None]


@dataclass(frozen=True)
class WorkerLost:
    """A call whose worker died on every attempt."""

    message: str
    attempts: int


#: rows (symbols x bars) a shard holds at most by default: one batched inference over far
#: more spends its time on page faults (100 x 100k bars in one shard: features and inference
#: 16.5 s and 7.8 GiB peak; in shards of 10-25 symbols: 9 s and 4.3-5.5 GiB)
SHARD_ROWS = 2_000_000


def shard_size_for(
    n_symbols: int, workers: int, shard_size: int | None = None, *, n_rows: int = 0
) -> int:
    """``shard_size`` if given, else ``ceil(n / (2 * workers))`` (one shard when serial),
    lowered so that a shard holds about :data:`SHARD_ROWS` of the run's ``n_rows`` at most."""
    if shard_size is not None:
        if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"shard_size must be a positive int, got {shard_size!r}")
        return shard_size
    size = max(n_symbols, 1) if workers <= 1 else max(-(-n_symbols // (2 * workers)), 1)
    if n_rows > SHARD_ROWS:
        size = min(size, max(-(-n_symbols * SHARD_ROWS // n_rows), 1))
    return size


def symbol_shards(
    bars: Mapping[str, Sized], names: Sequence[str], workers: int, shard_size: int | None = None
) -> list[tuple[str, ...]]:
    """``names`` in consecutive shards of :func:`shard_size_for` symbols, sized from the rows
    of their ``bars`` (one shard when serial)."""
    n_rows = sum(len(bars[s]) for s in names)
    size = shard_size_for(len(names), workers, shard_size, n_rows=n_rows)
    return [tuple(names[k : k + size]) for k in range(0, len(names), size)]


class Batch:
    """Calls started by :meth:`Runner.start`; :meth:`gather` waits for them."""

    def __init__(self, gather: Callable[[Done], list[Any]]) -> None:
        self._gather = gather

    def gather(self, done: Done) -> list[Any]:
        """Results in call order (``done(finished, total)`` after each)."""
        return self._gather(done)


class Runner:
    """Runs a pure function over calls; see the module docstring."""

    kind = "serial"
    #: True when calls run in this process (they may share its objects)
    in_process = True

    def __init__(self, workers: int = 1, retries: int = DEFAULT_RETRIES) -> None:
        self.workers = workers
        self.retries = retries

    def start(
        self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], *, name: str
    ) -> Batch:
        """Start ``fn(*call)`` for every call (a serial runner runs them in :meth:`Batch.gather`,
        the others now, so the caller can work meanwhile)."""

        def gather(done: Done) -> list[Any]:
            out = []
            for args in calls:
                out.append(fn(*args))
                done(len(out), len(calls))
            return out

        return Batch(gather)

    def map(
        self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], *, name: str, done: Done
    ) -> list[Any]:
        return self.start(fn, calls, name=name).gather(done)

    def describe(self) -> str:
        return "serial"

    def close(self) -> None:
        """Release what this runner created."""


class FuturesRunner(Runner):
    """A ``concurrent.futures.Executor``; a broken process pool is replaced (module docstring)."""

    kind = "futures"

    def __init__(self, pool: cf.Executor, *, owned: bool, retries: int) -> None:
        self.pool = pool
        self.in_process = isinstance(pool, cf.ThreadPoolExecutor)
        self._owned: list[cf.Executor] = [pool] if owned else []
        super().__init__(_pool_size(pool), retries)

    def describe(self) -> str:
        return f"{type(self.pool).__name__}({self.workers})"

    def start(
        self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], *, name: str
    ) -> Batch:
        self._replace_pool()  # if a caller's pool broke before
        first = {self.pool.submit(fn, *args): i for i, args in enumerate(calls)}
        return Batch(lambda done: self._gather(fn, calls, name, first, done))

    def _gather(
        self,
        fn: Callable[..., Any],
        calls: Sequence[tuple[Any, ...]],
        name: str,
        futures: dict[cf.Future[Any], int],
        done: Done,
    ) -> list[Any]:
        results: dict[int, Any] = {}
        attempts: Counter[int] = Counter()
        pending = set(range(len(calls)))
        alone = False  # after repeated breaks: one call in flight, so a break names its call
        while True:
            broken: BaseException | None = None
            try:
                for future in cf.as_completed(futures):
                    i = futures[future]
                    try:
                        results[i] = future.result()
                    except BrokenProcessPool as exc:
                        broken = exc
                        continue
                    pending.discard(i)
                    done(len(results), len(calls))
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
            if broken is not None:
                unfinished = [i for i in futures.values() if i in pending]
                for i in unfinished:
                    attempts[i] += 1
                if alone and attempts[unfinished[0]] > self.retries:
                    i = unfinished[0]
                    results[i] = WorkerLost(f"{type(broken).__name__}: {broken}", attempts[i])
                    pending.discard(i)
                    done(len(results), len(calls))
                alone = alone or any(attempts[i] >= self.retries for i in pending)
                log.warning(
                    "%s: a worker process died during %s call(s) %s; %d call(s) left, %s",
                    self.describe(),
                    name,
                    unfinished,
                    len(pending),
                    "one at a time" if alone else "on a fresh pool",
                )
                self._replace_pool()
            if not pending:
                return [results[i] for i in range(len(calls))]
            batch = [min(pending)] if alone else sorted(pending)
            futures = {self.pool.submit(fn, *calls[i]): i for i in batch}

    def _replace_pool(self) -> None:
        """A fresh pool of the same kind and size if the current one is broken (once, however
        many batches saw it break)."""
        old = self.pool
        if not getattr(old, "_broken", False):
            return
        if not isinstance(old, cf.ProcessPoolExecutor):
            raise RuntimeError(f"{type(old).__name__} is broken and cannot be replaced")
        new = cf.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=getattr(old, "_mp_context", None),
            initializer=getattr(old, "_initializer", None),
            initargs=getattr(old, "_initargs", ()),
        )
        if old in self._owned:
            self._owned.remove(old)
            old.shutdown(wait=True, cancel_futures=True)
        self._owned.append(new)
        self.pool = new

    def close(self) -> None:
        for pool in self._owned:
            pool.shutdown(wait=True, cancel_futures=True)
        self._owned.clear()


class DaskRunner(Runner):
    """A ``distributed.Client``: one task per call, results gathered as they complete.

    Results and shared arguments move straight between this process and the workers
    (``direct``) when the client asks for it (``direct_to_workers=True``), or, when it leaves
    it open (Dask's default), when the scheduler and every worker are on this machine. Dask
    otherwise relays them through the scheduler: one more copy in and out, which on a 2-core
    machine competes with the workers (40 x 20,000 bars: 0.83 s a run relayed, 0.78 s
    direct). A remote cluster keeps Dask's relay unless the client says otherwise (its workers
    may not be reachable from here).
    """

    kind = "dask"
    in_process = False

    def __init__(self, client: Any, *, owned: list[Any], retries: int) -> None:
        self.client = client
        self._owned = owned  # closed in this order (client before its cluster)
        workers = client.nthreads()
        # the workers when the run started: a preference for placing tasks, and what a
        # broadcast waits for (each nthreads() is a round trip to the scheduler)
        self.addresses = list(workers)
        self.direct = _direct_transfers(client, self.addresses)
        super().__init__(max(sum(workers.values()), 1), retries)

    def describe(self) -> str:
        return f"dask {self.client.scheduler.address} ({self.workers} threads)"

    def start(
        self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], *, name: str
    ) -> Batch:
        token = uuid.uuid4().hex[:10]
        # an argument that several calls share (the same object) goes to every worker once
        uses = Counter(id(a) for args in calls for a in args)
        sent: dict[int, Any] = {}
        for args in calls:
            for a in args:
                if uses[id(a)] > 1 and id(a) not in sent:
                    sent[id(a)] = _Shared(self, a).argument()
        # A batch of at most one call per worker (the account tasks) is spread
        # over the workers, one each, as a preference (another worker may still take one):
        # placing tasks that depend on broadcast data while every worker was busy, the
        # scheduler was seen to queue two on one worker and leave the other idle (a run
        # 1.1 s instead of 0.8 s, one run in three).
        workers = self.addresses if len(calls) > 1 else []
        spread = 1 < len(calls) <= len(workers)
        with warnings.catch_warnings():
            # each shard's bars are sent once per stage; that is the design, not a repetition
            warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
            futures = [
                self.client.submit(
                    fn,
                    *(sent.get(id(a), a) for a in args),
                    key=f"modelyard-{name}-{i}-{token}",
                    retries=self.retries,
                    workers=[workers[i]] if spread else None,
                    allow_other_workers=spread,
                )
                for i, args in enumerate(calls)
            ]
        return Batch(lambda done: self._gather(futures, done))

    def _gather(self, futures: list[Any], done: Done) -> list[Any]:
        from distributed import KilledWorker, as_completed

        position = {f.key: i for i, f in enumerate(futures)}
        results: dict[int, Any] = {}
        try:
            for future in as_completed(futures):  # type: ignore[no-untyped-call]
                i = position[future.key]
                if future.status == "error":
                    exc = future.exception()
                    if not isinstance(exc, KilledWorker):
                        raise exc
                    results[i] = WorkerLost(f"KilledWorker: {exc}", self.retries + 1)
                else:
                    results[i] = self.client.gather(future, direct=self.direct)
                done(len(results), len(futures))
        finally:
            unfinished = [f for f in futures if not f.done()]
            if unfinished:
                self.client.cancel(unfinished)
        return [results[i] for i in range(len(futures))]

    def close(self) -> None:
        for thing in self._owned:
            thing.close()
        self._owned.clear()


class _Shared:
    """A value on its way to every worker of a :class:`DaskRunner` (a broadcast scatter, on a
    thread of its own so that it can be given up).

    :meth:`argument` is its Dask future once every worker has it. A worker lost while the
    broadcast runs can leave it waiting for good (Dask replicates to the workers it started
    with), so when a worker of those is gone before it is done, :meth:`argument` gives the
    value itself instead: it then travels inside each task, which any worker can run.

    Sending the run's layout this way early, while the workers computed the signals, was
    tried: the copies competed with the signals for the 2 cores and the run got slower
    (0.86 against 0.82 s)."""

    def __init__(self, runner: DaskRunner, value: Any) -> None:
        self.value = value
        self._client = runner.client
        self._workers = set(runner.addresses)
        self._future: Any = None
        self._done = threading.Event()
        thread = threading.Thread(
            target=self._send, args=(runner.direct,), name="modelyard-share", daemon=True
        )
        thread.start()

    def _send(self, direct: bool) -> None:
        try:
            self._future = self._client.scatter(
                [self.value], broadcast=True, hash=False, direct=direct
            )[0]
        except Exception as exc:  # the value travels inside the tasks instead
            log.warning("broadcast to the workers failed (%s); sending it with each task", exc)
        finally:
            self._done.set()

    def argument(self) -> Any:
        """The future when every worker has the value, else the value (class docstring)."""
        while not self._done.wait(0.05):
            if not self._workers <= set(self._client.nthreads()):
                log.warning("a worker was lost during a broadcast; sending it with each task")
                return self.value
        return self.value if self._future is None else self._future


def _direct_transfers(client: Any, workers: Sequence[str]) -> bool:
    """:attr:`DaskRunner.direct`: the client's ``direct_to_workers`` when set, else whether the
    scheduler and every worker of ``workers`` (addresses) are on this machine."""
    if client.direct_to_workers is not None:
        return bool(client.direct_to_workers)
    return all(_on_this_machine(a) for a in [client.scheduler.address, *workers])


def _on_this_machine(address: str) -> bool:
    scheme, _, rest = address.partition("://")
    if scheme == "inproc":
        return True
    host = urlsplit(f"//{rest}").hostname
    return host is not None and host in _local_hosts()


@functools.cache
def _local_hosts() -> frozenset[str]:
    names = {"localhost", "127.0.0.1", "::1", socket.gethostname()}
    with contextlib.suppress(OSError):
        names.update(socket.gethostbyname_ex(socket.gethostname())[2])
    return frozenset(names)


def _pool_size(pool: cf.Executor) -> int:
    size = getattr(pool, "_max_workers", None)
    return int(size) if isinstance(size, int) and size > 0 else os.cpu_count() or 1


def _is_client(obj: object) -> bool:
    if "distributed" not in sys.modules:
        return False
    from distributed import Client

    return isinstance(obj, Client)


def _workers(workers: int | None) -> int:
    if workers is None:
        return os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    return workers


def process_pool(workers: int | None = None, *, warm: bool = True) -> cf.ProcessPoolExecutor:
    """The pool ``"processes"`` makes: forkserver start (no fork of a threaded process), each
    process warmed once at start for the comparison's shards (``warm``)."""
    from modelyard.scale.shards import warm_worker

    return cf.ProcessPoolExecutor(
        max_workers=_workers(workers),
        mp_context=multiprocessing.get_context("forkserver"),
        initializer=warm_worker if warm else None,
    )


def _runner(spec: object, workers: int | None, retries: int, warm: bool) -> Runner:
    if spec is None or spec == "serial":
        if workers not in (None, 1):
            raise ValueError(
                f"workers={workers} needs executor='threads', 'processes' or 'dask', not serial"
            )
        return Runner(1, retries)
    if isinstance(spec, cf.Executor) or _is_client(spec):
        if workers is not None:
            raise ValueError("workers applies to executor='threads', 'processes' or 'dask' only")
        if isinstance(spec, cf.Executor):
            return FuturesRunner(spec, owned=False, retries=retries)
        return DaskRunner(spec, owned=[], retries=retries)
    if not isinstance(spec, str):
        raise ValueError(
            "executor must be None, 'serial', 'threads', 'processes', 'dask', 'tcp://host:port', a "
            f"concurrent.futures.Executor or a distributed.Client; got {type(spec).__name__}"
        )
    if spec == "processes":
        return FuturesRunner(process_pool(workers, warm=warm), owned=True, retries=retries)
    if spec == "threads":
        pool = cf.ThreadPoolExecutor(_workers(workers), thread_name_prefix="modelyard-shard")
        return FuturesRunner(pool, owned=True, retries=retries)
    if spec == "dask" or "://" in spec:
        try:
            from distributed import Client
        except ImportError as exc:
            raise ConfigError(
                f"executor {spec!r} needs Dask: pip install 'modelyard[dask]'", key="executor"
            ) from exc
        if spec == "dask":
            from modelyard.scale.cluster import local_cluster

            cluster = local_cluster(n_workers=_workers(workers), warm=warm)
            try:
                client = Client(cluster)  # type: ignore[no-untyped-call]
            except BaseException:
                cluster.close()
                raise
            return DaskRunner(client, owned=[client, cluster], retries=retries)
        if workers is not None:
            raise ValueError(f"workers applies to a cluster modelyard starts, not to {spec}")
        try:
            client = Client(spec, timeout="20s")  # type: ignore[no-untyped-call]
        except OSError as exc:
            raise ConfigError(
                f"cannot reach the Dask scheduler at {spec}: {exc}", key="executor"
            ) from exc
        return DaskRunner(client, owned=[client], retries=retries)
    hint = difflib.get_close_matches(spec, EXECUTOR_NAMES, n=1)
    raise ValueError(
        f"unknown executor {spec!r}; use one of {', '.join(EXECUTOR_NAMES)} or tcp://host:port"
        + (f". Did you mean {hint[0]!r}?" if hint else "")
    )


@contextmanager
def resolve_executor(
    spec: object = None,
    *,
    workers: int | None = None,
    retries: int = DEFAULT_RETRIES,
    warm: bool = True,
) -> Iterator[Runner]:
    """The :class:`Runner` for ``spec`` (module docstring); closes what it created on exit.
    ``warm``: the processes it starts compile the comparison's kernels first
    (:func:`~modelyard.scale.shards.warm_worker`); work that runs none of them skips it."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an int >= 0, got {retries!r}")
    runner = _runner(spec, workers, retries, warm)
    try:
        yield runner
    finally:
        runner.close()


def gather_worker_state(executor: object) -> dict[str, dict[str, Any]]:
    """:func:`~modelyard.scale.shards.worker_state` of every worker, keyed by worker.

    A ``distributed.Client`` answers through ``client.run``; a process pool through one call
    per process, held at a barrier so that each process answers exactly once.
    """
    from modelyard.scale.shards import worker_state

    if executor is None:
        return {"local": worker_state()}
    if _is_client(executor):
        states: dict[str, dict[str, Any]] = executor.run(worker_state)  # type: ignore[attr-defined]
        return states
    if isinstance(executor, cf.ProcessPoolExecutor):
        n = _pool_size(executor)
        with multiprocessing.Manager() as manager:
            barrier = manager.Barrier(n)
            futures = [executor.submit(_state_at_barrier, barrier) for _ in range(n)]
            found = [f.result(timeout=120) for f in futures]
        return {str(s["pid"]): s for s in found}
    if isinstance(executor, cf.Executor):
        return {"local": executor.submit(worker_state).result()}
    raise ValueError(f"cannot gather worker state from {type(executor).__name__}")


def _state_at_barrier(barrier: Any) -> dict[str, Any]:
    from modelyard.scale.shards import worker_state

    barrier.wait(timeout=60)
    return worker_state()
