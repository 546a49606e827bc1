"""run_backtest in Backtrader: hand-checked fills, calendars, costs per class, flag, live mode."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from modelyard.config import load_config, parse_config
from modelyard.routing import AssetSpecificModelRouter
from modelyard.strategies.backtest import build_cerebro, run_backtest
from modelyard.strategies.routed import (
    LiveTargets,
    PrecomputedTargets,
    RoutedStrategy,
    StrategyCore,
)
from modelyard.strategies.signals import predict_history, symbol_setups
from tests.integration.conftest_backtest import calibrated_registry

NAN = math.nan


@pytest.fixture
def calibrated(tmp_path: Path, base_config_dict: dict[str, Any]) -> Path:
    return calibrated_registry(tmp_path / "registry", base_config_dict)


def _bars(index: pd.DatetimeIndex, opens: list[float], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    o = np.asarray(opens, dtype=np.float64)
    close = o * (1 + rng.normal(0, 0.005, len(o)))
    return pd.DataFrame(
        {
            "open": o,
            "high": np.maximum(o, close) * 1.01,
            "low": np.minimum(o, close) * 0.99,
            "close": close,
            "volume": 1_000.0,
        },
        index=index,
    )


def _config(tmp_path: Path, base: dict[str, Any], **costs: dict[str, float]) -> Path:
    raw = yaml.safe_load(yaml.safe_dump(base))
    raw["asset_classes"]["equities"]["policy"] = {
        "entry_threshold": 0.001,
        "exit_threshold": 0.0,
        "scale": 100.0,
        "cap": 0.5,
        "long_short": False,
    }
    for cls, values in costs.items():
        raw["asset_classes"][cls]["costs"] = values
    for spec in raw["models"].values():
        spec["path"] = str(Path(base["models"]["universal_v1"]["path"]).name)
        spec.pop("contract", None)
    path = tmp_path / "assets.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_ten_bars_by_hand(tmp_path: Path, base_config_dict: dict[str, Any]) -> None:
    """Decision at the close of t, fill at the open of t+1 with slippage, fee on notional; an
    unchanged target (bar 2 repeats bar 1's 0.4) places no order, the position drifts."""
    cfg = _config(tmp_path, base_config_dict, equities={"fees": 0.001, "slippage": 0.0005})
    index = pd.date_range("2024-01-01 21:00", periods=10, freq="D", tz="UTC")
    opens = [100.0, 101.0, 102.0, 103.0, 104.0, 105.0, 106.0, 107.0, 108.0, 109.0]
    bars = pd.DataFrame(
        {
            "open": opens,
            "high": [o + 2 for o in opens],
            "low": [o - 2 for o in opens],
            "close": [o + 0.5 for o in opens],
            "volume": 1_000.0,
        },
        index=index,
    )
    pred = pd.Series([NAN, 0.004, 0.004, 0.0, 0.0, 0.002, 0.0, 0.0, 0.0, 0.0], index=index)
    result = run_backtest(["AAPL"], bars={"AAPL": bars}, predictions={"AAPL": pred}, config=cfg)

    cash, units = 100_000.0, 0.0
    expected_orders = []
    expected_equity = []
    weights = [0.0, 0.4, 0.4, 0.0, 0.0, 0.2, 0.0, 0.0, 0.0, 0.0]
    pending: float | None = None
    for t in range(10):
        o, c = opens[t], opens[t] + 0.5
        if pending is not None:  # fill at this bar's open
            delta = pending - units
            price = o * (1.0005 if delta > 0 else 0.9995)
            fee = abs(delta) * price * 0.001
            cash -= delta * price + fee
            units = pending
            expected_orders.append(
                (index[t], "buy" if delta > 0 else "sell", abs(delta), price, fee)
            )
            pending = None
        value = cash + units * c
        expected_equity.append(value)
        target = weights[t] * value / c
        changed = weights[t] != (weights[t - 1] if t else 0.0)
        if changed and abs(target - units) >= 1e-6:
            pending = target
    got = list(
        zip(
            result.orders["timestamp"],
            result.orders["side"],
            result.orders["size"],
            result.orders["price"],
            result.orders["fee"],
            strict=True,
        )
    )
    assert [(g[0], g[1]) for g in got] == [(e[0], e[1]) for e in expected_orders]
    assert [g[0] for g in got] == [index[2], index[4], index[6], index[7]]
    np.testing.assert_allclose([g[2:] for g in got], [e[2:] for e in expected_orders], rtol=1e-12)
    np.testing.assert_allclose(result.equity.to_numpy(), expected_equity, rtol=1e-12)
    assert list(result.equity.index) == list(index)
    assert result.stats["n_trades"] == 2
    assert result.stats["n_bars"] == 10
    assert result.trades["entry_time"].tolist() == [index[2], index[6]]


def test_long_short_shorts_fill_at_open_minus_slippage(
    tmp_path: Path, base_config_dict: dict[str, Any]
) -> None:
    raw = yaml.safe_load(_config(tmp_path, base_config_dict).read_text())
    raw["asset_classes"]["equities"]["policy"]["long_short"] = True
    raw["asset_classes"]["equities"]["costs"] = {"fees": 0.002, "slippage": 0.001}
    index = pd.date_range("2024-01-01 21:00", periods=6, freq="D", tz="UTC")
    bars = _bars(index, [50.0, 51.0, 52.0, 53.0, 52.0, 51.0])
    pred = pd.Series([-0.01, -0.01, 0.002, 0.0, 0.0, 0.0], index=index)
    result = run_backtest(
        ["MSFT"], bars={"MSFT": bars}, predictions={"MSFT": pred}, config=parse_config(raw)
    )
    orders = result.orders
    assert orders["side"].tolist() == ["sell", "buy", "sell"]
    # bar 0: -0.5 (cap) short; bar 1 holds -0.5 (no order); bar 2 flips to long 0.2; bar 3 flat
    np.testing.assert_allclose(
        orders["price"].to_numpy(),
        bars["open"].to_numpy()[[1, 3, 4]] * np.array([0.999, 1.001, 0.999]),
        rtol=1e-15,
    )
    np.testing.assert_allclose(
        orders["fee"].to_numpy(),
        orders["size"].to_numpy() * orders["price"].to_numpy() * 0.002,
        rtol=1e-12,
    )
    first_units = 0.5 * 100_000 / bars["close"].iloc[0]
    assert orders["size"].iloc[0] == pytest.approx(first_units, rel=1e-12)
    assert result.trades["size"].iloc[0] < 0


def _mixed_bars() -> dict[str, pd.DataFrame]:
    crypto_index = pd.date_range("2024-01-01", periods=28, freq="D", tz="UTC")  # every day
    days = pd.bdate_range("2024-01-01", periods=20, tz="UTC") + pd.Timedelta(hours=21)
    rng = np.random.default_rng(1)
    btc = _bars(crypto_index, list(40_000 * np.exp(np.cumsum(rng.normal(0, 0.02, 28)))), 2)
    aapl = _bars(days, list(180 * np.exp(np.cumsum(rng.normal(0, 0.01, 20)))), 3)
    return {"BTC/USD": btc, "AAPL": aapl}


def test_mixed_calendar_one_account(tmp_path: Path, base_config_dict: dict[str, Any]) -> None:
    cfg = _config(
        tmp_path,
        base_config_dict,
        equities={"fees": 0.001, "slippage": 0.0005},
        crypto={"fees": 0.0025, "slippage": 0.002},
    )
    bars = _mixed_bars()
    rng = np.random.default_rng(9)
    preds = {s: pd.Series(rng.normal(0.001, 0.003, len(b)), index=b.index) for s, b in bars.items()}
    calls: list[tuple[int, int]] = []
    result = run_backtest(
        ["AAPL", "BTC/USD"],
        bars=bars,
        predictions=preds,
        config=cfg,
        max_gross=0.6,
        progress=lambda done, total: calls.append((done, total)),
    )
    orders = result.orders
    aapl = orders[orders["symbol"] == "AAPL"]
    btc = orders[orders["symbol"] == "BTC/USD"]
    assert len(aapl) > 5
    assert len(btc) > 5
    # Equities fill only on their own bars (weekdays 21:00), at the open of the next session:
    # a Friday decision fills on Monday.
    assert set(aapl["timestamp"]) <= set(bars["AAPL"].index[1:])
    assert (aapl["timestamp"].dt.day_of_week < 5).all()
    assert set(btc["timestamp"]) <= set(bars["BTC/USD"].index[1:])
    assert (btc["timestamp"].dt.day_of_week >= 5).any()  # crypto trades at weekends
    for symbol, part, slip, fee in (
        ("AAPL", aapl, 0.0005, 0.001),
        ("BTC/USD", btc, 0.002, 0.0025),
    ):
        opens = bars[symbol]["open"].reindex(part["timestamp"]).to_numpy()
        sign = np.where(part["side"] == "buy", 1.0, -1.0)
        np.testing.assert_allclose(part["price"].to_numpy(), opens * (1 + sign * slip), rtol=1e-14)
        notional = part["size"].to_numpy() * part["price"].to_numpy()
        np.testing.assert_allclose(part["fee"].to_numpy(), notional * fee, rtol=1e-12)
    # One account: the final equity is the cash left plus both positions at their last close.
    sign = np.where(orders["side"] == "buy", 1.0, -1.0)
    flows = sign * orders["size"].to_numpy() * orders["price"].to_numpy() + orders["fee"].to_numpy()
    cash = 100_000.0 - flows.sum()
    units = (orders.assign(q=sign * orders["size"]).groupby("symbol")["q"].sum()).to_dict()
    value = cash + sum(units[s] * bars[s]["close"].iloc[-1] for s in units)
    assert result.equity.iloc[-1] == pytest.approx(value, rel=1e-12)
    union = bars["AAPL"].index.union(bars["BTC/USD"].index)
    assert list(result.equity.index) == list(union)
    assert result.stats["n_bars"] == len(union)
    assert result.config["run"]["periods_per_year"] == 365.0
    assert calls[-1] == (len(union), len(union))


def test_asset_specific_flag_switches_the_models(calibrated: Path, no_flag_env: None) -> None:
    config = load_config(calibrated)
    bars = {
        "AAPL": _bars(
            pd.bdate_range("2022-01-03", periods=220, tz="UTC") + pd.Timedelta(hours=21),
            list(150 * np.exp(np.cumsum(np.random.default_rng(4).normal(0, 0.015, 220)))),
        ),
        "BTC/USD": _bars(
            pd.date_range("2022-01-01", periods=300, freq="D", tz="UTC"),
            list(40_000 * np.exp(np.cumsum(np.random.default_rng(5).normal(0, 0.03, 300)))),
        ),
    }
    runs = {
        flag: run_backtest(list(bars), bars=bars, config=config, asset_specific=flag)
        for flag in (False, True)
    }
    assert [(r["symbol"], r["model_id"], r["reason"]) for r in runs[False].routes] == [
        ("AAPL", "universal_v1", "flag_off"),
        ("BTC/USD", "universal_v1", "flag_off"),
    ]
    assert [(r["symbol"], r["model_id"], r["reason"]) for r in runs[True].routes] == [
        ("AAPL", "equities_v1", "asset_specific"),
        ("BTC/USD", "crypto_v1", "asset_specific"),
    ]
    preds = {
        flag: predict_history(AssetSpecificModelRouter(config, asset_specific=flag), bars)[0]
        for flag in (False, True)
    }
    for symbol in bars:
        off, on = preds[False][symbol], preds[True][symbol]
        both = off.notna() & on.notna()
        assert both.sum() > 50
        assert not np.allclose(off[both], on[both])
    assert len(runs[False].orders) > 10
    assert len(runs[True].orders) > 10
    assert not runs[False].orders.equals(runs[True].orders)
    assert runs[False].config["run"]["asset_specific"] is False
    assert runs[True].config["run"]["asset_specific"] is True


def test_live_mode_trades_exactly_like_the_precomputed_backtest(
    calibrated: Path, no_flag_env: None
) -> None:
    config = load_config(calibrated)
    bars = {
        "AAPL": _bars(
            pd.bdate_range("2022-01-03", periods=150, tz="UTC") + pd.Timedelta(hours=21),
            list(150 * np.exp(np.cumsum(np.random.default_rng(4).normal(0, 0.015, 150)))),
        ),
        "BTC/USD": _bars(
            pd.date_range("2022-01-01", periods=200, freq="D", tz="UTC"),
            list(40_000 * np.exp(np.cumsum(np.random.default_rng(5).normal(0, 0.03, 200)))),
        ),
    }
    backtest = run_backtest(list(bars), bars=bars, config=config, asset_specific=True)
    assert len(backtest.orders) > 10

    router = AssetSpecificModelRouter(config, asset_specific=True)
    setups = symbol_setups(router, list(bars))
    live = LiveTargets(router, list(bars), [s.policy for s in setups])
    core = StrategyCore(list(bars), live, [s.policy.cap for s in setups])  # no history given
    cerebro = build_cerebro(bars, setups, 100_000.0)
    cerebro.addstrategy(RoutedStrategy, core=core)
    cerebro.run()
    orders = core.fills_frame()
    assert orders["timestamp"].tolist() == backtest.orders["timestamp"].tolist()
    assert orders["side"].tolist() == backtest.orders["side"].tolist()
    np.testing.assert_allclose(orders["size"], backtest.orders["size"], rtol=1e-9)
    np.testing.assert_allclose(core.equity_series(), backtest.equity, rtol=1e-12)


class _HeldBack(RoutedStrategy):  # type: ignore[misc]
    """Holds back (returns None for) the first three orders, as the live gate does on warm-up
    bars or while an order of the data is still working."""

    held_back = 0

    def order_target_size(self, data: Any = None, target: float = 0, **kwargs: Any) -> Any:
        if _HeldBack.held_back < 3:
            _HeldBack.held_back += 1
            return None
        return super().order_target_size(data=data, target=target, **kwargs)


def test_an_order_held_back_is_placed_on_a_later_bar_of_the_same_target(
    tmp_path: Path, base_config_dict: dict[str, Any]
) -> None:
    """An unchanged target places no order, unless its order never left: then it is retried."""
    config = load_config(_config(tmp_path, base_config_dict))
    index = pd.date_range("2024-01-01 21:00", periods=10, freq="D", tz="UTC")
    bars = {"AAPL": _bars(index, [100.0 + k for k in range(10)])}
    setups = symbol_setups(AssetSpecificModelRouter(config, asset_specific=False), ["AAPL"])
    core = StrategyCore(["AAPL"], PrecomputedTargets([np.full(10, 0.4)]), [0.5])
    cerebro = build_cerebro(bars, setups, 100_000.0)
    cerebro.addstrategy(_HeldBack, core=core)
    _HeldBack.held_back = 0
    cerebro.run()
    orders = core.fills_frame()
    assert _HeldBack.held_back == 3
    assert orders["timestamp"].tolist() == [index[4]]  # decided at bar 3, filled at bar 4
    assert orders["side"].tolist() == ["buy"]
