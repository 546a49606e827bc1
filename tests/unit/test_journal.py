"""The SQLite order journal: ids, the state machine, the audit trail, fills and persistence."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from modelyard.brokers.journal import Intent, Journal, JournalError, make_client_order_id

BAR = datetime(2024, 1, 3, 21, 0, tzinfo=UTC)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal(tmp_path / "j.db") as j:
        yield j


def intent(journal: Journal, symbol: str = "AAPL", side: str = "buy", qty: float = 10.0):  # type: ignore[no-untyped-def]
    return journal.record_intent(
        strategy_id="trend1", symbol=symbol, position_symbol=symbol.replace("/", ""), side=side,
        qty=qty, notional=None, order_type="market", limit_price=None, time_in_force="day",
        decision_bar_ts=BAR,
    )  # fmt: skip


def test_client_order_id_is_deterministic_short_and_readable() -> None:
    coid = make_client_order_id("trend1", "AAPL", BAR, 0)
    assert coid == make_client_order_id("trend1", "AAPL", BAR.astimezone(UTC), 0)
    assert coid.startswith("my-trend1-")
    assert len(coid) <= 48
    others = {
        make_client_order_id("trend2", "AAPL", BAR, 0),
        make_client_order_id("trend1", "MSFT", BAR, 0),
        make_client_order_id("trend1", "AAPL", BAR + timedelta(days=1), 0),
        make_client_order_id("trend1", "AAPL", BAR, 1),
    }
    assert coid not in others
    assert len(others) == 4
    with pytest.raises(JournalError, match="timezone-aware"):
        make_client_order_id("trend1", "AAPL", BAR.replace(tzinfo=None), 0)


def test_sequence_numbers_per_strategy_symbol_and_bar(journal: Journal) -> None:
    first, second, other = intent(journal), intent(journal), intent(journal, "MSFT")
    assert (first.seq, second.seq, other.seq) == (0, 1, 0)
    assert first.client_order_id == make_client_order_id("trend1", "AAPL", BAR, 0)
    assert second.client_order_id == make_client_order_id("trend1", "AAPL", BAR, 1)


def test_full_lifecycle_is_audited(journal: Journal) -> None:
    coid = intent(journal).client_order_id
    journal.transition(coid, "submitted")
    journal.apply_broker(coid, "new", broker_order_id="b-1")
    journal.record_fill(coid, "e1", 4.0, 100.0)
    journal.apply_broker(coid, "partially_filled")
    journal.record_fill(coid, "e2", 6.0, 110.0)
    row = journal.apply_broker(coid, "filled")
    assert (row.state, row.broker_order_id, row.filled_qty) == ("filled", "b-1", 10.0)
    assert row.avg_fill_price == pytest.approx((4 * 100 + 6 * 110) / 10)
    assert [e[1] for e in journal.events(coid)] == [
        "intent", "submitted", "acknowledged", "partially_filled", "filled",
    ]  # fmt: skip


def test_invalid_transitions_are_refused(journal: Journal) -> None:
    coid = intent(journal).client_order_id
    with pytest.raises(JournalError, match="intent -> filled"):
        journal.transition(coid, "filled")
    with pytest.raises(JournalError, match="needs a reason"):
        journal.transition(coid, "failed")
    journal.transition(coid, "failed", reason="risk:max_position_units")
    with pytest.raises(JournalError, match="failed -> submitted"):
        journal.transition(coid, "submitted")
    with pytest.raises(JournalError, match="unknown client_order_id"):
        journal.transition("nope", "submitted")


def test_broker_news_only_moves_forward(journal: Journal) -> None:
    coid = intent(journal).client_order_id
    journal.transition(coid, "submitted")
    assert journal.apply_broker(coid, "filled").state == "filled"  # events overtook the answer
    assert journal.apply_broker(coid, "new", broker_order_id="b-9").state == "filled"
    assert journal.get(coid).broker_order_id == "b-9"
    assert journal.apply_broker(coid, "canceled").state == "filled"


def test_events_table_is_append_only(journal: Journal, tmp_path: Path) -> None:
    intent(journal)
    with sqlite3.connect(tmp_path / "j.db") as raw:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute("UPDATE events SET to_state = 'filled'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute("DELETE FROM events")
    raw.close()


def test_fills_are_deduplicated_by_execution_id(journal: Journal) -> None:
    coid = intent(journal).client_order_id
    assert journal.record_fill(coid, "e1", 4.0, 100.0) is True
    assert journal.record_fill(coid, "e1", 4.0, 100.0) is False
    assert journal.get(coid).filled_qty == 4.0
    assert journal.positions() == {"AAPL": 4.0}


def test_lost_fills_are_adopted_with_the_brokers_vwap(journal: Journal) -> None:
    coid = intent(journal).client_order_id
    journal.record_fill(coid, "e1", 4.0, 100.0)
    assert journal.sync_filled(coid, 10.0, 106.0, source="reconcile") == 6.0
    assert journal.sync_filled(coid, 10.0, 106.0, source="reconcile") == 0.0  # idempotent
    row = journal.get(coid)
    assert (row.filled_qty, row.avg_fill_price) == (10.0, pytest.approx(106.0))


def test_a_stream_fill_already_adopted_is_not_counted_twice(journal: Journal) -> None:
    coid = intent(journal).client_order_id
    journal.sync_filled(coid, 10.0, 100.0, source="reconcile")
    journal.record_fill(coid, "late", 10.0, 100.0, cumulative_qty=10.0, cumulative_avg=100.0)
    assert journal.get(coid).filled_qty == 10.0
    assert journal.record_fill(coid, "late", 10.0, 100.0) is False


def test_a_fill_event_after_lost_partials_catches_up(journal: Journal) -> None:
    coid = intent(journal).client_order_id
    journal.record_fill(coid, "e3", 2.0, 120.0, cumulative_qty=10.0, cumulative_avg=110.0)
    row = journal.get(coid)
    assert (row.filled_qty, row.avg_fill_price) == (10.0, pytest.approx(110.0))


def test_positions_sum_buys_sells_and_adjustments(journal: Journal) -> None:
    buy, sell, btc = (
        intent(journal),
        intent(journal, side="sell", qty=3),
        intent(journal, "BTC/USD"),
    )
    journal.record_fill(buy.client_order_id, "b", 10.0, 100.0)
    journal.record_fill(sell.client_order_id, "s", 3.0, 101.0)
    journal.record_fill(btc.client_order_id, "c", 0.5, 30_000.0)
    journal.record_adjustment("MSFT", 7.0, "reconcile")
    assert journal.positions() == {"AAPL": 7.0, "BTCUSD": 0.5, "MSFT": 7.0}


def test_everything_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with Journal(path) as journal:
        coid = intent(journal).client_order_id
        journal.transition(coid, "submitted")
        journal.set_risk_state("kill_switch", {"active": True, "reason": "test"})
    with Journal(path) as journal:
        assert journal.get(coid).state == "submitted"
        assert journal.get_risk_state("kill_switch") == {"active": True, "reason": "test"}
        assert journal.orders({"intent", "submitted"})[0].client_order_id == coid
        mode = journal._db.execute("PRAGMA journal_mode").fetchone()[0]
        sync = journal._db.execute("PRAGMA synchronous").fetchone()[0]
    assert (mode, sync) == ("wal", 2)


def test_naive_decision_timestamps_are_refused(journal: Journal) -> None:
    with pytest.raises(JournalError, match="timezone-aware"):
        journal.record_intent(
            strategy_id="s", symbol="AAPL", position_symbol="AAPL", side="buy", qty=1.0,
            notional=None, order_type="market", limit_price=None, time_in_force="day",
            decision_bar_ts=BAR.replace(tzinfo=None),
        )  # fmt: skip
    assert journal.orders() == []


def spec(symbol: str = "AAPL", **changes: object) -> Intent:
    fields: dict[str, object] = {
        "strategy_id": "trend1", "symbol": symbol, "position_symbol": symbol.replace("/", ""),
        "side": "buy", "qty": 1.0, "notional": None, "order_type": "market",
        "limit_price": None, "time_in_force": "day", "decision_bar_ts": BAR,
    }  # fmt: skip
    fields.update(changes)
    return Intent(**fields)  # type: ignore[arg-type]


def test_a_batch_of_intents_is_one_transaction_with_sequences(journal: Journal) -> None:
    rows = journal.record_intents(
        [spec(), spec(), spec("MSFT"), spec("MSFT", failed_reason="risk:kill_switch: on")]
    )
    assert [(r.symbol, r.seq, r.state) for r in rows] == [
        ("AAPL", 0, "intent"), ("AAPL", 1, "intent"), ("MSFT", 0, "intent"),
        ("MSFT", 1, "failed"),
    ]  # fmt: skip
    assert rows[3].reason == "risk:kill_switch: on"
    assert [e[1] for e in journal.events(rows[3].client_order_id)] == ["intent", "failed"]
    assert rows[1].client_order_id == make_client_order_id("trend1", "AAPL", BAR, 1)


def test_a_batch_returns_the_rows_as_they_read_back(journal: Journal) -> None:
    """The rows are built from what was written, not read back: they must equal a read."""
    new_york = timezone(timedelta(hours=-5))
    rows = journal.record_intents(
        [
            spec(qty=3),  # an int quantity reads back as REAL
            spec("MSFT", qty=None, notional=250, decision_bar_ts=BAR.astimezone(new_york)),
            spec("MSFT", order_type="limit", limit_price=101, failed_reason="risk:max_units: x"),
        ]
    )
    assert rows == journal.get_many([r.client_order_id for r in rows])
    assert [type(r.qty) for r in rows] == [float, type(None), float]
    assert rows[1].decision_bar_ts == BAR
    assert rows[1].decision_bar_ts.tzinfo == UTC


def test_a_batch_is_all_or_nothing(journal: Journal) -> None:
    with pytest.raises(JournalError, match="timezone-aware"):
        journal.record_intents([spec(), spec(decision_bar_ts=BAR.replace(tzinfo=None))])
    with pytest.raises(sqlite3.IntegrityError):
        journal.record_intents([spec(), spec(side="hold")])  # CHECK constraint, second row
    assert journal.orders() == []


def test_mark_submitted_moves_only_intents(journal: Journal) -> None:
    first, second = journal.record_intents([spec(), spec()])
    journal.transition(second.client_order_id, "failed", reason="test")
    journal.mark_submitted([first.client_order_id, second.client_order_id])
    rows = journal.get_many([first.client_order_id, second.client_order_id])
    assert [r.state for r in rows] == ["submitted", "failed"]
    assert [e[1] for e in journal.events(first.client_order_id)] == ["intent", "submitted"]


def _sync(journal: Journal) -> int:
    return int(journal._db.execute("PRAGMA synchronous").fetchone()[0])


def test_durability_is_chosen_per_transaction(journal: Journal) -> None:
    coid = intent(journal).client_order_id
    assert _sync(journal) == 2  # FULL at rest, after an intent
    with journal.transaction(durable=False):
        assert _sync(journal) == 1  # NORMAL: what the venue can tell again
        journal.transition(coid, "submitted")
        journal.apply_broker(coid, "new", broker_order_id="b-1")
        with pytest.raises(JournalError, match="durable write inside a non-durable"):
            journal.set_risk_state("kill_switch", {"active": True})
        with pytest.raises(JournalError, match="durable write inside a non-durable"):
            journal.record_intents([spec("MSFT")])
    assert _sync(journal) == 2  # back to FULL for the next transaction
    assert journal.get(coid).state == "acknowledged"
    assert journal.get_risk_state("kill_switch") is None
    assert [r.symbol for r in journal.orders()] == ["AAPL"]
    with journal.transaction(durable=True):
        assert _sync(journal) == 2
        journal.record_fill(coid, "e1", 1.0, 100.0)  # a NORMAL write may join a FULL one


def test_a_failing_call_in_a_group_undoes_only_itself(journal: Journal) -> None:
    first, second = intent(journal), intent(journal)
    with journal.transaction(durable=True):
        journal.transition(first.client_order_id, "submitted")
        with pytest.raises(JournalError, match="intent -> filled"):
            journal.transition(second.client_order_id, "filled")
        journal.transition(second.client_order_id, "failed", reason="test")
    assert journal.get(first.client_order_id).state == "submitted"
    assert journal.get(second.client_order_id).state == "failed"


def test_an_error_in_a_group_rolls_the_whole_group_back(journal: Journal) -> None:
    coid = intent(journal).client_order_id

    def group() -> None:
        with journal.transaction(durable=False):
            journal.transition(coid, "submitted")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        group()
    assert journal.get(coid).state == "intent"
    assert _sync(journal) == 2
    assert journal.transition(coid, "submitted").state == "submitted"  # the journal still works


def test_one_increment_left_by_a_floored_sell_is_still_a_position(journal: Journal) -> None:
    """Regression: a sell floored to the crypto increment left BTCUSD 1e-9 at the venue, and
    positions() dropped it as noise, so journal and venue disagreed."""
    buy = intent(journal, "BTC/USD", "buy", 0.956473929).client_order_id
    journal.transition(buy, "submitted")
    journal.apply_broker(buy, "new", broker_order_id="b-1")
    journal.record_fill(buy, "e1", 0.956473929, 10_000.0)
    sell = intent(journal, "BTC/USD", "sell", 0.956473928).client_order_id
    journal.transition(sell, "submitted")
    journal.apply_broker(sell, "new", broker_order_id="b-2")
    journal.record_fill(sell, "e2", 0.956473928, 10_000.0)  # leaves 9.99999972e-10
    assert journal.positions() == {"BTCUSD": pytest.approx(1e-9, abs=1e-15)}


def test_closing_a_float_summed_position_does_not_leave_one_increment() -> None:
    """Regression: four fills summed in floats sit a hair under a multiple of the 1e-9
    increment, and flooring the position sold one increment less than was held."""
    from modelyard.brokers.executor import _floor

    held = 0.0
    for qty in (0.072850955, 0.032569857, 0.15067955, 0.301554999):
        held += qty
    assert held == 0.5576553609999999  # the float sum is a hair off 0.557655361
    assert _floor(held, 1e-9) == 0.557655361
    assert _floor(0.5576553605, 1e-9) == 0.55765536  # a real half-increment still floors


def test_a_batch_continues_the_sequences_of_earlier_rows(journal: Journal) -> None:
    """The batch reads every (strategy, symbol, bar)'s next sequence at once."""
    journal.record_intents([spec(), spec("MSFT")])
    later = BAR + timedelta(minutes=1)
    rows = journal.record_intents(
        [spec("MSFT"), spec(), spec(decision_bar_ts=later), spec("MSFT"), spec(strategy_id="x")]
    )
    assert [(r.strategy_id, r.symbol, r.decision_bar_ts, r.seq) for r in rows] == [
        ("trend1", "MSFT", BAR, 1), ("trend1", "AAPL", BAR, 1), ("trend1", "AAPL", later, 0),
        ("trend1", "MSFT", BAR, 2), ("x", "AAPL", BAR, 0),
    ]  # fmt: skip
    assert journal.next_seq("trend1", "MSFT", BAR) == 3
    assert [e[1] for e in journal.events(rows[0].client_order_id)] == ["intent"]


def test_batched_reads_equal_single_reads(journal: Journal) -> None:
    rows = journal.record_intents([spec(), spec("MSFT"), spec("NVDA")])
    coids = [r.client_order_id for r in rows]
    journal.record_fill(coids[1], "e1", 1.0, 10.0)
    journal.record_fill(coids[0], "e2", 0.5, 11.0)
    journal.record_fill(coids[1], "e3", 2.0, 12.0)
    order = [coids[2], coids[1], coids[0], coids[1]]
    assert journal.get_many(order) == [journal.get(c) for c in order]
    assert journal.fills_many(coids) == {c: journal.fills(c) for c in coids}
    assert journal.fills_many(coids)[coids[2]] == []
    with pytest.raises(JournalError, match="unknown client_order_id 'nope'"):
        journal.get_many([coids[0], "nope"])


def test_mark_submitted_moves_a_repeated_id_once(journal: Journal) -> None:
    (row,) = journal.record_intents([spec()])
    journal.mark_submitted([row.client_order_id, row.client_order_id])
    assert journal.get(row.client_order_id).state == "submitted"
    assert [e[1] for e in journal.events(row.client_order_id)] == ["intent", "submitted"]


def _summed_positions(path: Path) -> dict[str, float]:
    """positions() from scratch: one SQL sum over the whole history, on its own connection."""
    with sqlite3.connect(path) as raw:
        out: dict[str, float] = {}
        for symbol, qty in raw.execute(
            "SELECT o.position_symbol, SUM(CASE o.side WHEN 'buy' THEN f.qty ELSE -f.qty END)"
            " FROM fills f JOIN orders o USING (client_order_id) GROUP BY o.position_symbol"
            " UNION ALL SELECT position_symbol, SUM(delta) FROM adjustments"
            " GROUP BY position_symbol"
        ):
            out[symbol] = out.get(symbol, 0.0) + float(qty)
    raw.close()
    return {s: q for s, q in out.items() if abs(q) > 1e-12}


def test_positions_follow_new_fills_rollbacks_and_other_writers(
    journal: Journal, tmp_path: Path
) -> None:
    """positions() adds only what was committed since its last call; a rolled-back fill, an
    edited fill or another connection's write is never served from stale running sums."""
    path = tmp_path / "j.db"
    buy = intent(journal, "AAPL", "buy", 10.0).client_order_id
    sell = intent(journal, "AAPL", "sell", 4.0).client_order_id
    btc = intent(journal, "BTC/USD", "buy", 1.0).client_order_id
    assert journal.positions() == {} == _summed_positions(path)
    journal.record_fill(buy, "e1", 0.1, 100.0)
    journal.record_fill(btc, "e2", 0.3, 30_000.0)
    assert journal.positions() == _summed_positions(path) == {"AAPL": 0.1, "BTCUSD": 0.3}
    journal.record_fill(buy, "e3", 0.2, 100.0)
    journal.record_fill(sell, "e4", 0.05, 100.0)
    journal.record_adjustment("MSFT", 7.0, "reconcile")
    assert journal.positions() == _summed_positions(path)
    assert journal.positions()["AAPL"] == 0.1 + 0.2 - 0.05  # summed in insertion order

    def rolled_back() -> None:
        with journal.transaction(durable=False):
            journal.record_fill(buy, "e5", 5.0, 100.0)
            assert journal.positions()["AAPL"] == pytest.approx(5.25)  # seen inside
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        rolled_back()
    assert journal.positions() == _summed_positions(path)
    assert journal.positions()["AAPL"] == pytest.approx(0.25)

    journal._db.execute("UPDATE fills SET qty = 2.0 WHERE execution_id = 'e1'")  # an edit
    assert journal.positions() == _summed_positions(path)
    assert journal.positions()["AAPL"] == pytest.approx(2.15)

    with sqlite3.connect(path) as other:  # another writer: an adjustment and an edited fill
        other.execute(
            "INSERT INTO adjustments (position_symbol, delta, reason, at) "
            "VALUES ('BTCUSD', -0.1, 'x', 'now')"
        )
        other.execute("UPDATE fills SET qty = 1.0 WHERE execution_id = 'e3'")
    other.close()
    assert journal.positions() == _summed_positions(path)
    assert journal.positions() == {
        "AAPL": pytest.approx(2.95), "BTCUSD": pytest.approx(0.2), "MSFT": 7.0,
    }  # fmt: skip
    journal.record_fill(sell, "e6", 2.95, 100.0)  # AAPL closes: dropped as before
    assert journal.positions() == _summed_positions(path)
    assert journal.positions().get("AAPL", 0.0) == pytest.approx(0.0, abs=1e-12)


def test_positions_after_a_reopen_sum_the_whole_history(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with Journal(path) as journal:
        coid = intent(journal, "AAPL", "buy", 3.0).client_order_id
        for i in range(3):
            journal.record_fill(coid, f"e{i}", 1.0, 100.0)
        assert journal.positions() == {"AAPL": 3.0}
    with Journal(path) as journal:
        assert journal.positions() == {"AAPL": 3.0} == _summed_positions(path)


def test_mark_submitted_with_an_unknown_id_changes_nothing(journal: Journal) -> None:
    (row,) = journal.record_intents([spec()])
    with pytest.raises(JournalError, match="unknown client_order_id 'nope'"):
        journal.mark_submitted([row.client_order_id, "nope"])
    assert journal.get(row.client_order_id).state == "intent"
    assert [e[1] for e in journal.events(row.client_order_id)] == ["intent"]


def test_batch_rows_are_the_stored_rows(journal: Journal) -> None:
    """record_intents returns what a read returns (types, UTC bar time)."""
    from zoneinfo import ZoneInfo

    local = BAR.astimezone(ZoneInfo("America/New_York"))
    rows = journal.record_intents(
        [
            spec(qty=3, decision_bar_ts=local),  # an int quantity is stored as REAL
            spec("MSFT", qty=None, notional=250, order_type="market"),
            spec("NVDA", order_type="limit", limit_price=101, failed_reason="risk:x: y"),
        ]
    )
    coids = [r.client_order_id for r in rows]
    assert rows == journal.get_many(coids)
    assert rows[0].decision_bar_ts == BAR
    assert rows[0].decision_bar_ts.tzinfo is not None
    assert isinstance(rows[0].qty, float)
    assert isinstance(rows[1].notional, float)


def test_exposures_are_the_working_orders_columns(journal: Journal) -> None:
    a, _b, c = journal.record_intents([spec(), spec("MSFT", side="sell"), spec("NVDA")])
    journal.transition(c.client_order_id, "failed", reason="test")
    journal.mark_submitted([a.client_order_id])
    journal.apply_broker(a.client_order_id, "partially_filled", broker_order_id="b-1")
    journal.record_fill(a.client_order_id, "e1", 0.25, 100.0)
    states = {"intent", "submitted", "acknowledged", "partially_filled"}
    assert journal.exposures(states) == [
        (r.position_symbol, r.side, r.qty, r.notional, r.filled_qty, r.avg_fill_price)
        for r in journal.orders(states)
    ]
    assert [e[0] for e in journal.exposures(states)] == ["AAPL", "MSFT"]


def test_checkpoints_are_explicit_with_a_backstop(journal: Journal, tmp_path: Path) -> None:
    """SQLite's automatic checkpoint would run inside an intent's commit now and then; the
    executor checkpoints after a batch instead (journal.checkpoint)."""
    from modelyard.brokers.journal import CHECKPOINT_BACKSTOP_PAGES

    auto = journal._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    assert auto == CHECKPOINT_BACKSTOP_PAGES > 1000
    journal.record_intents([spec(s) for s in ("AAPL", "MSFT", "NVDA")])
    with journal.transaction(durable=False):
        journal.checkpoint()  # inside a transaction: nothing (SQLite would refuse)
    journal.checkpoint()
    busy, frames, done = journal._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0
    assert frames == done
