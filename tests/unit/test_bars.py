"""The bars schema (validate_bars) and resampling."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from modelyard.errors import DataError
from modelyard.feeds import BARS_COLUMNS, load_bars, resample, validate_bars


def _bars(n: int = 4, start: str = "2024-01-01T00:00:00Z", freq: str = "1h") -> pd.DataFrame:
    index = pd.date_range(start, periods=n, freq=freq, name="timestamp").as_unit("ns")
    close = np.arange(1.0, n + 1.0) + 100.0
    return pd.DataFrame(
        {
            "open": close - 0.5,
            "high": close + 1.0,
            "low": close - 1.0,
            "close": close,
            "volume": np.full(n, 10.0),
        },
        index=index,
    )


def test_valid_frame_is_returned_in_schema() -> None:
    frame = _bars().astype({"volume": "int64"})[["close", "open", "high", "low", "volume"]]
    frame["extra"] = 1
    out = validate_bars(frame, symbol="X")
    assert list(out.columns) == list(BARS_COLUMNS)
    assert out.dtypes.tolist() == [np.dtype("float64")] * 5
    assert str(out.index.dtype) == "datetime64[ns, UTC]"
    assert out.index.name == "timestamp"
    pd.testing.assert_frame_equal(out, _bars().astype("float64"), check_freq=False)


def test_non_utc_aware_index_is_converted_to_utc() -> None:
    frame = _bars()
    frame.index = frame.index.tz_convert("America/New_York")
    out = validate_bars(frame)
    assert out.index.equals(_bars().index)
    assert str(out.index.tz) == "UTC"


def test_unsorted_index_is_sorted_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    frame = _bars().iloc[[2, 0, 3, 1]]
    with caplog.at_level(logging.WARNING, logger="modelyard.feeds.schema"):
        out = validate_bars(frame, symbol="X")
    pd.testing.assert_frame_equal(out, _bars(), check_freq=False)
    assert [r.getMessage() for r in caplog.records] == [
        "X: timestamps were not sorted; sorted them (stable)"
    ]


def test_duplicate_timestamps_name_the_first_duplicate() -> None:
    frame = pd.concat([_bars(), _bars().iloc[[1]]])
    with pytest.raises(DataError, match=r"X: 1 duplicate timestamp\(s\), first 2024-01-01 01:00"):
        validate_bars(frame, symbol="X")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_names_column_and_timestamp(bad: float) -> None:
    frame = _bars()
    frame.iloc[2, frame.columns.get_loc("high")] = bad
    with pytest.raises(DataError, match=r"column 'high' has 1 NaN/inf value\(s\), first at "
                       r"2024-01-01 02:00:00\+00:00"):  # fmt: skip
        validate_bars(frame, symbol="X")


@pytest.mark.parametrize("price", [0.0, -1.0])
def test_zero_or_negative_price_is_an_error(price: float) -> None:
    frame = _bars()
    frame.iloc[1, frame.columns.get_loc("low")] = price
    with pytest.raises(DataError, match=r"column 'low' has 1 zero or negative price"):
        validate_bars(frame, symbol="X")


def test_negative_volume_is_an_error() -> None:
    frame = _bars()
    frame.iloc[0, frame.columns.get_loc("volume")] = -5.0
    with pytest.raises(DataError, match=r"column 'volume' has 1 negative value"):
        validate_bars(frame)


def test_numbers_as_strings_are_converted_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    frame = _bars()
    frame["close"] = frame["close"].map(str)
    with caplog.at_level(logging.WARNING, logger="modelyard.feeds.schema"):
        out = validate_bars(frame, symbol="X")
    pd.testing.assert_frame_equal(out, _bars(), check_freq=False)
    assert [r.getMessage() for r in caplog.records] == [
        "X: column 'close' held numbers stored as text; converted them to float64"
    ]


def test_strings_that_do_not_parse_name_the_first_bad_value() -> None:
    frame = _bars()
    frame["open"] = ["1.5", "2.5", "n/a", "4"]
    with pytest.raises(DataError, match=r"column 'open' holds non-numbers, first 'n/a' at 2024"):
        validate_bars(frame, symbol="X")


def test_naive_timestamps_mixed_with_aware_ones_are_an_error() -> None:
    frame = _bars().reset_index(drop=True)
    frame.index = pd.Index(
        [
            pd.Timestamp("2024-01-01 00:00", tz="UTC"),
            pd.Timestamp("2024-01-01 01:00"),
            pd.Timestamp("2024-01-01 02:00", tz="UTC"),
            pd.Timestamp("2024-01-01 03:00", tz="UTC"),
        ],
        dtype=object,
    )
    with pytest.raises(DataError, match="mix naive"):
        validate_bars(frame, symbol="X")


def test_naive_index_is_an_error_that_says_how_to_localize() -> None:
    frame = _bars()
    frame.index = frame.index.tz_localize(None)
    with pytest.raises(DataError, match=r"no time zone.*tz_localize"):
        validate_bars(frame, symbol="X")


def test_empty_frame_is_an_error() -> None:
    with pytest.raises(DataError, match="X: the frame is empty"):
        validate_bars(_bars().iloc[:0], symbol="X")


def test_missing_columns_are_listed_with_did_you_mean() -> None:
    frame = _bars().rename(columns={"close": "Close", "volume": "vol"})
    with pytest.raises(DataError) as info:
        validate_bars(frame, symbol="X", source="x.csv")
    message = str(info.value)
    assert message.startswith("X (x.csv): missing column(s) ['close', 'volume']")
    assert "Did you mean 'Close'?" in message
    assert "Did you mean 'vol'?" in message


def test_timestamp_column_is_used_as_index() -> None:
    frame = _bars().reset_index()
    out = validate_bars(frame)
    pd.testing.assert_frame_equal(out, _bars(), check_freq=False)


# --- resample -----------------------------------------------------------------------
def test_resample_aggregates_ohlcv_by_bucket_start() -> None:
    bars = _bars(8, start="2024-01-01T00:00:00Z")
    out = resample(bars, "4h")
    expected = pd.DataFrame(
        {
            "open": [100.5, 104.5],
            "high": [105.0, 109.0],
            "low": [100.0, 104.0],
            "close": [104.0, 108.0],
            "volume": [40.0, 40.0],
        },
        index=pd.DatetimeIndex(
            ["2024-01-01T00:00:00Z", "2024-01-01T04:00:00Z"], name="timestamp"
        ).as_unit("ns"),
    )
    pd.testing.assert_frame_equal(out, expected, check_freq=False)


def test_resample_drops_partial_edges_unless_kept() -> None:
    bars = _bars(9, start="2024-01-01T02:00:00Z")  # 02:00 .. 10:00
    assert resample(bars, "4h").index.tolist() == [pd.Timestamp("2024-01-01T04:00:00Z")]
    kept = resample(bars, "4h", keep_partial=True)
    assert kept.index.tolist() == [
        pd.Timestamp("2024-01-01T00:00:00Z"),
        pd.Timestamp("2024-01-01T04:00:00Z"),
        pd.Timestamp("2024-01-01T08:00:00Z"),
    ]
    assert kept["volume"].tolist() == [20.0, 40.0, 30.0]


def test_resample_drops_empty_buckets() -> None:
    bars = pd.concat([_bars(4), _bars(4, start="2024-01-01T12:00:00Z")])
    out = resample(bars, "4h")
    assert out.index.tolist() == [
        pd.Timestamp("2024-01-01T00:00:00Z"),
        pd.Timestamp("2024-01-01T12:00:00Z"),
    ]


def test_resample_to_finer_timeframe_is_an_error() -> None:
    with pytest.raises(DataError, match="coarser"):
        resample(_bars(4, freq="1D"), "1h")


def test_bundled_btc_hourly_to_daily_matches_manual_aggregation() -> None:
    hourly = load_bars("BTC/USD", "1h", quality="warn")
    daily = resample(hourly, "1d")
    day = hourly.index.floor("1D")
    groups = hourly.groupby(day)
    manual = pd.DataFrame(
        {
            "open": groups["open"].first(),
            "high": groups["high"].max(),
            "low": groups["low"].min(),
            "close": groups["close"].last(),
            "volume": groups["volume"].sum(),
        }
    )
    complete = groups.size() == 24
    manual = manual[complete.to_numpy()]
    manual.index.name = "timestamp"
    assert len(daily) == 837  # 2017-07-02 .. 2019-10-16; partial first and last days dropped
    pd.testing.assert_frame_equal(daily, manual, check_freq=False)


def test_bundled_btc_hourly_to_4h_to_1d_equals_hourly_to_1d() -> None:
    hourly = load_bars("BTC/USD", "1h")
    via_4h = resample(resample(hourly, "4h"), "1d", source_timeframe="4h")
    pd.testing.assert_frame_equal(via_4h, resample(hourly, "1d"), check_freq=False)
