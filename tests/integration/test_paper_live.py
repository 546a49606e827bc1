"""Live paper trading through Backtrader on the emulator: store, live feed, broker, runner.

Real alpaca-py against the emulator, nothing patched. Each session ends with
:func:`assert_invariant` (journal <-> venue orders and positions).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd
import pytest
from alpaca.data.live import CryptoDataStream

from modelyard.brokers import make_client_order_id
from modelyard.brokers.alpaca_store import AlpacaStore
from modelyard.brokers.paper import PaperConfig, PaperSession, emulator_risk
from modelyard.emulator import Emulator
from modelyard.feeds.bt_feeds import bt_nums_to_utc
from modelyard.feeds.live import BarChannel, BarHub, StreamSource, label_bar_time
from tests.integration.test_paper_core import assert_invariant, wait_until

TIMEFRAMES = {"equities": "1d", "crypto": "1h"}


@pytest.fixture
def live_emu(venue_bars: dict[str, pd.DataFrame]) -> Iterator[Emulator]:
    """Paused at bar 400 of the timeline (history for the backfill), market hours ignored."""
    timeline = sorted({t for f in venue_bars.values() for t in f.index})
    start = pd.Timestamp(timeline[400]).to_pydatetime()
    with Emulator(venue_bars, speed=0, start=start, rate_limit_per_minute=1_000_000) as emu:
        yield emu


def make_session(emu: Emulator, tmp_path: Path, symbols: tuple[str, ...], **store: Any):
    store.setdefault("silence_timeout", 5.0)
    s = AlpacaStore.for_emulator(
        emu, journal=tmp_path / "journal.db", risk=emulator_risk(TIMEFRAMES), **store
    )
    config = PaperConfig(symbols=symbols, timeframes=TIMEFRAMES, backfill_bars=150)
    return PaperSession(s, config)


class Running:
    """A session's ``run()`` in a thread; ``step()`` advances the venue clock."""

    def __init__(self, session: PaperSession, emu: Emulator, *, wait: bool = True) -> None:
        self.session, self.emu = session, emu
        self.result: Any = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if wait:
            self.wait_live()

    def wait_live(self) -> None:
        session, emu = self.session, self.emu
        wait_until(lambda: all(s.state == "live" for s in session.store.sources.values()), 15)
        emu.wait_for_streams(timeout=10.0, trading=1)

    def _run(self) -> None:
        self.result = self.session.run()

    def step(self, n: int, pause: float = 0.03) -> None:
        for _ in range(n):
            self.emu.advance(1)
            time.sleep(pause)

    def finish(self) -> Any:
        time.sleep(0.3)
        self.session.stop()
        self.thread.join(30.0)
        assert not self.thread.is_alive()
        return self.result


def record_orders(session: PaperSession) -> list[tuple[str, int, str]]:
    seen: list[tuple[str, int, str]] = []
    original = session.core.on_order

    def spy(order: Any) -> None:
        seen.append((order.data._name, order.ref, order.getstatusname()))
        original(order)

    session.core.on_order = spy  # type: ignore[method-assign]
    return seen


def sequences(seen: list[tuple[str, int, str]]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for _, ref, status in seen:
        out.setdefault(ref, []).append(status)
    return out


@pytest.mark.slow
def test_end_to_end_session_equity_and_crypto(live_emu: Emulator, tmp_path: Path) -> None:
    session = make_session(live_emu, tmp_path, ("AAPL", "BTC/USD"))
    seen = record_orders(session)
    running = Running(session, live_emu)
    running.step(150)
    result = running.finish()
    by_ref = sequences(seen)
    assert ["Submitted", "Accepted", "Completed"] in by_ref.values(), by_ref
    traded = {name for name, _, status in seen if status == "Completed"}
    assert "BTC/USD" in traded
    assert len(result.orders) > 0
    assert set(result.orders["symbol"]) <= {"AAPL", "BTC/USD"}
    assert len(result.equity) > 10
    assert [r["symbol"] for r in result.routes] == ["AAPL", "BTC/USD"]
    result.save(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(result.FILES)
    assert_invariant(session.store.journal, live_emu)
    session.store.close()


def delivered(session: PaperSession, symbol: str) -> pd.DatetimeIndex:
    data = session.store.datas[symbol]
    return bt_nums_to_utc(data.datetime.array)


def assert_every_bar_once(session: PaperSession, emu: Emulator, symbol: str) -> pd.DatetimeIndex:
    stamps = delivered(session, symbol)
    frame = emu.venue.store._frames[symbol]
    expected = frame.index[(frame.index >= stamps[0]) & (frame.index <= stamps[-1])]
    assert list(stamps) == list(expected)  # none missing, none twice, in order
    return stamps


def test_bars_published_while_the_subscription_is_in_flight_are_not_lost(
    live_emu: Emulator, tmp_path: Path
) -> None:
    # the venue acknowledges the bars subscription 0.8 s late: a backfill fetched before the
    # acknowledgement ends before the bars stepped meanwhile, and the stream never sends them
    live_emu.faults.add("ws_slow_subscribe", stream="crypto", seconds=0.8)
    session = make_session(live_emu, tmp_path, ("BTC/USD",))
    running = Running(session, live_emu, wait=False)
    wait_until(lambda: "crypto" in session.store.sources, 5.0)
    time.sleep(0.3)  # the backfill, when it does not wait for the acknowledgement, is done
    before = live_emu.now
    running.step(3)
    running.wait_live()
    running.step(3)
    running.finish()
    stamps = assert_every_bar_once(session, live_emu, "BTC/USD")
    assert stamps[-1] > before  # the bars stepped during the wait did arrive


def test_a_dropped_data_stream_fills_what_it_missed_while_reconnecting(
    live_emu: Emulator, tmp_path: Path
) -> None:
    # alpaca-py reconnects a dropped stream by itself within about a second (a few with a
    # retry), long before the silence watchdog (15 s here) would notice: the bars published
    # meanwhile come over REST
    session = make_session(live_emu, tmp_path, ("BTC/USD",), silence_timeout=15.0)
    running = Running(session, live_emu)
    source = session.store.sources["crypto"]
    running.step(5)
    live_emu.faults.add("ws_drop", stream="crypto")
    running.step(4)
    wait_until(lambda: source.state == "live" and source.gap_filled > 0, 10.0)
    running.step(3)
    running.finish()
    assert_every_bar_once(session, live_emu, "BTC/USD")
    assert source.gap_filled >= 4
    assert source.reconnects == 0  # alpaca-py reconnected; the watchdog did not fire
    statuses = [s for name, s in session.gate.history if name == "BTC/USD"]
    assert statuses[statuses.index("CONNBROKEN") :][:3] == ["CONNBROKEN", "DELAYED", "LIVE"]
    session.store.close()


def test_each_rest_catch_up_asks_for_every_symbol_of_a_kind_at_once(
    live_emu: Emulator, tmp_path: Path
) -> None:
    # two stocks share one bars request per catch-up (Alpaca allows 200 requests a minute; a
    # request per symbol and round would run out with a few dozen symbols)
    session = make_session(live_emu, tmp_path, ("AAPL", "MSFT", "BTC/USD"), silence_timeout=15.0)
    running = Running(session, live_emu)
    counts = live_emu.request_counts()
    assert counts["/v2/stocks/bars"] == 1  # the backfill of AAPL and MSFT
    assert counts["/v1beta3/crypto/us/bars"] == 1
    stocks = session.store.sources["stock"]
    running.step(30)
    subscribed = stocks._subscriptions
    live_emu.faults.add("ws_drop", stream="stock")
    running.step(60)  # alpaca-py reconnects by itself; its acknowledgement starts a catch-up
    wait_until(lambda: stocks._subscriptions > subscribed and stocks.state == "live", 10.0)
    running.step(30)
    running.finish()
    assert_every_bar_once(session, live_emu, "BTC/USD")
    for symbol in ("AAPL", "MSFT"):  # daily bars, labelled at the session's close
        stamps = delivered(session, symbol)
        frame = live_emu.venue.store._frames[symbol]
        labels = [label_bar_time(t.value, "equities", "1d") for t in frame.index]
        expected = [t for t in labels if stamps[0].value <= t <= stamps[-1].value]
        assert [t.value for t in stamps] == expected  # none missing, none twice, in order
    # one bars request per round for both stocks: the backfill, the catch-up, and any gap
    # fills (the emulator's daily bars skip holidays the calendar check asks REST about)
    counts = live_emu.request_counts()
    assert stocks.rest_rounds >= 2
    assert counts["/v2/stocks/bars"] == stocks.rest_rounds
    assert counts["/v1beta3/crypto/us/bars"] == session.store.sources["crypto"].rest_rounds
    assert_invariant(session.store.journal, live_emu)
    session.store.close()


def test_muted_stream_reconnects_and_fills_the_gap(live_emu: Emulator, tmp_path: Path) -> None:
    session = make_session(
        live_emu, tmp_path, ("BTC/USD",), silence_timeout=0.4, reconnect_backoff=(0.05, 0.2)
    )
    running = Running(session, live_emu)
    running.step(10)
    muted_from = live_emu.now
    live_emu.faults.add("ws_mute", stream="crypto")
    running.step(12, pause=0.01)
    muted_to = live_emu.now
    source = session.store.sources["crypto"]
    wait_until(lambda: source.reconnects >= 1, 5.0)
    live_emu.faults.clear()
    running.step(10)
    wait_until(lambda: source.state == "live" and source.gap_filled > 0, 5.0)
    running.step(3)
    result = running.finish()
    assert_every_bar_once(session, live_emu, "BTC/USD")
    assert source.gap_filled >= 12
    statuses = [s for name, s in session.gate.history if name == "BTC/USD"]
    assert "CONNBROKEN" in statuses
    assert statuses[-1] == "DISCONNECTED"
    assert statuses[statuses.index("CONNBROKEN") :][:3] == ["CONNBROKEN", "DELAYED", "LIVE"]
    gap = (muted_from, muted_to)
    for row in session.store.journal.orders():  # nothing traded on the gap's (stale) bars
        assert not (gap[0] < row.decision_bar_ts <= gap[1]) or row.state == "failed", row
    assert result.config["run"]["reconnects"] >= 1
    assert_invariant(session.store.journal, live_emu)
    session.store.close()


def test_a_mute_shorter_than_the_watchdog_loses_no_bar(live_emu: Emulator, tmp_path: Path) -> None:
    # the venue skips BTC/USD's bars for a while, shorter than the silence timeout (30 s):
    # the watchdog sees nothing, the first bar after the mute shows the channel's gap
    session = make_session(live_emu, tmp_path, ("BTC/USD",), silence_timeout=30.0)
    running = Running(session, live_emu)
    source = session.store.sources["crypto"]
    running.step(5)
    muted_from = live_emu.now
    live_emu.faults.add("ws_mute", stream="crypto", symbols=["BTC/USD"])
    running.step(6)
    muted_to = live_emu.now
    live_emu.faults.clear()
    running.step(4)
    wait_until(lambda: source.gap_filled >= 6, 5.0)
    running.step(2)
    running.finish()
    assert_every_bar_once(session, live_emu, "BTC/USD")
    assert source.reconnects == 0  # the watchdog never fired
    statuses = [s for name, s in session.gate.history if name == "BTC/USD"]
    assert "CONNBROKEN" not in statuses
    assert statuses[-3:] == ["DELAYED", "LIVE", "DISCONNECTED"]  # the gap's bars came delayed
    for row in session.store.journal.orders():  # nothing traded on the gap's (late) bars
        assert not (muted_from < row.decision_bar_ts <= muted_to) or row.state == "failed", row
    assert_invariant(session.store.journal, live_emu)
    session.store.close()


def test_an_exception_in_the_handler_does_not_stop_the_stream(
    live_emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    hub = BarHub()
    channel = BarChannel("BTC/USD", "BTC/USD", "crypto", "1h", hub)
    source = StreamSource(
        "crypto",
        lambda: CryptoDataStream(
            live_emu.key_id, live_emu.secret_key, raw_data=True,
            url_override=live_emu.crypto_stream_url,
        ),
        lambda wants: {},
        silence_timeout=30.0,
    )  # fmt: skip
    source.add(channel)
    calls = []

    def boom(bar: Any) -> None:
        calls.append(bar.ts_ns)
        if len(calls) == 2:
            raise RuntimeError("handler bug")

    source.on_bar = boom
    source.start()
    try:
        live_emu.wait_for_streams(timeout=10.0, crypto=1)
        wait_until(lambda: source.state == "live")
        live_emu.advance(6)
        wait_until(lambda: len(calls) == 6)
        assert source.handler_errors == 1
        assert channel.accepted == 5  # the failing bar is lost, the later ones arrive
        assert "handler bug" in caplog.text
    finally:
        source.stop()


class OneOrder(bt.Strategy):  # type: ignore[misc]
    """Buys ``qty`` on the first live bar after arming ``script`` for that order's id."""

    params = (("store", None), ("emu", None), ("script", ()), ("qty", 10.0), ("seen", None))

    def __init__(self) -> None:
        self.sent = False

    def notify_order(self, order: Any) -> None:
        self.p.seen.append((order.getstatusname(), order.executed.size, order.executed.price))

    def next(self) -> None:
        data = self.datas[0]
        if self.sent or data._laststatus != data.LIVE:
            return
        store: AlpacaStore = self.p.store
        bar = pd.Timestamp(bt.num2date(data.datetime[0])).tz_localize("UTC").to_pydatetime()
        seq = store.journal.next_seq(store.executor.strategy_id, "AAPL", bar)
        coid = make_client_order_id(store.executor.strategy_id, "AAPL", bar, seq)
        self.p.emu.faults.script(coid, list(self.p.script), interval=0.05)
        self.buy(data=data, size=self.p.qty)
        self.sent = True


@pytest.mark.parametrize(
    ("script", "final"),
    [
        (("new", "partial_fill:0.3", "partial_fill:0.5", "fill"), "Completed"),
        (("new", "partial_fill:0.4", "canceled"), "Canceled"),
    ],
)
def test_partial_fills_reach_notify_order(
    live_emu: Emulator, tmp_path: Path, script: tuple[str, ...], final: str
) -> None:
    store = AlpacaStore.for_emulator(
        live_emu, journal=tmp_path / "j.db", risk=emulator_risk(TIMEFRAMES), silence_timeout=10.0
    )
    seen: list[tuple[str, float, float]] = []
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.setbroker(store.getbroker())
    cerebro.adddata(store.getdata("AAPL", "1d", backfill_bars=5), name="AAPL")
    cerebro.addstrategy(OneOrder, store=store, emu=live_emu, script=script, seen=seen)
    thread = threading.Thread(target=cerebro.run, daemon=True)
    thread.start()
    wait_until(lambda: store.sources["stock"].state == "live", 10.0)
    live_emu.wait_for_streams(timeout=10.0, trading=1)
    for _ in range(40):  # to the next AAPL bar, which is live
        live_emu.advance(1)
        if any(s[0] == "Submitted" for s in seen):
            break
        time.sleep(0.02)
    wait_until(lambda: any(s[0] == final for s in seen), 5.0)
    store.stop()
    thread.join(10.0)
    names = [s[0] for s in seen]
    partials = names.count("Partial")
    assert names == ["Submitted", "Accepted", *["Partial"] * partials, final]
    assert partials == (2 if final == "Completed" else 1)
    (row,) = store.journal.orders()
    fills = store.journal.fills(row.client_order_id)
    vwap = sum(q * p for _, q, p in fills) / sum(q for _, q, _ in fills)
    assert seen[-1][1] == pytest.approx(row.filled_qty)
    assert seen[-1][2] == pytest.approx(vwap)
    assert row.avg_fill_price == pytest.approx(vwap)
    assert_invariant(store.journal, live_emu)
    store.close()


def test_a_fill_between_bars_reaches_notify_order_without_a_bar(
    live_emu: Emulator, tmp_path: Path
) -> None:
    """The order's updates come 50-100 ms after it, and no bar follows: the trade updates
    wake the loop (``BarHub.poke``), and with Backtrader's ``quicknotify`` the strategy hears
    of them at once. Without the wake the loop would sleep through the data's qcheck (30 s
    here) and the test would time out."""
    store = AlpacaStore.for_emulator(
        live_emu, journal=tmp_path / "j.db", risk=emulator_risk(TIMEFRAMES), silence_timeout=60.0
    )
    seen: list[tuple[str, float, float]] = []
    cerebro = bt.Cerebro(stdstats=False, quicknotify=True)
    cerebro.setbroker(store.getbroker())
    data = store.getdata("AAPL", "1d", backfill_bars=5)
    data.p.qcheck = 30.0
    cerebro.adddata(data, name="AAPL")
    script = ("new", "fill")
    cerebro.addstrategy(OneOrder, store=store, emu=live_emu, script=script, seen=seen)
    thread = threading.Thread(target=cerebro.run, daemon=True)
    thread.start()
    wait_until(lambda: store.sources["stock"].state == "live", 10.0)
    live_emu.wait_for_streams(timeout=10.0, trading=1)
    for _ in range(40):  # to the next AAPL bar, which is live; then no more bars
        live_emu.advance(1)
        if wait_until_or_not(lambda: bool(store.journal.orders()), 0.05):
            break
    wait_until(lambda: any(s[0] == "Completed" for s in seen), 5.0)
    assert [s[0] for s in seen] == ["Submitted", "Accepted", "Completed"]
    store.stop()
    thread.join(40.0)
    assert_invariant(store.journal, live_emu)
    store.close()


def wait_until_or_not(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return bool(condition())


def test_keys_never_in_logs_or_repr(
    live_emu: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    session = make_session(live_emu, tmp_path, ("BTC/USD",))
    running = Running(session, live_emu)
    running.step(3)
    running.finish()
    text = caplog.text + repr(session.store) + str(session.store)
    assert "AlpacaStore(paper" in repr(session.store)
    assert live_emu.key_id not in text
    assert live_emu.secret_key not in text
    session.store.close()


class BuyBothOnce(bt.Strategy):  # type: ignore[misc]
    """On the first live bar: buys every data, plus one order it cancels before the flush."""

    params = (("seen", None),)

    def __init__(self) -> None:
        self.sent = False

    def notify_order(self, order: Any) -> None:
        self.p.seen.append((order.data._name, order.ref, order.getstatusname()))

    def next(self) -> None:
        if self.sent or any(d._laststatus != d.LIVE for d in self.datas):
            return
        if len({d.datetime[0] for d in self.datas}) != 1:
            return  # wait for a bar step that both datas share
        for data in self.datas:
            self.buy(data=data, size=1)
        assert all(self.broker.has_open_order(d) for d in self.datas)  # queued counts as open
        extra = self.buy(data=self.datas[0], size=1)
        self.cancel(extra)  # still queued: canceled locally, never journaled nor sent
        self.sent = True


def test_orders_of_one_step_are_sent_as_one_batch(live_emu: Emulator, tmp_path: Path) -> None:
    store = AlpacaStore.for_emulator(
        live_emu, journal=tmp_path / "j.db", risk=emulator_risk(TIMEFRAMES), silence_timeout=10.0
    )
    batches: list[list[str]] = []
    original = store.executor.submit_many

    def spy(requests: Any) -> Any:
        batches.append([r.symbol for r in requests])
        return original(requests)

    store.executor.submit_many = spy  # type: ignore[method-assign]
    seen: list[tuple[str, int, str]] = []
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.setbroker(store.getbroker())
    for symbol in ("AAPL", "MSFT"):
        cerebro.adddata(store.getdata(symbol, "1d", backfill_bars=5), name=symbol)
    cerebro.addstrategy(BuyBothOnce, seen=seen)
    thread = threading.Thread(target=cerebro.run, daemon=True)
    thread.start()
    wait_until(lambda: store.sources["stock"].state == "live", 10.0)
    live_emu.wait_for_streams(timeout=10.0, trading=1)
    for _ in range(200):  # notify_order runs on the strategy's next bar: keep stepping
        live_emu.advance(1)
        if sum(1 for s in seen if s[2] == "Accepted") == 2:
            break
        time.sleep(0.03)
    store.stop()
    thread.join(10.0)
    assert batches[0] == ["AAPL", "MSFT"]  # one batch, the canceled order not in it
    by_ref = sequences(seen)  # type: ignore[arg-type]
    assert sorted(v[:2] for v in by_ref.values()) == [
        ["Submitted", "Accepted"], ["Submitted", "Accepted"], ["Submitted", "Canceled"],
    ]  # fmt: skip
    assert len(store.journal.orders()) == 2
    assert_invariant(store.journal, live_emu)
    store.close()


class _Holds(bt.Strategy):  # type: ignore[misc]
    """Records the broker's position of the first data at the first bar it sees."""

    params = (("seen", None),)

    def next(self) -> None:
        if not self.p.seen:
            position = self.broker.getposition(self.datas[0])
            self.p.seen.append((position.size, position.price))


def test_a_position_held_at_start_keeps_its_entry_price(live_emu: Emulator, tmp_path: Path) -> None:
    """A position the venue already holds is adopted with its average entry price (the basis
    of its P&L), not at price 0."""
    live_emu.set_position("AAPL", 5.0, avg_entry_price=123.5)
    store = AlpacaStore.for_emulator(
        live_emu, journal=tmp_path / "j.db", risk=emulator_risk(TIMEFRAMES), silence_timeout=10.0
    )
    seen: list[tuple[float, float]] = []
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.setbroker(store.getbroker())
    cerebro.adddata(store.getdata("AAPL", "1d", backfill_bars=5), name="AAPL")
    cerebro.addstrategy(_Holds, seen=seen)
    thread = threading.Thread(target=cerebro.run, daemon=True)
    thread.start()
    wait_until(lambda: bool(seen), 10.0)
    store.stop()
    thread.join(10.0)
    assert seen[0] == (5.0, 123.5)
    store.close()
