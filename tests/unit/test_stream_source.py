"""StreamSource's catch-up when the venue acknowledges a subscription (see feeds.live):
driven by a stand-in stream object that the source starts and stops like alpaca-py's; the
real streams against the emulator are in tests/integration/test_paper_live.py."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from modelyard.feeds import live
from modelyard.feeds.live import BarChannel, BarHub, LiveBar, StreamSource

NAMES = {live.LIVE: "LIVE", live.DELAYED: "DELAYED", live.CONNBROKEN: "CONNBROKEN"}


class StandIn:
    """What StreamSource needs of an ``acknowledging`` alpaca-py stream."""

    def __init__(self, acked: bool) -> None:
        self.subscribed = threading.Event()
        if acked:
            self.subscribed.set()
        self.on_acknowledged: Callable[[Any], None] | None = None
        self._loop = self  # never connected: stop_stream ends run() through the stop queue
        self._should_run = True
        self._stop_stream_queue: queue.Queue[Any] = queue.Queue()

    def is_running(self) -> bool:
        return False

    def subscribe_bars(self, handler: Any, *symbols: str) -> None:
        pass

    def run(self) -> None:
        self._stop_stream_queue.get()

    def acknowledge(self) -> None:  # as Acknowledging._dispatch does
        assert self.on_acknowledged is not None
        self.on_acknowledged(self)
        self.subscribed.set()


class _NoWake(threading.Event):
    """A supervisor wake-up that only its tick ends."""

    def set(self) -> None:
        pass


def _wait(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.002)


PerChannel = Callable[[BarChannel, int | None], list[LiveBar]]


def _rounds(history: PerChannel, rounds: list[list[str]] | None = None) -> live.History:
    """A :data:`live.History` from a per-channel one; ``rounds`` records each call's symbols."""

    def batch(wants: Sequence[tuple[BarChannel, int | None]]) -> dict[BarChannel, list[LiveBar]]:
        if rounds is not None:
            rounds.append([channel.symbol for channel, _ in wants])
        return {channel: history(channel, after) for channel, after in wants}

    return batch


def _source(
    history: PerChannel, *, acked: bool = True, **kw: Any
) -> tuple[StreamSource, BarChannel, list[StandIn]]:
    source, [channel], streams = _sources(history, ["BTC/USD"], acked=acked, **kw)
    return source, channel, streams


def _sources(
    history: PerChannel,
    symbols: Sequence[str],
    *,
    acked: bool = True,
    rounds: list[list[str]] | None = None,
    **kw: Any,
) -> tuple[StreamSource, list[BarChannel], list[StandIn]]:
    streams: list[StandIn] = []

    def factory() -> StandIn:
        streams.append(StandIn(acked))
        return streams[-1]

    hub = BarHub()
    channels = [BarChannel(s, s, "crypto", "1min", hub) for s in symbols]
    kw.setdefault("tick", 0.005)
    source = StreamSource("crypto", factory, _rounds(history, rounds), silence_timeout=60.0, **kw)
    for channel in channels:
        source.add(channel)
    return source, channels, streams


def _statuses(channel: BarChannel) -> list[str]:
    return [NAMES[status] for status, _ in channel.items if status >= 0]


def _bar(ts: int, symbol: str = "BTC/USD") -> LiveBar:
    return LiveBar(symbol, ts, 1.0, 1.0, 1.0, 1.0, 1.0)


def test_a_resubscription_when_live_fills_the_gap_then_goes_live() -> None:
    fetched: list[int | None] = []

    def history(channel: BarChannel, after: int | None) -> list[LiveBar]:
        fetched.append(after)
        return [_bar(100)] if after is None else [_bar(200)]

    source, channel, streams = _source(history)
    source.start()
    try:
        _wait(lambda: source.state == "live")
        streams[-1].acknowledge()  # alpaca-py reconnected by itself
        _wait(lambda: source.state == "live" and source.gap_filled == 1)
        assert fetched == [None, 100]
        assert _statuses(channel) == ["DELAYED", "LIVE", "CONNBROKEN", "DELAYED", "LIVE"]
    finally:
        source.stop()


def test_a_resubscription_during_the_gap_fill_goes_round_again() -> None:
    fetched: list[int | None] = []
    started: list[list[StandIn]] = []

    def history(channel: BarChannel, after: int | None) -> list[LiveBar]:
        fetched.append(after)
        if len(fetched) == 2:  # the connection drops and comes back during the gap fill
            started[0][-1].acknowledge()
        return [_bar(100 * len(fetched))]

    source, channel, streams = _source(history)
    started.append(streams)
    source.start()
    try:
        _wait(lambda: source.state == "live")
        streams[-1].acknowledge()
        _wait(lambda: len(fetched) == 3 and source.state == "live")
        assert fetched == [None, 100, 200]  # the third fetch covers the second gap
        assert _statuses(channel) == ["DELAYED", "LIVE", "CONNBROKEN", "DELAYED", "LIVE"]
    finally:
        source.stop()


def test_a_first_acknowledgement_after_the_wait_fills_the_gap() -> None:
    fetched: list[int | None] = []

    def history(channel: BarChannel, after: int | None) -> list[LiveBar]:
        fetched.append(after)
        return [_bar(100)] if after is None else []

    source, _channel, streams = _source(history, acked=False, subscribe_timeout=0.05)
    source.start()
    try:
        _wait(lambda: source.state == "live")  # backfilled without an acknowledgement
        streams[-1].acknowledge()  # it comes late: bars may have been published unsent
        _wait(lambda: len(fetched) == 2 and source.state == "live")
        assert fetched == [None, 100]
    finally:
        source.stop()


def test_an_acknowledgement_of_a_replaced_stream_is_ignored() -> None:
    source, channel, streams = _source(lambda channel, after: [])
    source.start()
    try:
        _wait(lambda: source.state == "live")
        old = streams[-1]
        source._stop_stream()
        source._start_stream()
        old.acknowledge()
        time.sleep(0.05)
        assert source.state == "live"
        assert _statuses(channel) == ["DELAYED", "LIVE"]
    finally:
        source.stop()


def test_a_poke_wakes_the_loop_once() -> None:
    """Pokes coalesce: however many arrive while the loop is busy, the next wait returns at
    once and the one after waits again (for its timeout, here)."""
    hub = BarHub()
    hub.poke()
    hub.poke()
    started = time.monotonic()
    hub.wait(5.0)
    assert time.monotonic() - started < 1.0
    started = time.monotonic()
    hub.wait(0.2)
    assert time.monotonic() - started >= 0.15
    waiter = threading.Thread(target=hub.wait, args=(5.0,))
    waiter.start()
    time.sleep(0.05)
    hub.poke()  # wakes a waiting loop
    waiter.join(1.0)
    assert not waiter.is_alive()


MIN = 60 * 10**9
T0 = int(pd.Timestamp("2026-03-02 15:00", tz="UTC").value)


def _msg(ts: int, symbol: str = "BTC/USD") -> dict[str, Any]:
    stamp = pd.Timestamp(ts, unit="ns", tz="UTC")
    return {"S": symbol, "t": stamp, "o": 1.0, "h": 1.0, "l": 1.0, "c": 1.0, "v": 1.0}


def _bars(channel: BarChannel) -> list[int]:
    return [(bar.ts_ns - T0) // MIN for status, bar in channel.items if status < 0]


def test_a_channel_gap_while_live_is_filled_over_rest_before_the_held_bars() -> None:
    """The stream skips two bars of a channel (no silence: the watchdog has nothing to see);
    the next stream bars are held while REST gives the skipped ones."""
    fetched: list[int | None] = []
    rest = [_bar(T0 + k * MIN) for k in range(6)]

    def history(channel: BarChannel, after: int | None) -> list[LiveBar]:
        fetched.append(after)
        return rest[:1] if after is None else [b for b in rest if b.ts_ns > after]

    source, channel, _ = _source(history)
    source.start()
    try:
        _wait(lambda: source.state == "live")
        source.receive(_msg(T0 + MIN))
        source.receive(_msg(T0 + 4 * MIN))  # 2 and 3 skipped
        source.receive(_msg(T0 + 5 * MIN))
        _wait(lambda: len(_bars(channel)) == 6)
        assert _bars(channel) == [0, 1, 2, 3, 4, 5]  # each once, in order
        assert fetched == [None, T0 + MIN]
        assert source.gap_filled == 2
        assert source.reconnects == 0
        assert _statuses(channel) == ["DELAYED", "LIVE", "DELAYED", "LIVE"]
        kinds = ["bar" if s < 0 else NAMES[s] for s, _ in channel.items]
        # the filled bars under DELAYED (nothing trades on them), the held ones under LIVE
        assert kinds == [
            *["DELAYED", "bar", "LIVE", "bar"],  # the backfill, then bar 1 live
            *["DELAYED", "bar", "bar", "LIVE", "bar", "bar"],
        ]
    finally:
        source.stop()


def test_a_gap_rest_cannot_fill_releases_the_held_bars_as_they_are() -> None:
    def history(channel: BarChannel, after: int | None) -> list[LiveBar]:
        return [_bar(T0)] if after is None else []  # no trades in those minutes

    source, channel, _ = _source(history)
    source.start()
    try:
        _wait(lambda: source.state == "live")
        source.receive(_msg(T0 + 3 * MIN))
        _wait(lambda: len(_bars(channel)) == 2)
        assert _bars(channel) == [0, 3]
        assert source.gap_filled == 0
        assert _statuses(channel) == ["DELAYED", "LIVE"]  # no status flicker
    finally:
        source.stop()


def test_held_bars_join_the_catch_up_when_the_stream_resubscribes() -> None:
    """A resubscription while a channel's bars are held: the catch-up (REST since the last
    pushed bar) takes them over, none is lost or sent twice."""
    gate = threading.Event()
    calls: list[int | None] = []

    def history(channel: BarChannel, after: int | None) -> list[LiveBar]:
        calls.append(after)
        if len(calls) == 2:  # the channel's gap fill: slow, the resubscription comes first
            gate.wait(5.0)
            raise ConnectionError("REST timed out")
        return [_bar(T0)] if after is None else [_bar(T0 + k * MIN) for k in (1, 2)]

    source, channel, streams = _source(history)
    source.start()
    try:
        _wait(lambda: source.state == "live")
        source.receive(_msg(T0 + 3 * MIN))
        _wait(lambda: len(calls) == 2)
        streams[-1].acknowledge()  # alpaca-py reconnected by itself meanwhile
        gate.set()
        _wait(lambda: source.state == "live" and len(_bars(channel)) == 4)
        assert _bars(channel) == [0, 1, 2, 3]
        assert calls[2] == T0  # the catch-up's REST since the last pushed bar
    finally:
        source.stop()


def test_bars_expected_between_follows_each_class_calendar() -> None:
    def channel(asset_class: str, timeframe: str) -> BarChannel:
        return BarChannel("X", "X", asset_class, timeframe, BarHub())

    def ns(text: str) -> int:
        return int(pd.Timestamp(text, tz="America/New_York").tz_convert("UTC").value)

    crypto = channel("crypto", "1min")
    assert not live.bars_expected_between(crypto, ns("2026-03-02 10:00"), ns("2026-03-02 10:01"))
    assert live.bars_expected_between(crypto, ns("2026-03-02 10:00"), ns("2026-03-02 10:02"))
    assert live.bars_expected_between(crypto, ns("2026-03-06 23:59"), ns("2026-03-09 00:00"))
    stock = channel("us_equity", "1min")
    assert live.bars_expected_between(stock, ns("2026-03-02 10:00"), ns("2026-03-02 10:05"))
    assert not live.bars_expected_between(stock, ns("2026-03-02 15:59"), ns("2026-03-03 09:30"))
    daily = channel("equities", "1d")
    friday, monday, wednesday = (
        ns("2026-03-06 16:00"),
        ns("2026-03-09 16:00"),
        ns("2026-03-11 16:00"),
    )
    assert not live.bars_expected_between(daily, friday, monday)  # a weekend
    assert live.bars_expected_between(daily, monday, wednesday)  # Tuesday is missing


def test_gap_fills_past_the_budget_let_the_held_bars_through_unchecked() -> None:
    fetched: list[int | None] = []

    def history(channel: BarChannel, after: int | None) -> list[LiveBar]:
        fetched.append(after)
        return [_bar(T0)] if after is None else []  # an illiquid symbol: empty minutes

    source, channel, _ = _source(history, gap_fills_per_minute=1)
    source.start()
    try:
        _wait(lambda: source.state == "live")
        source.receive(_msg(T0 + 3 * MIN))  # a gap: checked over REST
        _wait(lambda: len(_bars(channel)) == 2)
        source.receive(_msg(T0 + 6 * MIN))  # another within the minute: no budget left
        _wait(lambda: len(_bars(channel)) == 3)
        assert _bars(channel) == [0, 3, 6]
        assert fetched == [None, T0]  # one REST call for the two gaps
        assert (source.gap_filled, source.gaps_unchecked) == (0, 1)
    finally:
        source.stop()


def test_a_rest_outage_holds_a_gap_for_one_budget_of_attempts_at_most() -> None:
    attempts: list[int | None] = []

    def history(channel: BarChannel, after: int | None) -> list[LiveBar]:
        if after is None:
            return [_bar(T0)]
        attempts.append(after)
        raise ConnectionError("REST is down")

    source, channel, _ = _source(history, gap_fills_per_minute=3)
    source.start()
    try:
        _wait(lambda: source.state == "live")
        source.receive(_msg(T0 + 3 * MIN))
        _wait(lambda: len(_bars(channel)) == 2)
        assert _bars(channel) == [0, 3]  # went on after the budget's attempts
        assert len(attempts) == 3
        assert source.gaps_unchecked == 1
    finally:
        source.stop()


def test_gaps_of_several_channels_are_filled_in_one_rest_round() -> None:
    """Two channels skip bars at the same time: one History call asks for both (the store
    makes it one clock and one bars request), and each channel gets only its own bars."""
    rounds: list[list[str]] = []
    symbols = ["BTC/USD", "ETH/USD", "SOL/USD"]
    rest = {s: [_bar(T0 + k * MIN, s) for k in range(5)] for s in symbols}

    def history(channel: BarChannel, after: int | None) -> list[LiveBar]:
        if after is None:
            return rest[channel.symbol][:1]
        return [b for b in rest[channel.symbol] if b.ts_ns > after]

    source, channels, _ = _sources(history, symbols, rounds=rounds, tick=0.5)
    source._wake = _NoWake()  # the gaps wait for the supervisor's next tick, not wake it
    source.start()
    try:
        _wait(lambda: source.state == "live")
        for s in symbols[:2]:
            source.receive(_msg(T0 + 3 * MIN, s))  # bars 1 and 2 skipped
        source.receive(_msg(T0 + MIN, "SOL/USD"))  # no gap
        _wait(lambda: len(_bars(channels[0])) == 4 and len(_bars(channels[1])) == 4)
        assert [_bars(c) for c in channels] == [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1]]
        assert rounds == [symbols, symbols[:2]]  # the backfill, then one round for both gaps
        assert source.gap_filled == 4
        assert all(bar.symbol == c.symbol for c in channels for s, bar in c.items if s < 0)
    finally:
        source.stop()


def test_history_batches_share_a_request_by_timeframe_and_nearby_starts() -> None:
    from modelyard.brokers.alpaca_store import BATCH_SPAN_BARS, history_batches

    hub = BarHub()
    t0 = pd.Timestamp("2026-03-02 15:00", tz="UTC")

    def item(symbol: str, timeframe: str, minutes: int) -> tuple[BarChannel, int, pd.Timestamp]:
        start = t0 + pd.Timedelta(minutes=minutes)
        return BarChannel(symbol, symbol, "crypto", timeframe, hub), start.value, start

    far = BATCH_SPAN_BARS + 1  # bars of 1 minute
    items = [
        item("A", "1min", 3),
        item("B", "1h", 0),
        item("C", "1min", 0),
        item("D", "1min", far),  # too far behind C's start to share its request
        item("E", "1h", far),  # within B's span: hours, not minutes
    ]
    batches = history_batches(items)
    names = [[channel.symbol for channel, _, _ in batch] for batch in batches]
    assert names == [["C", "A"], ["D"], ["B", "E"]]
    assert all(len({c.timeframe for c, _, _ in b}) == 1 for b in batches)
