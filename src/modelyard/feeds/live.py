"""The live Backtrader feed: REST backfill, then bars from alpaca-py's websockets.

Pieces (plain classes; :class:`AlpacaLiveData` is the thin Backtrader shell):

* :class:`BarChannel` - one symbol's way into Backtrader: bars are deduplicated by timestamp
  (strictly increasing, a bar at or before the last one is dropped) and queued with the
  status changes between them, so a status reaches the strategy right before the first bar
  it applies to. All channels of a store share one :class:`BarHub` that wakes the Backtrader
  loop when anything arrives (and when the broker has news: :meth:`BarHub.poke`).
* :class:`StreamSource` - one alpaca-py data stream (``StockDataStream`` or
  ``CryptoDataStream``; one connection per feed and key, so every symbol of a kind shares it)
  in a background thread, plus a supervisor thread. States: ``backfill`` -> ``live`` ->
  ``silent`` -> ``recovering`` -> ``live``:

  - backfill: the stream starts first (its bars are held back); once the venue has
    acknowledged the subscription (bars published before that are never sent on it), REST
    history is pushed under ``DELAYED``, then the held bars under ``LIVE``;
  - the watchdog: no bar within ``silence_timeout`` seconds (default 2x the shortest
    timeframe) -> ``CONNBROKEN`` to every channel, the stream is torn down and started again
    after an exponential backoff (repeated while it stays silent);
  - the first bar after a silence, or alpaca-py's own reconnect after a dropped connection
    (a second subscription acknowledgement) -> ``recovering``: the gap since each channel's
    last bar is fetched over REST and pushed under ``DELAYED``, then the held stream bars under
    ``LIVE``;
  - one channel's gap while live: a stream bar that comes more than one bar after the
    channel's last bar, where the venue would have published bars in between
    (:func:`bars_expected_between`), is held with every later bar of that channel while the
    supervisor asks REST for the bars in between. The stream skipped them (a mute shorter
    than the watchdog's timeout, or a venue that skipped one symbol's messages) or there were
    none (no trades in those minutes). Bars found are pushed under ``DELAYED``, then the held
    bars under ``LIVE``. The other channels go on meanwhile. Each round of fills (every
    channel gapped at the time) costs REST requests, and an illiquid symbol's empty minutes
    look like gaps, so a source makes at most ``gap_fills_per_minute`` rounds (default 30:
    Alpaca allows 200 requests a minute); past that, a gap's held bars go on unchecked,
    logged and counted (``gaps_unchecked``).

  REST bars come through one :data:`History` call per catch-up or round of fills, for every
  channel at once: the store makes it one clock request and one bars request per asset class
  (:meth:`~modelyard.feeds.alpaca_history.AlpacaHistory.fetch_many`), not two per symbol.

* Stream handlers catch everything and log (alpaca-py swallows handler errors and can spin).
  Timestamps are UTC nanoseconds; daily equity bars are labelled at the session's 16:00
  America/New_York close, as :class:`~modelyard.feeds.alpaca_history.AlpacaHistory` does.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd

from modelyard.feeds.resample import parse_timeframe

__all__ = [
    "AlpacaLiveData",
    "BarChannel",
    "BarHub",
    "LiveBar",
    "StreamSource",
    "acknowledging",
    "bars_expected_between",
    "label_bar_time",
]

logger = logging.getLogger(__name__)
_NY = "America/New_York"
LIVE, DELAYED, CONNBROKEN, DISCONNECTED = (
    bt.feed.DataBase.LIVE,
    bt.feed.DataBase.DELAYED,
    bt.feed.DataBase.CONNBROKEN,
    bt.feed.DataBase.DISCONNECTED,
)
#: REST bars for a round of channels: each channel with the timestamp after which it wants bars
#: (``None``: its backfill) -> each channel's bars (a channel without bars may be left out).
#: One call should cost as few requests as it can (the store asks for many symbols at once).
History = Callable[
    [Sequence[tuple["BarChannel", "int | None"]]], Mapping["BarChannel", list["LiveBar"]]
]


@dataclass(frozen=True, slots=True)
class LiveBar:
    """One bar (UTC nanoseconds); ``received`` is ``perf_counter()`` when the feed got it."""

    symbol: str
    ts_ns: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    received: float = 0.0


def label_bar_time(ts_ns: int, asset_class: str, timeframe: str) -> int:
    """Daily/weekly equity bars -> the session date's 16:00 New York close (UTC); else as is."""
    if asset_class == "crypto" or not timeframe.endswith(("d", "w")):
        return ts_ns
    local = pd.Timestamp(ts_ns, unit="ns", tz="UTC").tz_convert(_NY).normalize()
    return int((local + pd.Timedelta(hours=16)).tz_convert("UTC").value)


@lru_cache(maxsize=1024)
def bt_date_number(ts_ns: int) -> float:
    """Backtrader's date number of a UTC nanosecond timestamp (cached: every symbol's bar of a
    step has the same timestamp)."""
    number: float = bt.date2num(pd.Timestamp(ts_ns, unit="ns").to_pydatetime())
    return number


def timeframe_seconds(label: str) -> float:
    """``1min``, ``1h``, ``1d`` ... in seconds."""
    return float(parse_timeframe(label).total_seconds())


def bars_expected_between(channel: BarChannel, after_ns: int, before_ns: int) -> bool:
    """Whether the venue would publish a bar of ``channel`` strictly between two of its bars.

    Crypto trades around the clock: any step skipped. Equities (and options): intraday bars
    only within one New York date (a night, a weekend or a holiday between two sessions is
    no gap); daily bars only when a weekday lies between the two sessions (a holiday then
    costs one REST call that finds nothing)."""
    step = channel.step_ns
    if before_ns - after_ns <= step:
        return False
    if channel.asset_class == "crypto":
        return True
    first = pd.Timestamp(after_ns, unit="ns", tz="UTC").tz_convert(_NY).date()
    last = pd.Timestamp(before_ns, unit="ns", tz="UTC").tz_convert(_NY).date()
    if step < 86_400 * 10**9:
        return first == last
    return int(np.busday_count(first + pd.Timedelta(days=1), last)) > 0


@cache
def acknowledging(base: Any) -> Any:
    """``base`` (an alpaca-py data stream class) whose instances carry ``subscribed``, a
    ``threading.Event`` set when the venue acknowledges a subscription, and call
    ``on_acknowledged()`` (stream thread) on every acknowledgement, before the event is set.

    alpaca-py only logs the acknowledgement. :class:`StreamSource` waits for it before its REST
    backfill, because a bar published between the backfill and the subscription taking effect
    reaches neither. An acknowledgement once the source is live (alpaca-py reconnected by
    itself after a dropped connection, within about a second; or the first one, later than
    the source would wait) means bars were published that the stream never sent: the source
    fills them over REST before it goes on."""

    class Acknowledging(base):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.subscribed = threading.Event()
            self.on_acknowledged: Callable[[Any], None] | None = None

        async def _dispatch(self, msg: Any) -> None:
            if isinstance(msg, dict) and msg.get("T") == "subscription":
                if self.on_acknowledged is not None:
                    self.on_acknowledged(self)
                self.subscribed.set()
            await super()._dispatch(msg)

    Acknowledging.__name__ = Acknowledging.__qualname__ = f"Acknowledging{base.__name__}"
    return Acknowledging


class BarHub:
    """Wakes the Backtrader loop: a condition and the number of queued items, store-wide.

    :meth:`poke` wakes it without a bar, for news the broker applies in a loop round without
    one (a journaled trade update: ``notify_order`` then fires when the venue's news is in,
    not at the next bar or the next ``qcheck`` timeout). Pokes coalesce: those that arrive
    while the loop is busy cost one more round, not one each."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.pending = 0
        self._poked = False

    def wait(self, timeout: float) -> None:
        with self.cond:
            if self.pending == 0 and not self._poked and timeout > 0:
                self.cond.wait(timeout)
            self._poked = False

    def poke(self) -> None:
        """Wake the loop for one round without a bar."""
        with self.cond:
            if not self._poked:
                self._poked = True
                self.cond.notify_all()


class BarChannel:
    """The bars of one symbol on their way into Backtrader (see the module docstring)."""

    def __init__(
        self, symbol: str, stream_symbol: str, asset_class: str, timeframe: str, hub: BarHub
    ) -> None:
        self.symbol = symbol
        self.stream_symbol = stream_symbol
        self.asset_class = asset_class
        self.timeframe = timeframe
        self.step_ns = int(timeframe_seconds(timeframe) * 1e9)
        self.hub = hub
        self.last_ts = -1
        self.items: deque[tuple[int, Any]] = deque()  # (status, None) or (-1, LiveBar)
        self.accepted = 0
        self.duplicates = 0
        self.closed = False

    def push_bar(self, bar: LiveBar) -> bool:
        with self.hub.cond:
            if bar.ts_ns <= self.last_ts:
                self.duplicates += 1
                return False
            self.last_ts = bar.ts_ns
            self.accepted += 1
            self.items.append((-1, bar))
            self.hub.pending += 1
            self.hub.cond.notify_all()
        return True

    def push_status(self, status: int) -> None:
        with self.hub.cond:
            self.items.append((status, None))
            self.hub.pending += 1
            self.hub.cond.notify_all()

    def pop(self) -> tuple[int, Any] | None:
        with self.hub.cond:
            if not self.items:
                return None
            self.hub.pending -= 1
            return self.items.popleft()

    def has_items(self) -> bool:
        return bool(self.items)


def parse_stream_bar(msg: Any, channel: BarChannel) -> LiveBar:
    """A raw alpaca-py bar message (``raw_data=True``: ``t`` is a msgpack Timestamp)."""
    received = time.perf_counter()
    stamp = msg["t"]
    if hasattr(stamp, "to_unix_nano"):
        ts_ns = int(stamp.to_unix_nano())
    else:
        ts = pd.Timestamp(stamp)
        ts_ns = int((ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).value)
    ts_ns = label_bar_time(ts_ns, channel.asset_class, channel.timeframe)
    return LiveBar(
        channel.symbol, ts_ns, float(msg["o"]), float(msg["h"]), float(msg["l"]),
        float(msg["c"]), float(msg["v"]), received,
    )  # fmt: skip


class StreamSource:
    """One alpaca-py data stream, its watchdog and its REST gap filler (module docstring)."""

    def __init__(
        self,
        kind: str,
        stream_factory: Callable[[], Any],
        history: History,
        *,
        silence_timeout: float | None = None,
        backoff: tuple[float, float] = (0.25, 10.0),
        tick: float | None = None,
        subscribe_timeout: float = 10.0,
        gap_fills_per_minute: int = 30,
    ) -> None:
        self.kind = kind
        self._factory = stream_factory
        self._history = history
        self._silence = silence_timeout
        self.backoff = backoff
        self._tick = tick
        self.subscribe_timeout = subscribe_timeout
        self._stream_started = 0.0
        self._subscriptions = 0  # acknowledgements so far (a catch-up checks none came)
        self._delayed = False  # DELAYED sent to the channels since they were last LIVE
        self.channels: dict[str, BarChannel] = {}
        self.state = "backfill"
        self.reconnects = 0
        self.gap_filled = 0
        self.gaps_unchecked = 0  # channel gaps let through without REST (the budget was spent)
        self.rest_rounds = 0  # History calls (backfill, catch-ups, gap fills), each every channel
        self.gap_fills_per_minute = gap_fills_per_minute
        self._gap_fills: deque[float] = deque()  # monotonic times of recent gap-fill rounds
        self.handler_errors = 0
        self._lock = threading.Lock()
        self._pending: list[LiveBar] = []
        # live: a channel's stream bars held while REST fills the gap before them
        self._held: dict[BarChannel, list[LiveBar]] = {}
        self._last_arrival = time.monotonic()
        self._stream: Any = None
        self._thread: threading.Thread | None = None
        self._supervisor: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._failures = 0
        self._restart_at = 0.0
        self.on_bar: Callable[[LiveBar], None] | None = None  # observation hook (benchmarks)
        self.on_live_bar: Callable[[], None] | None = None  # a live bar was queued

    @property
    def silence_timeout(self) -> float:
        if self._silence is not None:
            return self._silence
        return 2.0 * min(timeframe_seconds(c.timeframe) for c in self.channels.values())

    def add(self, channel: BarChannel) -> None:
        if self._supervisor is not None:
            raise RuntimeError("add every channel before the source starts")
        self.channels[channel.stream_symbol] = channel

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._supervisor is not None or not self.channels:
            return
        for channel in self.channels.values():
            channel.push_status(DELAYED)
        self._delayed = True
        self._start_stream()
        self._supervisor = threading.Thread(
            target=self._supervise, name=f"modelyard-{self.kind}-watchdog", daemon=True
        )
        self._supervisor.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._stop_stream()
        if self._supervisor is not None:
            self._supervisor.join(10.0)
        for channel in self.channels.values():
            channel.closed = True
            channel.push_status(DISCONNECTED)

    def _start_stream(self) -> None:
        stream = self._factory()
        if hasattr(stream, "on_acknowledged"):
            stream.on_acknowledged = self._acknowledged
        stream.subscribe_bars(self._handle, *self.channels)
        self._stream = stream
        self._stream_started = time.monotonic()
        self._thread = threading.Thread(
            target=stream.run, name=f"modelyard-{self.kind}-stream", daemon=True
        )
        self._thread.start()

    def _stop_stream(self) -> None:
        stream, thread = self._stream, self._thread
        self._stream = self._thread = None
        if stream is None or thread is None:
            return
        stop_stream(stream, thread)

    # -- the stream thread -------------------------------------------------------------------
    async def _handle(self, msg: Any) -> None:
        """alpaca-py's bar handler: never raises."""
        try:
            self.receive(msg)
        except Exception:
            self.handler_errors += 1
            logger.exception("%s stream: a bar could not be handled; the stream goes on", self.kind)

    def receive(self, msg: Any) -> None:
        channel = self.channels.get(str(msg.get("S")))
        if channel is None:
            return
        bar = parse_stream_bar(msg, channel)
        if self.on_bar is not None:
            self.on_bar(bar)
        with self._lock:
            self._last_arrival = time.monotonic()
            self._failures = 0
            if self.state == "live":
                held = self._held.get(channel)
                if held is not None:
                    held.append(bar)
                elif channel.last_ts >= 0 and bars_expected_between(
                    channel, channel.last_ts, bar.ts_ns
                ):
                    self._held[channel] = [bar]
                    self._wake.set()
                elif channel.push_bar(bar) and self.on_live_bar is not None:
                    self.on_live_bar()
                return
            self._pending.append(bar)
            if self.state == "silent":
                self.state = "recovering"
                logger.warning("%s stream: bars again; filling the gap over REST", self.kind)
                self._wake.set()

    def _acknowledged(self, stream: Any) -> None:
        """The venue acknowledged ``stream``'s subscription (stream thread; see
        :func:`acknowledging`). Live: alpaca-py reconnected by itself, or the first
        acknowledgement came after the backfill stopped waiting for it, so what was published
        meanwhile is filled over REST and later stream bars are held till then. Backfilling or
        recovering: a catch-up already under way started before this subscription and goes
        round again (``_subscriptions``). Silent (our own reconnect): the first bar starts the
        catch-up. A stream this source has replaced is ignored."""
        if stream is not self._stream:
            return
        with self._lock:
            self._subscriptions += 1
            if self.state != "live":
                return
            for channel in self.channels.values():
                channel.push_status(CONNBROKEN)
            self._hold_all()
            self.state = "recovering"
        logger.warning("%s stream: resubscribed; filling the gap over REST", self.kind)
        self._wake.set()

    # -- the supervisor thread ---------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._stop.is_set():
            try:
                self._supervise_once()
            except Exception:
                logger.exception("%s stream supervisor: unexpected error", self.kind)
            tick = self._tick or min(0.25, self.silence_timeout / 5.0)
            self._wake.wait(tick)
            self._wake.clear()

    def _supervise_once(self) -> None:
        state = self.state
        if state in ("backfill", "recovering"):
            self._catch_up(initial=state == "backfill")
            return
        now = time.monotonic()
        if state == "live" and now - self._last_arrival > self.silence_timeout:
            with self._lock:
                if self.state != "live":
                    return
                self._hold_all()
                self.state = "silent"
            logger.warning(
                "%s stream: no bar for %.1fs; reconnecting", self.kind, self.silence_timeout
            )
            for channel in self.channels.values():
                channel.push_status(CONNBROKEN)
            self._reconnect(now)
        elif state == "silent" and now >= self._restart_at:
            self._reconnect(now)
        elif state == "live" and self._held:
            self._fill_gaps()

    def _hold_all(self) -> None:
        """Leaving ``live`` (lock held): the bars held for channel gaps join the stream bars
        that the catch-up pushes after its REST bars."""
        for bars in self._held.values():
            self._pending.extend(bars)
        self._held.clear()

    def _fill_gaps(self) -> None:
        """The bars REST has between each gapped channel's last bar and its held stream bars;
        then the held bars (module docstring). Every channel gapped at the time goes in one
        round (one :data:`History` call). A REST failure leaves the bars held and the next
        tick retries; every round counts against ``gap_fills_per_minute``, so a REST outage
        holds a channel for one budget's worth of rounds at most, then its bars go on
        unchecked."""
        with self._lock:
            todo = list(self._held)
        if not todo:
            return
        if not self._gap_budget():
            for channel in todo:
                self._release_unchecked(channel)
            if self.on_live_bar is not None:
                self.on_live_bar()
            return
        self.rest_rounds += 1
        try:
            fetched = self._history([(channel, channel.last_ts) for channel in todo])
        except Exception:
            logger.exception(
                "%s stream: REST bars for %d gap(s) failed; retrying", self.kind, len(todo)
            )
            return
        for channel in todo:
            bars = fetched.get(channel, [])
            with self._lock:
                held = self._held.pop(channel, None)
                if held is None:  # a catch-up took them over meanwhile
                    continue
                missed = [b for b in bars if channel.last_ts < b.ts_ns < held[0].ts_ns]
                if missed:
                    channel.push_status(DELAYED)
                    for bar in missed:
                        if channel.push_bar(bar):
                            self.gap_filled += 1
                    channel.push_status(LIVE)
                    logger.warning(
                        "%s: the stream skipped %d bar(s) before %s; filled over REST",
                        channel.symbol,
                        len(missed),
                        pd.Timestamp(held[0].ts_ns, unit="ns", tz="UTC"),
                    )
                # REST's bars among the held ones too: the held bars may have gaps of their own
                later = [b for b in bars if held[0].ts_ns <= b.ts_ns <= held[-1].ts_ns]
                for bar in sorted([*held, *later], key=lambda b: b.ts_ns):
                    channel.push_bar(bar)
        if self.on_live_bar is not None:
            self.on_live_bar()

    def _gap_budget(self) -> bool:
        """Whether one more gap-fill round fits in the last minute's ``gap_fills_per_minute``."""
        now = time.monotonic()
        while self._gap_fills and now - self._gap_fills[0] > 60.0:
            self._gap_fills.popleft()
        if len(self._gap_fills) >= self.gap_fills_per_minute:
            return False
        self._gap_fills.append(now)
        return True

    def _release_unchecked(self, channel: BarChannel) -> None:
        """The held bars of ``channel`` as they are: no REST budget left for its gap (the
        caller wakes the Backtrader loop)."""
        with self._lock:
            held = self._held.pop(channel, None)
            if held is None:
                return
            self.gaps_unchecked += 1
            for bar in held:
                channel.push_bar(bar)
        logger.warning(
            "%s: a gap before %s was not checked over REST (%d gap-fill rounds in the last "
            "minute already); bars the stream skipped there, if any, are missing",
            channel.symbol,
            pd.Timestamp(held[0].ts_ns, unit="ns", tz="UTC"),
            self.gap_fills_per_minute,
        )

    def _reconnect(self, now: float) -> None:
        self._failures += 1
        base, cap = self.backoff
        delay = min(cap, base * 2 ** (self._failures - 1)) * random.uniform(0.5, 1.0)
        self._stop_stream()
        if self._stop.wait(delay):
            return
        self.reconnects += 1
        self._start_stream()
        self._restart_at = time.monotonic() + self.silence_timeout + delay

    def _subscribed(self) -> bool:
        """Wait (a bounded while) until the venue acknowledged the stream's subscription. A
        stream without a ``subscribed`` event (see :func:`acknowledging`) counts as subscribed;
        after ``subscribe_timeout`` the backfill goes ahead with a warning (the watchdog then
        treats a stream that never delivers as silent). ``False``: stopping."""
        if self._stop.is_set():
            return False
        event = getattr(self._stream, "subscribed", None)
        if not isinstance(event, threading.Event):
            return True
        deadline = self._stream_started + self.subscribe_timeout
        while not event.wait(0.02):
            if self._stop.is_set():
                return False
            if time.monotonic() > deadline:
                logger.warning(
                    "%s stream: no subscription acknowledgement within %.1fs; backfilling anyway",
                    self.kind,
                    self.subscribe_timeout,
                )
                return True
        return True

    def _catch_up(self, *, initial: bool) -> None:
        """REST bars since each channel's last bar (all history when ``initial``), then the
        held stream bars, then ``live``. A subscription acknowledged while the REST bars were
        fetched (a reconnect, or a late first acknowledgement) may have left a gap after them:
        their bars are kept, the stream's stay held, and the next tick goes round again."""
        if initial and not self._subscribed():
            return
        seen = self._subscriptions
        if not self._delayed:
            for channel in self.channels.values():
                channel.push_status(DELAYED)
            self._delayed = True
        # no bar yet (an empty backfill): the backfill's window, not all of history
        wants = [
            (channel, None if initial or channel.last_ts < 0 else channel.last_ts)
            for channel in self.channels.values()
        ]
        self.rest_rounds += 1
        try:
            fetched = self._history(wants)
        except Exception:
            logger.exception("%s stream: REST bars failed; retrying", self.kind)
            return  # stays in backfill/recovering; the next tick retries
        by_symbol = {c.symbol: c for c in self.channels.values()}
        with self._lock:
            for channel in self.channels.values():
                for bar in fetched.get(channel, []):
                    if channel.push_bar(bar) and not initial:
                        self.gap_filled += 1
            if self._subscriptions != seen:
                self.state = "recovering"
                logger.warning("%s stream: resubscribed during the catch-up; again", self.kind)
                return
            for channel in self.channels.values():
                channel.push_status(LIVE)
            for bar in sorted(self._pending, key=lambda b: b.ts_ns):
                by_symbol[bar.symbol].push_bar(bar)
            self._pending.clear()
            self.state = "live"
            self._delayed = False
            self._last_arrival = time.monotonic()
        logger.info("%s stream: live (%s)", self.kind, "backfilled" if initial else "gap filled")


def stop_stream(stream: Any, thread: threading.Thread, timeout: float = 5.0) -> None:
    """Stop an alpaca-py stream at once: ``stop_ws`` and close the socket from its own loop
    (``stop()`` alone waits for ``recv``'s 5 s timeout)."""
    deadline = time.monotonic() + timeout
    while getattr(stream, "_loop", None) is None and thread.is_alive():
        if time.monotonic() > deadline:
            break
        time.sleep(0.005)
    loop = getattr(stream, "_loop", None)
    if loop is not None and loop.is_running():
        for make in (stream.stop_ws, stream.close):
            try:
                asyncio.run_coroutine_threadsafe(make(), loop).result(timeout)
            except Exception as exc:  # the loop may be closing already
                logger.debug("stopping a stream: %s", exc)
    else:  # not connected yet: the stop queue ends run_forever's wait for handlers
        stream._should_run = False
        stream._stop_stream_queue.put_nowait({"should_stop": True})
    thread.join(timeout)
    if thread.is_alive():
        logger.warning("a %s did not stop within %.0fs", type(stream).__name__, timeout)


def bars_from_frame(
    frame: pd.DataFrame, channel: BarChannel, after_ns: int | None
) -> list[LiveBar]:
    """REST bars (a bars frame) as :class:`LiveBar` s after ``after_ns``."""
    stamps = pd.DatetimeIndex(frame.index).as_unit("ns").asi8
    rows: Iterable[Sequence[float]] = frame[["open", "high", "low", "close", "volume"]].to_numpy()
    return [
        LiveBar(channel.symbol, int(ts), *map(float, row))
        for ts, row in zip(stamps, rows, strict=True)
        if after_ns is None or ts > after_ns
    ]


class AlpacaLiveData(bt.feed.DataBase):  # type: ignore[misc]
    """Backtrader shell around a :class:`BarChannel` (params ``channel``, ``source``)."""

    params = (("channel", None), ("source", None), ("qcheck", 0.5))

    def islive(self) -> bool:
        return True

    def haslivedata(self) -> bool:
        return bool(self.p.channel.has_items())

    def start(self) -> None:
        super().start()
        self._may_wait = True
        source = self.p.source
        if source is not None:
            source.start()

    def stop(self) -> None:
        super().stop()

    def do_qcheck(self, onoff: bool, qlapse: float) -> None:
        super().do_qcheck(onoff, qlapse)
        self._may_wait = True

    @property
    def bar_received(self) -> float:
        """``perf_counter()`` when the current bar reached the feed (0 for REST bars)."""
        return float(getattr(self, "_received", 0.0))

    def _load(self) -> bool | None:
        channel: BarChannel = self.p.channel
        while True:
            item = channel.pop()
            if item is None:
                if channel.closed:
                    return False
                if not self._may_wait or self._qcheck <= 0:
                    return None
                self._may_wait = False  # wait once per loop round, for any channel
                channel.hub.wait(self._qcheck)
                continue
            status, bar = item
            if status >= 0:
                self.put_notification(status)
                if status == DISCONNECTED and channel.closed:
                    return False
                continue
            lines = self.lines
            lines.datetime[0] = bt_date_number(bar.ts_ns)
            lines.open[0] = bar.open
            lines.high[0] = bar.high
            lines.low[0] = bar.low
            lines.close[0] = bar.close
            lines.volume[0] = bar.volume
            lines.openinterest[0] = 0.0
            self._received = bar.received
            return True
