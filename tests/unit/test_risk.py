"""The risk engine: each rule, the kill switch and its persistence, the frozen config."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydantic
import pytest

from modelyard.brokers.journal import Journal
from modelyard.brokers.risk import KillSwitchState, OrderCheck, RiskConfig, RiskEngine
from modelyard.errors import RiskLimitBreached

NOW = datetime(2024, 1, 3, 18, 0, tzinfo=UTC)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal(tmp_path / "j.db") as j:
        yield j


def order(
    qty: float = 1.0, *, symbol: str = "AAPL", price: float = 100.0, asset_class: str = "equities",
    bar: datetime = NOW, market_open: bool | None = True,
) -> OrderCheck:  # fmt: skip
    return OrderCheck(symbol, asset_class, qty, price, bar, NOW, market_open)


def rule_of(engine: RiskEngine, check: OrderCheck, **positions: float) -> str | None:
    try:
        engine.check(check, positions=positions, prices={"AAPL": 100.0, "MSFT": 50.0})
    except RiskLimitBreached as exc:
        return exc.rule
    return None


def test_config_is_frozen_and_rejects_unknown_keys() -> None:
    config = RiskConfig(max_position_units=5)
    with pytest.raises(pydantic.ValidationError):
        config.max_position_units = 6  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="max_positon_units"):
        RiskConfig(max_positon_units=5)  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError):
        RiskConfig(max_daily_loss=-1)


def test_position_limits_in_units_and_notional(journal: Journal) -> None:
    engine = RiskEngine(RiskConfig(max_position_units=10, max_position_notional=800), journal)
    assert rule_of(engine, order(5)) is None
    assert rule_of(engine, order(11, price=1.0)) == "max_position_units"
    assert rule_of(engine, order(3), AAPL=6) == "max_position_notional"
    assert rule_of(engine, order(-3), AAPL=20) is None  # reducing is always allowed


def test_gross_exposure(journal: Journal) -> None:
    engine = RiskEngine(RiskConfig(max_gross_exposure=1_000), journal)
    assert rule_of(engine, order(5), MSFT=8) is None  # 500 + 400
    assert rule_of(engine, order(5), MSFT=12) == "max_gross_exposure"  # 500 + 600


def test_orders_per_minute_is_a_sliding_window(journal: Journal) -> None:
    clock = [0.0]
    engine = RiskEngine(RiskConfig(max_orders_per_minute=2), journal, monotonic=lambda: clock[0])
    for _ in range(2):
        assert rule_of(engine, order()) is None
        engine.record_sent()
        clock[0] += 20.0
    assert rule_of(engine, order()) == "max_orders_per_minute"
    clock[0] = 60.5  # the first order left the window
    assert rule_of(engine, order()) is None


def test_stale_data_and_market_hours(journal: Journal) -> None:
    engine = RiskEngine(RiskConfig(timeframe=timedelta(hours=1)), journal)
    assert rule_of(engine, order(bar=NOW - timedelta(minutes=119))) is None
    assert rule_of(engine, order(bar=NOW - timedelta(minutes=121))) == "stale_data"
    assert rule_of(engine, order(market_open=False)) == "market_closed"
    assert rule_of(engine, order(market_open=None)) == "market_closed"
    crypto = order(symbol="BTCUSD", asset_class="crypto", market_open=False)
    assert rule_of(engine, crypto) is None


def test_daily_loss_trips_the_kill_switch_which_cancels_and_persists(tmp_path: Path) -> None:
    cancelled: list[int] = []
    with Journal(tmp_path / "k.db") as journal:
        engine = RiskEngine(
            RiskConfig(max_daily_loss=500), journal, cancel_open_orders=lambda: cancelled.append(1)
        )
        engine.update_equity(10_000, NOW)
        engine.update_equity(9_600, NOW + timedelta(hours=1))
        assert not engine.kill_switch.active
        engine.update_equity(9_400, NOW + timedelta(hours=2))
        assert engine.kill_switch.active
        assert cancelled == [1]
        assert "max_daily_loss" in (engine.kill_switch.reason or "")
    with Journal(tmp_path / "k.db") as journal:
        engine = RiskEngine(RiskConfig(max_daily_loss=500), journal)
        assert rule_of(engine, order()) == "kill_switch"
        with pytest.raises(ValueError, match="operator"):
            engine.reset_kill_switch(operator=" ")
        engine.reset_kill_switch(operator="alice")
        assert engine.kill_switch.by == "alice"
        assert rule_of(engine, order()) is None


def test_a_new_day_starts_from_its_own_equity(journal: Journal) -> None:
    engine = RiskEngine(RiskConfig(max_daily_loss=500), journal)
    engine.update_equity(10_000, NOW)
    engine.update_equity(9_000, NOW + timedelta(days=1))  # the new day's baseline
    engine.update_equity(8_600, NOW + timedelta(days=1, hours=1))
    assert not engine.kill_switch.active


def test_a_failing_cancel_callback_still_blocks_orders(journal: Journal) -> None:
    def broken() -> None:
        raise RuntimeError("venue down")

    engine = RiskEngine(RiskConfig(), journal, cancel_open_orders=broken)
    engine.trip_kill_switch("operator")
    assert rule_of(engine, order()) == "kill_switch"


def test_check_resend_applies_the_kill_switch_and_staleness(journal: Journal) -> None:
    engine = RiskEngine(RiskConfig(), journal)
    engine.check_resend(NOW - timedelta(days=1), NOW)
    with pytest.raises(RiskLimitBreached, match="stale"):
        engine.check_resend(NOW - timedelta(days=3), NOW)


def test_a_batch_passes_the_kill_switch_it_read_once(journal: Journal) -> None:
    """The executor reads the kill switch once per batch and hands it to every check."""
    engine = RiskEngine(RiskConfig(), journal)
    assert rule_of(engine, order()) is None
    tripped = KillSwitchState(active=True, reason="operator")
    with pytest.raises(RiskLimitBreached, match="operator") as info:
        engine.check(order(), positions={}, prices={}, kill_switch=tripped)
    assert info.value.rule == "kill_switch"
    engine.trip_kill_switch("daily loss")
    assert rule_of(engine, order()) == "kill_switch"  # not given: read from the journal
    engine.check(order(), positions={}, prices={}, kill_switch=KillSwitchState(active=False))
