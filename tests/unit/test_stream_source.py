"""StreamSource's catch-up when the venue acknowledges a subscription (see feeds.live):
driven by a stand-in stream object that the source starts and stops like alpaca-py's; the
real streams against the emulator are in tests/integration/test_paper_live.py."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

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


def _wait(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.002)


def _source(
    history: Callable[[BarChannel, int | None], list[LiveBar]], *, acked: bool = True, **kw: Any
) -> tuple[StreamSource, BarChannel, list[StandIn]]:
    streams: list[StandIn] = []

    def factory() -> StandIn:
        streams.append(StandIn(acked))
        return streams[-1]

    channel = BarChannel("BTC/USD", "BTC/USD", "crypto", "1min", BarHub())
    source = StreamSource("crypto", factory, history, silence_timeout=60.0, tick=0.005, **kw)
    source.add(channel)
    return source, channel, streams


def _statuses(channel: BarChannel) -> list[str]:
    return [NAMES[status] for status, _ in channel.items if status >= 0]


def _bar(ts: int) -> LiveBar:
    return LiveBar("BTC/USD", ts, 1.0, 1.0, 1.0, 1.0, 1.0)


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
