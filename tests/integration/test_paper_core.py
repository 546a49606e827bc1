"""The paper-trading core against the emulator with the real alpaca-py client.

Every scenario ends with :func:`assert_invariant`: each journaled intent matches exactly one
venue order by ``client_order_id`` or is ``failed`` with a reason, no id appears twice at the
venue, and the venue's positions equal what the journal implies.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from alpaca.trading.stream import TradingStream

from modelyard.brokers import (
    AlpacaClient,
    Journal,
    OrderExecutor,
    RetryPolicy,
    RiskConfig,
    RiskEngine,
    make_client_order_id,
    reconcile,
)
from modelyard.brokers.executor import OrderRequest
from modelyard.brokers.journal import broker_state
from modelyard.emulator import Emulator
from modelyard.errors import OrderRejected, RiskLimitBreached

STRATEGY = "trend1"
WORKER = Path(__file__).with_name("_crash_worker.py")
FAST = RetryPolicy(
    connect_timeout=1.0, read_timeout=2.0, max_attempts=8, base_delay=0.01, max_delay=0.05
)


@dataclass
class Core:
    emu: Emulator
    path: Path
    journal: Journal
    client: AlpacaClient
    risk: RiskEngine
    ex: OrderExecutor

    def reopen(self, config: RiskConfig | None = None) -> None:
        """A process restart: close everything, open the journal and a new client again."""
        self.client.close()
        self.journal.close()
        self.journal = Journal(self.path)
        self.client = AlpacaClient(
            self.emu.key_id, self.emu.secret_key, url_override=self.emu.base_url, policy=FAST
        )
        self.risk = RiskEngine(config or self.risk.config, self.journal)
        self.ex = OrderExecutor(self.journal, self.client, self.risk, STRATEGY)

    def settle(self) -> None:
        """Poll every unsettled order over REST (for tests where the stream is not the subject)."""
        for row in self.journal.orders():
            if not row.is_terminal:
                self.ex.sync_order(row.client_order_id)


def build_core(emu: Emulator, path: Path, config: RiskConfig, policy: RetryPolicy = FAST) -> Core:
    journal = Journal(path)
    client = AlpacaClient(emu.key_id, emu.secret_key, url_override=emu.base_url, policy=policy)
    risk = RiskEngine(config, journal)
    return Core(emu, path, journal, client, risk, OrderExecutor(journal, client, risk, STRATEGY))


@pytest.fixture
def core_factory(emulator: Emulator, tmp_path: Path) -> Iterator[Callable[..., Core]]:
    """``core_factory(config=..., policy=...)``: executor on a journal in tmp_path, market open."""
    emulator.advance(16)  # 2011-12-19 16:00 UTC: the NYSE session is open
    cores: list[Core] = []

    def build(config: RiskConfig | None = None, policy: RetryPolicy = FAST) -> Core:
        core = build_core(emulator, tmp_path / f"journal{len(cores)}.db", config or RiskConfig())
        if policy is not FAST:
            core.client.close()
            core.client = AlpacaClient(
                emulator.key_id, emulator.secret_key, url_override=emulator.base_url, policy=policy
            )
            core.ex = OrderExecutor(core.journal, core.client, core.risk, STRATEGY)
        cores.append(core)
        return core

    yield build
    for core in cores:
        core.client.close()
        core.journal.close()


@pytest.fixture
def core(core_factory: Callable[..., Core]) -> Core:
    return core_factory()


def assert_invariant(journal: Journal, emu: Emulator) -> None:
    venue_orders = emu.orders()
    ids = [o["client_order_id"] for o in venue_orders]
    assert len(ids) == len(set(ids)), f"a client_order_id was sent twice: {ids}"
    by_id = {o["client_order_id"]: o for o in venue_orders}
    rows = journal.orders()
    for row in rows:
        venue = by_id.get(row.client_order_id)
        if row.state == "failed":
            assert row.reason, row
            assert venue is None, f"{row.client_order_id} failed locally but exists at the venue"
            continue
        assert venue is not None, f"{row.client_order_id} ({row.state}) is not at the venue"
        assert row.broker_order_id == venue["id"]
        assert row.state == broker_state(venue["status"]), (row.state, venue["status"])
        assert row.filled_qty == pytest.approx(float(venue["filled_qty"]), abs=1e-9)
    ours = {r.client_order_id for r in rows}
    assert [i for i in ids if i.startswith("my-") and i not in ours] == []
    implied, held = journal.positions(), emu.positions()
    assert sorted(implied) == sorted(held), (implied, held)
    for symbol, qty in held.items():
        assert implied[symbol] == pytest.approx(qty, abs=1e-9), symbol


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def next_coid(core: Core, symbol: str = "AAPL") -> str:
    now = core.emu.now
    return make_client_order_id(STRATEGY, symbol, now, core.journal.next_seq(STRATEGY, symbol, now))


def start_stream(core: Core, run_stream: Callable[..., object]) -> object:
    stream = TradingStream(
        core.emu.key_id, core.emu.secret_key, url_override=core.emu.trading_stream_url
    )
    return run_stream(
        core.emu,
        stream,
        "trading",
        lambda r: stream.subscribe_trade_updates(core.ex.handle_trade_update),
    )


def buy(core: Core, qty: float = 5, symbol: str = "AAPL", **kwargs: object):  # type: ignore[no-untyped-def]
    return core.ex.submit(
        symbol, "buy", qty=qty, price=core.emu.venue.price(symbol) or 380.0,
        decision_bar_ts=core.emu.now, **kwargs,
    )  # fmt: skip


# -- scenarios ----------------------------------------------------------------------------------
def test_happy_path(core: Core, advance_until_bar) -> None:
    row = buy(core, 5)
    assert row.state == "acknowledged"
    assert row.client_order_id.startswith("my-trend1-")
    assert len(row.client_order_id) <= 48
    advance_until_bar(core.emu, "AAPL")
    core.settle()
    filled = core.journal.get(row.client_order_id)
    assert (filled.state, filled.filled_qty) == ("filled", 5.0)
    assert [e[1] for e in core.journal.events(row.client_order_id)] == [
        "intent", "submitted", "acknowledged", "filled",
    ]  # fmt: skip
    assert core.client.request_counts["POST /v2/orders"] == 1
    assert_invariant(core.journal, core.emu)


def test_burst_of_five_429s_is_retried(core: Core) -> None:
    core.emu.faults.add("rate_limit", path="/v2/orders", count=5)
    row = buy(core, 2)
    assert row.state == "acknowledged"
    assert core.client.request_counts["POST /v2/orders"] == 6
    assert len(core.emu.orders()) == 1
    assert_invariant(core.journal, core.emu)


def test_accept_then_504_adopts_the_order(core: Core) -> None:
    core.emu.faults.add("accept_then_504", path="/v2/orders")
    row = buy(core, 2)
    assert row.state == "acknowledged"
    assert core.client.request_counts["POST /v2/orders"] == 1  # looked up, not resent
    assert len(core.emu.orders()) == 1
    assert_invariant(core.journal, core.emu)


def test_post_hanging_past_the_read_timeout(core_factory: Callable[..., Core]) -> None:
    policy = RetryPolicy(read_timeout=0.5, base_delay=0.01, max_delay=0.05)
    core = core_factory(policy=policy)
    core.emu.faults.add("delay", path="/v2/orders", seconds=2.0)
    started = time.monotonic()
    row = buy(core, 2)
    assert time.monotonic() - started < 1.8
    # the lookup found nothing yet (the venue is still sleeping), so it was resent, same id
    assert row.state == "acknowledged"
    assert core.client.request_counts["POST /v2/orders"] == 2
    time.sleep(1.8)  # the hung first POST lands now and is refused as a duplicate id
    assert len(core.emu.orders()) == 1
    assert_invariant(core.journal, core.emu)


def test_html_502_on_get_and_on_post(core: Core) -> None:
    core.emu.faults.add("server_error", path="/v2/clock", status=502, body="html", count=2)
    core.emu.faults.add("server_error", path="/v2/orders", status=502, body="html")
    row = buy(core, 1)
    assert row.state == "acknowledged"
    assert core.client.request_counts["GET /v2/clock"] == 3
    assert core.client.request_counts["POST /v2/orders"] == 2  # 502 -> looked up (404) -> resent
    assert_invariant(core.journal, core.emu)


def test_403_buying_power_fails_at_once(core: Core) -> None:
    with pytest.raises(OrderRejected) as info:
        buy(core, 10_000)
    assert (info.value.status, info.value.code) == (403, 40310000)
    (row,) = core.journal.orders()
    assert row.state == "failed"
    assert "403" in (row.reason or "")
    assert core.client.request_counts["POST /v2/orders"] == 1
    assert core.emu.orders() == []
    assert_invariant(core.journal, core.emu)


def test_422_validation_fails_at_once(core: Core) -> None:
    core.emu.faults.add("reject", path="/v2/orders", status=422, message="bad order")
    with pytest.raises(OrderRejected) as info:
        buy(core, 1)
    assert (info.value.status, info.value.code) == (422, 40010001)
    assert core.journal.orders()[0].reason == (
        "rejected: HTTP 422 code 40010001: POST /v2/orders "
        f"{core.journal.orders()[0].client_order_id}: HTTP 422 (code 40010001): bad order"
    )
    assert core.client.request_counts["POST /v2/orders"] == 1
    assert_invariant(core.journal, core.emu)


def test_partial_fills_then_expiry(core: Core, run_stream) -> None:
    runner = start_stream(core, run_stream)
    coid = next_coid(core)
    core.emu.faults.add("partial_then_expire", client_order_id=coid, fraction=0.4)
    row = buy(core, 10)
    assert row.client_order_id == coid
    wait_until(lambda: core.journal.get(coid).state == "expired")
    done = core.journal.get(coid)
    assert done.filled_qty == pytest.approx(4.0)
    assert done.avg_fill_price == pytest.approx(core.emu.venue.price("AAPL"))
    assert [e[1] for e in core.journal.events(coid)][-2:] == ["partially_filled", "expired"]
    runner.stop()  # type: ignore[attr-defined]
    assert_invariant(core.journal, core.emu)


def test_replayed_fill_event_is_ignored(core: Core, run_stream, advance_until_bar) -> None:
    runner = start_stream(core, run_stream)
    captured: list[object] = []
    original = core.ex.on_trade_update

    def spy(event: object) -> None:
        captured.append(event)
        original(event)

    core.ex.on_trade_update = spy  # type: ignore[method-assign]
    core.emu.faults.add("duplicate_event", count=2)
    row = buy(core, 3)
    advance_until_bar(core.emu, "AAPL")
    wait_until(lambda: sum(1 for e in captured if getattr(e, "event", "") == "fill") == 2)
    fill = next(e for e in captured if getattr(e, "event", "") == "fill")
    core.ex.on_trade_update(fill)  # and once more by hand
    assert len(core.journal.fills(row.client_order_id)) == 1
    assert core.journal.get(row.client_order_id).filled_qty == 3.0
    runner.stop()  # type: ignore[attr-defined]
    assert_invariant(core.journal, core.emu)


def test_events_lost_while_the_stream_is_down(core: Core, run_stream, advance_until_bar) -> None:
    runner = start_stream(core, run_stream)
    core.emu.faults.add("ws_mute", stream="trading")
    row = buy(core, 4)
    advance_until_bar(core.emu, "AAPL")
    time.sleep(0.2)
    assert core.journal.get(row.client_order_id).state == "acknowledged"  # the fill was lost
    core.emu.faults.clear()
    report = reconcile(core.journal, core.client, core.risk)
    assert report.ok, report
    assert {d.kind for d in report.discrepancies} == {"order_fill", "order_state"}
    assert core.journal.get(row.client_order_id).state == "filled"
    runner.stop()  # type: ignore[attr-defined]
    assert_invariant(core.journal, core.emu)


def _crash(core: Core, point: str) -> None:
    env = {
        **os.environ,
        "CRASH_POINT": point,
        "APCA_API_KEY_ID": core.emu.key_id,
        "APCA_API_SECRET_KEY": core.emu.secret_key,
    }
    args = [
        sys.executable,
        str(WORKER),
        str(core.path),
        core.emu.base_url,
        core.emu.now.isoformat(),
    ]
    done = subprocess.run(args, env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode == -9, done.stderr.decode()[-2000:]


def test_crash_after_intent_before_post(core: Core, advance_until_bar) -> None:
    _crash(core, "intent_written")
    core.reopen()
    (row,) = core.journal.orders()
    assert row.state == "intent"
    assert core.emu.orders() == []
    (recovered,) = core.ex.recover()
    assert recovered.state == "acknowledged"
    assert core.ex.recover() == []  # nothing left to resolve; no second send
    advance_until_bar(core.emu, "AAPL")
    core.settle()
    assert_invariant(core.journal, core.emu)
    assert core.emu.positions() == {"AAPL": 3.0}


def test_crash_after_post_before_acknowledgement(core: Core) -> None:
    _crash(core, "posted")
    core.reopen()
    (row,) = core.journal.orders()
    assert row.state == "intent"  # "submitted" is journaled with the answer
    assert len(core.emu.orders()) == 1
    (recovered,) = core.ex.recover()
    assert recovered.state == "acknowledged"
    assert core.client.request_counts["POST /v2/orders"] == 0  # adopted, not resent
    assert_invariant(core.journal, core.emu)


def test_restart_with_open_partial_order_and_external_change(core: Core) -> None:
    coid = next_coid(core)
    core.emu.faults.script(coid, ["new", "partial_fill:0.5"], interval=0.01)
    buy(core, 6, order_type="limit", limit_price=1.0)
    wait_until(lambda: core.emu.positions().get("AAPL") == 3.0)
    core.emu.set_position("MSFT", 7.0)  # behind our back
    core.emu.restart()
    core.reopen()
    assert core.ex.recover() == []
    report = reconcile(core.journal, core.client, core.risk)
    assert report.ok, report
    row = core.journal.get(coid)
    assert (row.state, row.filled_qty) == ("partially_filled", 3.0)
    assert {(d.kind, d.key) for d in report.discrepancies} == {
        ("order_fill", coid), ("order_state", coid), ("position", "MSFT"),
    }  # fmt: skip
    assert reconcile(core.journal, core.client, core.risk).discrepancies == []
    assert_invariant(core.journal, core.emu)


def test_crypto_order_reconciled_with_its_position_symbol(core: Core, advance_until_bar) -> None:
    row = core.ex.submit(
        "BTCUSD", "buy", qty=0.0123456789123, price=30_000.0, decision_bar_ts=core.emu.now
    )
    assert (row.symbol, row.position_symbol, row.time_in_force) == ("BTC/USD", "BTCUSD", "gtc")
    assert row.qty == pytest.approx(0.012345678)  # floored to the 1e-9 increment
    advance_until_bar(core.emu, "BTC/USD")
    report = reconcile(core.journal, core.client, core.risk)
    assert report.ok
    assert report.venue_positions == {"BTCUSD": pytest.approx(0.012345678)}
    assert [d.kind for d in report.discrepancies if d.kind == "position"] == []
    assert_invariant(core.journal, core.emu)


def test_kill_switch_trips_and_survives_a_restart(core_factory: Callable[..., Core]) -> None:
    core = core_factory(RiskConfig(max_daily_loss=1_000.0))
    resting = buy(core, 2, order_type="limit", limit_price=1.0)
    core.risk.update_equity(100_000.0, core.emu.now)
    core.risk.update_equity(98_500.0, core.emu.now)
    assert core.risk.kill_switch.active
    assert core.journal.get(resting.client_order_id).state == "canceled"
    with pytest.raises(RiskLimitBreached) as info:
        buy(core, 1)
    assert info.value.rule == "kill_switch"
    core.reopen()
    assert core.risk.kill_switch.active
    with pytest.raises(RiskLimitBreached):
        buy(core, 1)
    core.risk.reset_kill_switch(operator="alice")
    assert buy(core, 1).state == "acknowledged"
    assert_invariant(core.journal, core.emu)


def test_max_position_breach_is_refused_locally(core_factory: Callable[..., Core]) -> None:
    core = core_factory(RiskConfig(max_position_units=20, max_position_notional=5_000))
    with pytest.raises(RiskLimitBreached) as info:
        buy(core, 21)
    assert info.value.rule == "max_position_units"
    with pytest.raises(RiskLimitBreached) as info:
        buy(core, 14)  # 14 x 382.21 > 5,000
    assert info.value.rule == "max_position_notional"
    assert core.client.request_counts["POST /v2/orders"] == 0
    assert core.emu.orders() == []
    reasons = [r.reason or "" for r in core.journal.orders()]
    assert [r.split(":")[1] for r in reasons] == ["max_position_units", "max_position_notional"]
    assert_invariant(core.journal, core.emu)


def test_cancel_racing_a_fill_adopts_the_fill(core: Core) -> None:
    row = buy(core, 2, order_type="limit", limit_price=1.0)
    core.emu.faults.add("cancel_race", client_order_id=row.client_order_id)
    after = core.ex.cancel(row.client_order_id)
    assert (after.state, after.filled_qty) == ("filled", 2.0)
    assert_invariant(core.journal, core.emu)


def test_market_closed_for_equities_while_crypto_trades(core: Core) -> None:
    core.emu.faults.add("market_closed")
    with pytest.raises(RiskLimitBreached) as info:
        buy(core, 1)
    assert info.value.rule == "market_closed"
    row = core.ex.submit("BTC/USD", "buy", qty=0.01, price=30_000.0, decision_bar_ts=core.emu.now)
    assert row.state == "acknowledged"
    assert_invariant(core.journal, core.emu)


def test_stale_decision_bar_is_refused(core: Core) -> None:
    with pytest.raises(RiskLimitBreached) as info:
        core.ex.submit(
            "AAPL", "buy", qty=1, price=380.0, decision_bar_ts=core.emu.now - timedelta(days=3)
        )
    assert info.value.rule == "stale_data"
    assert core.emu.orders() == []


def test_positions_unavailable_is_never_taken_as_flat(core: Core, advance_until_bar) -> None:
    buy(core, 2)
    advance_until_bar(core.emu, "AAPL")
    core.settle()
    core.emu.faults.add("server_error", path="/v2/positions", status=503, count=None)
    report = reconcile(core.journal, core.client, core.risk)
    assert not report.ok
    assert "positions unavailable" in (report.error or "")
    assert report.venue_positions is None
    assert core.journal.positions() == {"AAPL": 2.0}
    core.emu.faults.clear()
    assert_invariant(core.journal, core.emu)


def test_adopted_position_over_the_limit_trips_the_kill_switch(
    core_factory: Callable[..., Core],
) -> None:
    core = core_factory(RiskConfig(max_position_units=5, on_adopted_breach="kill_switch"))
    core.emu.set_position("AAPL", 50.0)
    report = reconcile(core.journal, core.client, core.risk)
    assert not report.ok
    assert report.breaches[0].startswith("max_position_units")
    assert core.risk.kill_switch.active
    assert_invariant(core.journal, core.emu)


def test_keys_never_reach_a_log_line_or_repr(
    core: Core, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APCA_API_KEY_ID", core.emu.key_id)
    monkeypatch.setenv("APCA_API_SECRET_KEY", core.emu.secret_key)
    caplog.set_level(logging.DEBUG)
    with AlpacaClient(url_override=core.emu.base_url, policy=FAST) as client:
        client.get_account()
        core.emu.faults.add("rate_limit", path="/v2/clock")
        client.get_clock()
        text = repr(client) + str(client) + caplog.text
    assert "AlpacaClient(paper" in repr(client)
    assert core.emu.key_id not in text
    assert core.emu.secret_key not in text


@pytest.mark.parametrize("mode", ["after_headers", "partial_body"])
def test_connection_dropped_after_the_post_was_processed(core: Core, mode: str) -> None:
    core.emu.faults.add("drop_connection", path="/v2/orders", mode=mode)
    row = buy(core, 1)
    assert row.state == "acknowledged"
    assert core.client.request_counts["POST /v2/orders"] == 1  # found by its id, not resent
    assert_invariant(core.journal, core.emu)


def test_a_get_past_the_read_timeout_is_retried(core_factory: Callable[..., Core]) -> None:
    core = core_factory(policy=RetryPolicy(read_timeout=0.3, base_delay=0.01, max_delay=0.05))
    core.emu.faults.add("delay", path="/v2/clock", seconds=1.0)
    assert buy(core, 1).state == "acknowledged"
    assert core.client.request_counts["GET /v2/clock"] == 2
    assert_invariant(core.journal, core.emu)


# -- batches (one bar's orders: one clock read, one durable commit, concurrent POSTs) -----------
BATCH_WORKER = Path(__file__).with_name("_batch_crash_worker.py")


def batch_executor(core: Core, workers: int = 3) -> OrderExecutor:
    """An executor on ``core``'s journal whose POST workers each have their own client."""
    emu = core.emu

    def factory() -> AlpacaClient:
        return AlpacaClient(emu.key_id, emu.secret_key, url_override=emu.base_url, policy=FAST)

    return OrderExecutor(
        core.journal, core.client, core.risk, STRATEGY, client_factory=factory,
        post_workers=workers,
    )  # fmt: skip


def requests_for(core: Core, *specs: tuple[str, float]) -> list[OrderRequest]:
    return [
        OrderRequest(symbol, "buy", core.emu.now, qty=qty, price=core.emu.venue.price(symbol))
        for symbol, qty in specs
    ]


def test_batch_is_sent_concurrently_with_one_clock_read(core: Core) -> None:
    ex = batch_executor(core)
    try:
        specs = [("AAPL", 1.0), ("MSFT", 2.0), ("AAPL", 3.0), ("MSFT", 4.0), ("AAPL", 5.0)]
        results = ex.submit_many(requests_for(core, *specs))
        counts = ex.request_counts()
    finally:
        ex.close()
    assert [r.error for r in results] == [None] * 5
    assert [r.row.state for r in results if r.row] == ["acknowledged"] * 5
    assert [r.row.seq for r in results if r.row] == [0, 0, 1, 1, 2]
    assert counts["GET /v2/clock"] == 1
    assert counts["POST /v2/orders"] == 5
    assert core.client.request_counts["POST /v2/orders"] == 0  # all on the workers' clients
    assert ex.request_counts() == counts  # kept after close()
    assert len(core.emu.orders()) == 5
    assert_invariant(core.journal, core.emu)


def test_batch_risk_checks_see_the_orders_before_them(core_factory: Callable[..., Core]) -> None:
    core = core_factory(RiskConfig(max_position_units=5))
    ex = batch_executor(core)
    try:
        results = ex.submit_many(requests_for(core, ("AAPL", 2), ("AAPL", 2), ("AAPL", 2)))
    finally:
        ex.close()
    assert [r.row.state for r in results if r.row] == ["acknowledged", "acknowledged", "failed"]
    error = results[2].error
    assert isinstance(error, RiskLimitBreached)
    assert error.rule == "max_position_units"
    assert len(core.emu.orders()) == 2
    assert_invariant(core.journal, core.emu)


def test_batch_settles_each_order_on_its_own(core: Core) -> None:
    ex = batch_executor(core)
    coids = [
        make_client_order_id(STRATEGY, "AAPL", core.emu.now, 0),
        make_client_order_id(STRATEGY, "MSFT", core.emu.now, 0),
        make_client_order_id(STRATEGY, "AAPL", core.emu.now, 1),
    ]
    core.emu.faults.add("accept_then_504", path="/v2/orders", client_order_id=coids[0])
    core.emu.faults.add("reject", path="/v2/orders", status=422, client_order_id=coids[1])
    core.emu.faults.add("server_error", path="/v2/orders", status=502, client_order_id=coids[2])
    try:
        specs = [("AAPL", 1), ("MSFT", 1), ("AAPL", 1), ("MSFT", 1), ("BTC/USD", 0.01)]
        results = ex.submit_many(requests_for(core, *specs))
        posts = ex.request_counts()["POST /v2/orders"]
    finally:
        ex.close()
    states = [r.row.state for r in results if r.row]
    assert states == ["acknowledged", "failed", "acknowledged", "acknowledged", "acknowledged"]
    assert isinstance(results[1].error, OrderRejected)
    assert "HTTP 422" in (core.journal.orders()[1].reason or "")
    assert posts == 6  # the 504 adopted by lookup; the 502 looked up (404), then resent once
    assert_invariant(core.journal, core.emu)


def test_batch_with_bad_requests_sends_the_good_ones(core: Core) -> None:
    ex = batch_executor(core)
    bar = core.emu.now
    try:
        results = ex.submit_many(
            [
                OrderRequest("AAPL", "buy", bar, qty=1, price=380.0),
                OrderRequest("AAPL", "buy", bar, qty=1, notional=5.0, price=380.0),
                OrderRequest("AAPL", "buy", bar - timedelta(days=3), qty=1, price=380.0),
                OrderRequest("BTC/USD", "buy", bar, qty=1e-12, price=30_000.0),
            ]
        )
    finally:
        ex.close()
    assert results[0].row is not None
    assert results[0].row.state == "acknowledged"
    assert isinstance(results[1].error, ValueError)
    assert results[1].row is None
    assert isinstance(results[2].error, RiskLimitBreached)
    assert results[2].error.rule == "stale_data"
    assert isinstance(results[3].error, OrderRejected)
    assert "minimum" in str(results[3].error)
    assert [r.state for r in core.journal.orders()] == ["acknowledged", "failed", "failed"]
    assert_invariant(core.journal, core.emu)


def test_crash_in_the_middle_of_a_batch(core: Core) -> None:
    env = {
        **os.environ,
        "CRASH_AFTER_POSTS": "3",
        "APCA_API_KEY_ID": core.emu.key_id,
        "APCA_API_SECRET_KEY": core.emu.secret_key,
    }
    args = [
        sys.executable, str(BATCH_WORKER), str(core.path), core.emu.base_url,
        core.emu.now.isoformat(), "12",
    ]  # fmt: skip
    done = subprocess.run(args, env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    core.reopen()
    rows = core.journal.orders()
    assert len(rows) == 12
    assert {r.state for r in rows} == {"intent"}  # "submitted" is journaled with the answers
    at_venue = {o["client_order_id"] for o in core.emu.orders()}
    assert 3 <= len(at_venue) <= 5  # 3 answered, at most 2 more in flight on 3 workers
    recovered = core.ex.recover()
    assert len(recovered) == 12
    for row in recovered:
        assert row.state == "acknowledged" or (row.state == "failed" and row.reason), row
    assert core.ex.recover() == []  # nothing left to resolve; no second send
    assert core.client.request_counts["POST /v2/orders"] == 12 - len(at_venue)  # only the rest
    assert len(core.emu.orders()) == 12
    assert_invariant(core.journal, core.emu)
