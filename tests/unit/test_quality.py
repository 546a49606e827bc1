"""The data-quality report and the quality= policy."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from modelyard.errors import DataError
from modelyard.feeds import QualityReport, load_bars, quality_report
from modelyard.feeds.quality import enforce_quality, nyse_sessions


def _bars(n: int = 6, freq: str = "1h") -> pd.DataFrame:
    index = pd.date_range("2024-01-01T00:00:00Z", periods=n, freq=freq, name="timestamp")
    close = np.full(n, 100.0)
    return pd.DataFrame(
        {"open": close, "high": close + 1, "low": close - 1, "close": close, "volume": close},
        index=index.as_unit("ns"),
    )


def test_clean_bars_are_ok() -> None:
    report = quality_report(_bars(), symbol="X", asset_class="crypto", timeframe="1h")
    assert report.ok
    assert report.issues == []
    assert report.summary() == (
        "X 1h: 6 bars 2024-01-01T00:00:00Z..2024-01-01T05:00:00Z; no issues"
    )


def test_btc_hourly_zero_volume_count_matches_pandas() -> None:
    bars = load_bars("BTC-USD", "1h")
    report = quality_report(bars, symbol="BTC/USD", asset_class="crypto", timeframe="1h")
    independent = bars.index[bars["volume"].eq(0)]
    assert report.zero_volume == len(independent) == 28
    assert report.zero_volume_at == tuple(independent[:20])
    flat = bars.loc[independent]
    assert flat["open"].tolist() == flat["close"].tolist()
    assert flat["high"].tolist() == flat["low"].tolist()
    assert (report.gaps, report.missing_bars) == (0, 0)


def test_btc_daily_gap_in_march_2019_is_reported() -> None:
    bars = load_bars("BTC/USD", "1d")
    report = quality_report(bars, symbol="BTC/USD", asset_class="crypto", timeframe="1d")
    assert (report.calendar, report.gaps, report.missing_bars) == ("24/7", 1, 12)
    assert report.gaps_at == (pd.Timestamp("2019-03-20T00:00:00Z"),)
    assert "gaps" in [issue.kind for issue in report.issues]


def test_aapl_split_jumps_are_reported_at_their_dates() -> None:
    bars = load_bars("AAPL")
    report = quality_report(bars, symbol="AAPL", asset_class="equities", timeframe="1d")
    assert report.jump_threshold == 0.25
    assert report.jumps_at == (
        pd.Timestamp("2000-06-21T20:00:00Z"),  # 2:1 split
        pd.Timestamp("2000-09-29T20:00:00Z"),  # real -52% day
        pd.Timestamp("2005-02-28T21:00:00Z"),  # 2:1 split
    )
    # reported, never smoothed: the loaded bars still carry the raw prices
    assert bars.loc["2000-06-21", "close"].item() == pytest.approx(55.63, abs=1e-9)


def test_msft_split_jump_is_reported() -> None:
    bars = load_bars("MSFT")
    report = quality_report(bars, symbol="MSFT", asset_class="equities", timeframe="1d")
    assert report.jumps_at == (pd.Timestamp("2003-02-18T21:00:00Z"),)


def test_bundled_equities_have_no_gaps_against_the_nyse_calendar() -> None:
    for symbol in ("AAPL", "MSFT", "IBM", "GOOG", "GSPC", "IXIC"):
        report = quality_report(
            load_bars(symbol), symbol=symbol, asset_class="equities", timeframe="1d"
        )
        assert (symbol, report.calendar, report.gaps) == (symbol, "nyse", 0)


def test_missing_equity_session_counts_as_one_gap() -> None:
    bars = load_bars("IBM", start="2012-10-01", end="2012-11-30")
    dropped = bars.drop(bars.index[[5, 6, 20]])
    report = quality_report(dropped, symbol="IBM", asset_class="equities", timeframe="1d")
    assert (report.gaps, report.missing_bars) == (2, 3)
    assert report.gaps_at == (bars.index[5], bars.index[20])


def test_nyse_sessions_skip_holidays_and_special_closures() -> None:
    sessions = nyse_sessions(pd.Timestamp("2012-10-26"), pd.Timestamp("2012-11-26"))
    dates = {d.strftime("%Y-%m-%d") for d in sessions}
    assert {"2012-10-29", "2012-10-30", "2012-11-22"}.isdisjoint(dates)  # Sandy, Thanksgiving
    assert {"2012-10-26", "2012-10-31", "2012-11-12", "2012-11-23"} <= dates  # Veterans Day open
    good_friday = nyse_sessions(pd.Timestamp("2012-04-05"), pd.Timestamp("2012-04-09"))
    assert [d.strftime("%Y-%m-%d") for d in good_friday] == ["2012-04-05", "2012-04-09"]


def test_ohlc_inconsistency_and_non_positive_are_counted() -> None:
    bars = _bars()
    bars.iloc[1, bars.columns.get_loc("high")] = 99.0  # high < open
    bars.iloc[2, bars.columns.get_loc("low")] = 100.5  # low > close
    bars.iloc[4, bars.columns.get_loc("low")] = -1.0
    report = quality_report(bars, symbol="X", asset_class="crypto", timeframe="1h")
    assert (report.ohlc_inconsistent, report.non_positive) == (2, 1)
    assert report.ohlc_inconsistent_at == (bars.index[1], bars.index[2])
    assert report.non_positive_at == (bars.index[4],)
    assert report.summary().endswith("; 2 ohlc_inconsistent, 1 non_positive")


def test_jump_threshold_is_configurable() -> None:
    bars = _bars()
    bars.iloc[3:, :4] = 130.0
    default = quality_report(bars, symbol="X", asset_class="crypto", timeframe="1h")
    assert (default.jump_threshold, default.jumps, default.jumps_at) == (0.2, 1, (bars.index[3],))
    loose = quality_report(
        bars, symbol="X", asset_class="crypto", timeframe="1h", jump_threshold=0.5
    )
    assert loose.jumps == 0


def test_report_is_frozen() -> None:
    report = quality_report(_bars(), symbol="X", asset_class="crypto", timeframe="1h")
    assert isinstance(report, QualityReport)
    with pytest.raises(AttributeError):
        report.gaps = 3  # type: ignore[misc]


def test_warn_policy_logs_one_line_per_issue_kind(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="modelyard.feeds.quality"):
        load_bars("BTC/USD", "1d")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert messages[0].startswith(
        "BTC/USD 1d (crypto/BTC-USD_1d.csv.gz): 1 gap(s) in the calendar (12 missing 24/7 bar(s))"
        ", first at 2019-03-20T00:00:00Z"
    )
    assert messages[1].startswith("BTC/USD 1d (crypto/BTC-USD_1d.csv.gz): 38 zero-volume bar(s)")
    assert messages[2].startswith("BTC/USD 1d (crypto/BTC-USD_1d.csv.gz): 2 jump(s)")


def test_raise_policy_raises_with_the_summary() -> None:
    with pytest.raises(DataError, match=r"data quality: BTC/USD 1h: 20111 bars .*28 zero_volume"):
        load_bars("BTC/USD", "1h", quality="raise")
    assert len(load_bars("IBM", quality="raise")) == 3270


def test_drop_policy_drops_only_inconsistent_rows(caplog: pytest.LogCaptureFixture) -> None:
    bars = _bars()
    bars.iloc[1, bars.columns.get_loc("high")] = 99.0
    bars.iloc[3, bars.columns.get_loc("volume")] = 0.0  # reported, kept
    with caplog.at_level(logging.WARNING, logger="modelyard.feeds.quality"):
        out, report = enforce_quality(
            bars, symbol="X", asset_class="crypto", timeframe="1h", policy="drop", where="X"
        )
    pd.testing.assert_frame_equal(out, bars.drop(bars.index[1]))
    assert (report.ohlc_inconsistent, report.zero_volume) == (1, 1)
    assert caplog.records[-1].getMessage() == (
        "X: quality='drop' dropped 1 OHLC-inconsistent or non-positive bar(s)"
    )


def test_unknown_policy_is_an_error() -> None:
    with pytest.raises(DataError, match=r"quality='loud' is not a policy"):
        load_bars("IBM", quality="loud")
