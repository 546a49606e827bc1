"""Batches of orders: the request and result types, and :class:`Poster`, the POST side of
:class:`~modelyard.brokers.executor.OrderExecutor` (see its module docstring)."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from modelyard.brokers.alpaca_client import AlpacaClient, BrokerOrder, ClockInfo, OutcomeUnknown
from modelyard.brokers.journal import Intent, JournalOrder
from modelyard.errors import BrokerError, BrokerUnavailable, OrderRejected

__all__ = [
    "CLOCK_MAX_AGE_S",
    "POST_WORKERS",
    "Answer",
    "OrderRequest",
    "Plan",
    "Poster",
    "SubmitResult",
]

logger = logging.getLogger("modelyard.brokers.executor")
Side = Literal["buy", "sell"]
POST_WORKERS = 8  # <= requests' default pool size (10) of each worker's own session
CLOCK_MAX_AGE_S = 1.0  # a prefetched venue clock older than this is read again


@dataclass(frozen=True)
class OrderRequest:
    """One order of a batch (the arguments of :meth:`OrderExecutor.submit`)."""

    symbol: str
    side: Side
    decision_bar_ts: datetime
    qty: float | None = None
    notional: float | None = None
    price: float | None = None
    order_type: Literal["market", "limit"] = "market"
    limit_price: float | None = None
    time_in_force: str | None = None


@dataclass(frozen=True)
class SubmitResult:
    """The outcome of one order of :meth:`OrderExecutor.submit_many`.

    ``error`` is what :meth:`OrderExecutor.submit` raises: :class:`ValueError` or a
    :class:`BrokerError` before anything was journaled (``row`` is ``None``),
    :class:`RiskLimitBreached` / :class:`OrderRejected` with the row journaled ``failed``.
    ``row.state == "submitted"`` without an error: the outcome is still unknown.
    """

    request: OrderRequest
    row: JournalOrder | None = None
    error: Exception | None = None
    answered_at: float = 0.0  # perf_counter() when the outcome was known


@dataclass
class Plan:
    """An order between validation and the journal."""

    index: int
    request: OrderRequest
    intent: Intent
    asset_class: str
    ref: float
    failed: str | None = None  # born failed with this reason (local problem or risk)
    error: Exception | None = None


@dataclass(frozen=True)
class Answer:
    """What the venue said to one POST (decided off the journal lock, journaled after)."""

    row: JournalOrder
    order: BrokerOrder | None = None  # adopt it
    failed: str | None = None  # journal failed (a synchronous refusal)
    error: Exception | None = None  # raised by submit()
    at: float = 0.0


class Poster:
    """The POST side of :class:`~modelyard.brokers.executor.OrderExecutor`: ``client`` for
    single orders, a pool of ``post_workers`` threads (each with its own client from
    ``client_factory``) for batches, and the bar step's prefetched venue clock. It never writes
    the journal: each POST becomes an :class:`Answer` that the executor journals."""

    def __init__(
        self,
        client: AlpacaClient,
        client_factory: Callable[[], AlpacaClient] | None,
        post_workers: int,
        max_resubmits: int,
        stage: Callable[[str, str], None],
    ) -> None:
        if post_workers < 1:
            raise ValueError("post_workers must be >= 1")
        self.client = client
        self.post_workers = post_workers
        self.max_resubmits = max_resubmits
        self._stage = stage
        self._client_factory = client_factory
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._worker_clients: list[AlpacaClient] = []
        self._closed_counts: Counter[str] = Counter()  # of worker clients closed by close()
        self._pool_lock = threading.Lock()
        self._clock: tuple[float, Future[ClockInfo]] | None = None  # (monotonic, prefetch)

    def close(self) -> None:
        """Stop the POST workers and close their clients (``client`` stays the caller's)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        with self._pool_lock:
            clients, self._worker_clients = self._worker_clients, []
            for client in clients:
                self._closed_counts.update(client.request_counts)
        for client in clients:
            client.close()

    def request_counts(self) -> dict[str, int]:
        """Requests per endpoint over ``client`` and the POST workers' clients."""
        with self._pool_lock:
            total = Counter(self._closed_counts)
            for client in [self.client, *self._worker_clients]:
                total.update(dict(client.request_counts))
        return dict(total)

    def prefetch_clock(self) -> None:
        """Start reading the venue clock on a POST worker for the next batch (the broker calls
        this when a bar step begins, so the GET overlaps the strategy's work). The next batch
        takes it when it was asked for at most ``CLOCK_MAX_AGE_S`` ago; one read, one batch."""
        if self._client_factory is None or self.post_workers == 1:
            return
        with self._pool_lock:
            if self._clock is not None and time.monotonic() - self._clock[0] < CLOCK_MAX_AGE_S:
                return
        future = self._workers().submit(self._clock_on_worker)
        with self._pool_lock:
            self._clock = (time.monotonic(), future)

    def _clock_on_worker(self) -> ClockInfo:
        return self._worker_client().get_clock()

    def batch_clock(self) -> ClockInfo:
        with self._pool_lock:
            prefetched, self._clock = self._clock, None
        if prefetched is not None and time.monotonic() - prefetched[0] <= CLOCK_MAX_AGE_S:
            try:
                return prefetched[1].result()
            except Exception as exc:  # read again here: its error is this batch's
                logger.warning("prefetched clock failed (%s); reading it again", exc)
        return self.client.get_clock()

    def post_all(self, rows: list[JournalOrder]) -> list[Answer]:
        """POST every row (journaled intents), concurrently when there are several and a factory."""
        if len(rows) <= 1 or self._client_factory is None or self.post_workers == 1:
            return [self.post(row, self.client) for row in rows]
        return list(self._workers().map(self._post_on_worker, rows))

    def _workers(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.post_workers, thread_name_prefix="modelyard-post"
                )
            return self._pool

    def _worker_client(self) -> AlpacaClient:
        """This POST worker's own client (and HTTP session), made on first use."""
        client: AlpacaClient | None = getattr(self._local, "client", None)
        if client is None:
            assert self._client_factory is not None
            client = self._client_factory()
            self._local.client = client
            with self._pool_lock:
                self._worker_clients.append(client)
        return client

    def _post_on_worker(self, row: JournalOrder) -> Answer:
        try:
            client = self._worker_client()
        except Exception as exc:
            logger.exception("%s: no client for the POST; left submitted", row.client_order_id)
            return Answer(row, error=exc, at=time.perf_counter())
        return self.post(row, client)

    def post(self, row: JournalOrder, client: AlpacaClient, *, resend: bool = False) -> Answer:
        """POST one order and settle an unknown outcome; no journal write (see :meth:`_record`).

        OutcomeUnknown -> GET by ``client_order_id`` -> adopted when found, resent (same id)
        only after a confirmed 404; a lookup that fails too, a 429/connect failure or an
        unexpected error leave the row ``submitted``. A refusal of a resend (or, with
        ``resend``, of a recovered row's send) is looked up first: an earlier POST may have
        landed after all, and the venue refuses its id a second time.
        """
        coid = row.client_order_id
        try:
            for attempt in range(self.max_resubmits + 1):
                try:
                    order = client.submit_order(
                        row.symbol,
                        "buy" if row.side == "buy" else "sell",
                        client_order_id=coid,
                        qty=row.qty,
                        notional=row.notional,
                        order_type="limit" if row.order_type == "limit" else "market",
                        limit_price=row.limit_price,
                        time_in_force=row.time_in_force,
                    )
                except OrderRejected as exc:
                    if attempt > 0 or resend:  # an earlier POST may have landed after all
                        found = self._lookup(coid, client)
                        if found is not None:
                            return Answer(row, order=found, at=time.perf_counter())
                    reason = f"rejected: HTTP {exc.status} code {exc.code}: {exc}"
                    return Answer(row, failed=reason, error=exc, at=time.perf_counter())
                except OutcomeUnknown as exc:
                    logger.warning("%s: outcome unknown (%s); looking it up", coid, exc)
                    try:
                        found = client.get_order_by_client_id(coid)
                    except BrokerUnavailable as lookup_exc:
                        logger.error("%s: still unknown (%s); left submitted", coid, lookup_exc)
                        return Answer(row, at=time.perf_counter())
                    if found is not None:
                        return Answer(row, order=found, at=time.perf_counter())
                    logger.warning("%s: confirmed absent; resending with the same id", coid)
                    continue
                except BrokerUnavailable as exc:  # 429s or connect timeouts: never processed
                    logger.error("%s: venue unavailable (%s); left submitted", coid, exc)
                    return Answer(row, at=time.perf_counter())
                self._stage("posted", coid)
                return Answer(row, order=order, at=time.perf_counter())
        except Exception as exc:  # e.g. a lookup answered 4xx: the outcome stays unknown
            logger.error("%s: %s; left submitted", coid, exc)
            return Answer(row, error=exc, at=time.perf_counter())
        logger.error("%s: %d resends without an answer; left submitted", coid, self.max_resubmits)
        return Answer(row, at=time.perf_counter())

    def _lookup(self, coid: str, client: AlpacaClient) -> BrokerOrder | None:
        try:
            return client.get_order_by_client_id(coid)
        except BrokerError as exc:
            logger.error("%s: lookup failed: %s", coid, exc)
            return None
