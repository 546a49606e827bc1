"""The trade-update gate: a live bar holds trade updates until its step's orders are out."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from modelyard.brokers._trade_updates import TradeUpdateGate
from modelyard.feeds.live import BarChannel, BarHub, StreamSource


def _waiter(gate: TradeUpdateGate) -> tuple[threading.Thread, threading.Event]:
    done = threading.Event()
    thread = threading.Thread(target=lambda: (gate.wait(), done.set()), daemon=True)
    thread.start()
    return thread, done


def test_an_open_gate_does_not_wait() -> None:
    gate = TradeUpdateGate(max_hold=60.0)
    gate.wait()  # returns at once
    gate.hold()
    gate.release()
    gate.wait()


def test_a_held_gate_waits_for_the_release() -> None:
    gate = TradeUpdateGate(max_hold=60.0)
    gate.hold()
    thread, done = _waiter(gate)
    assert not done.wait(0.05)  # still held: the trade update has not gone through
    gate.release()
    assert done.wait(10.0)
    thread.join(10.0)


def test_a_hold_nobody_releases_expires() -> None:
    """A bar without a broker step (no strategy, a stalled loop) never blocks updates for long."""
    gate = TradeUpdateGate(max_hold=0.01)
    gate.hold()
    thread, done = _waiter(gate)
    assert done.wait(10.0)
    thread.join(10.0)


def test_only_accepted_live_bars_call_the_live_bar_hook() -> None:
    source = StreamSource("stock", lambda: None, lambda wants: {})
    source.add(BarChannel("AAPL", "AAPL", "us_equity", "1min", BarHub()))
    calls: list[int] = []
    source.on_live_bar = lambda: calls.append(1)

    def msg(minute: int) -> dict[str, Any]:
        stamp = pd.Timestamp("2024-01-02 14:30", tz="UTC") + pd.Timedelta(minutes=minute)
        return {"S": "AAPL", "t": stamp, "o": 1.0, "h": 1.0, "l": 1.0, "c": 1.0, "v": 1.0}

    source.receive(msg(0))  # backfill: held back, not live yet
    assert calls == []
    source.state = "live"
    source.receive(msg(1))
    source.receive(msg(1))  # a duplicate is dropped: no hold
    source.receive(msg(2))
    assert calls == [1, 1]


@pytest.fixture
def collector() -> Iterator[None]:
    """Every test leaves the garbage collector as it found it."""
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


@pytest.mark.usefixtures("collector")
def test_a_hold_defers_the_garbage_collector_until_the_release() -> None:
    gc.enable()
    gate = TradeUpdateGate(max_hold=60.0)
    gate.hold()
    gate.hold()  # every bar of the step holds
    assert not gc.isenabled()
    gate.expire()  # not expired yet
    assert not gc.isenabled()
    gate.release()
    assert gc.isenabled()
    gate.release()
    assert gc.isenabled()


@pytest.mark.usefixtures("collector")
def test_an_unreleased_hold_gives_the_collector_back_when_it_expires() -> None:
    gc.enable()
    gate = TradeUpdateGate(max_hold=0.01)
    gate.hold()
    assert not gc.isenabled()
    time.sleep(0.02)
    gate.expire()  # the broker's next loop round
    assert gc.isenabled()
    gate.hold()
    gate.wait()  # or the trade-update thread
    assert gc.isenabled()


@pytest.mark.usefixtures("collector")
def test_a_collector_switched_off_by_someone_else_stays_off() -> None:
    gc.disable()
    gate = TradeUpdateGate(max_hold=60.0)
    gate.hold()
    gate.release()
    assert not gc.isenabled()
    gc.enable()
    quiet = TradeUpdateGate(max_hold=60.0, defer_gc=False)
    quiet.hold()
    assert gc.isenabled()
    quiet.release()
