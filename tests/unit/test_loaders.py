"""Bundled data (load_bars, bundled) and the general file loader (read_bars)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib
import logging
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelyard.errors import DataError
from modelyard.feeds import BARS_COLUMNS, bundled, load_bars, read_bars

bundled_module = importlib.import_module("modelyard.feeds.bundled")
DATA = Path(__file__).resolve().parents[2] / "data"

# data/PROVENANCE.md (copied from the shared manifest): file -> (rows, sha256)
MANIFEST = {
    "equity/AAPL_1d.csv.gz": (
        3270,
        "8f38c22734aa85dffac55fa180f60d58e07c694a25cf9f4dc6506dac118bc610",
    ),
    "equity/GOOG_1d.csv.gz": (
        2148,
        "dc51e58335cd8cfbb5181f76b06e95fdea29da50d33ff1771633b8021dd983d5",
    ),
    "equity/GSPC_1d.csv.gz": (
        5031,
        "640c3e4614fcb377d91d8b8b9ada7ae71c8a65826a1c310f1405f2c92188b910",
    ),
    "equity/IBM_1d.csv.gz": (
        3270,
        "ff02ee285b618e43e2f756587ddae1183b04661922f1b21940e58d97dd8c1a0f",
    ),
    "equity/IXIC_1d.csv.gz": (
        5031,
        "0f57b04579d3775c250f08927f0ca653a53e7aff92e964049f0537b70f47b5e9",
    ),
    "equity/MSFT_1d.csv.gz": (
        3270,
        "78e29f52c8a1ffcf09a0bfa14a75d0754988a997fa21c0f2e2ef6559e0e90858",
    ),
    "crypto/BTC-USD_1h.csv.gz": (
        20111,
        "b4b2121382de78993ef64a7bfab298652402cbc6aab7a8941c3d9d4e2be8b60f",
    ),
    "crypto/BTC-USD_1d.csv.gz": (
        1770,
        "de1f1e63408d57c6a8974036dd880294eb5b6daf8139a5083f77316b7fa51370",
    ),
    "crypto/Bitstamp_ETHUSD_1d.csv.gz": (
        788,
        "e58cb182ec1f2d0fb561cddd81977a31d64710f21cf8ca529dacf532aeed1cd2",
    ),
}


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_bundled_file_matches_manifest(name: str) -> None:
    rows, sha = MANIFEST[name]
    blob = (DATA / name).read_bytes()
    assert hashlib.sha256(blob).hexdigest() == sha
    assert f"{sha}" in (DATA / "PROVENANCE.md").read_text(encoding="utf-8")
    assert len(gzip.decompress(blob).decode().strip().splitlines()) == rows + 1


def test_bundled_catalog_lists_every_file_with_its_utc_range() -> None:
    table = bundled()
    assert list(table.columns) == [
        "symbol", "timeframe", "asset_class", "start", "end", "rows", "file", "aliases"
    ]  # fmt: skip
    assert sorted(table["file"].str.removeprefix("data/")) == sorted(MANIFEST)
    rows = dict(zip(table["file"].str.removeprefix("data/"), table["rows"], strict=True))
    assert rows == {name: value[0] for name, value in MANIFEST.items()}
    aapl = table.set_index(["symbol", "timeframe"]).loc[("AAPL", "1d")]
    # 2000-03-01 is in EST: 16:00 New York = 21:00 UTC
    assert aapl["start"] == pd.Timestamp("2000-03-01T21:00:00Z")
    btc = table.set_index(["symbol", "timeframe"]).loc[("BTC/USD", "1h")]
    assert (btc["start"], btc["end"]) == (
        pd.Timestamp("2017-07-01T11:00:00Z"),
        pd.Timestamp("2019-10-17T09:00:00Z"),
    )


def test_equity_dates_mean_the_dst_aware_session_close() -> None:
    bars = load_bars("AAPL", start="2012-03-09", end="2012-03-12")
    # 2012-03-09 EST (UTC-5), 2012-03-12 EDT (UTC-4): DST began 2012-03-11
    assert bars.index.tolist() == [
        pd.Timestamp("2012-03-09T21:00:00Z"),
        pd.Timestamp("2012-03-12T20:00:00Z"),
    ]
    assert bars.loc["2012-03-12T20:00:00Z"].tolist() == [548.982, 552.0, 547.0, 552.0, 14545800.0]


@pytest.mark.parametrize("symbol", ["BTC-USD", "BTCUSD", "BTC/USD", "btc/usd", " btc_usd "])
def test_crypto_symbol_forms_find_the_same_bars(symbol: str) -> None:
    bars = load_bars(symbol, "1h")
    pd.testing.assert_frame_equal(bars, load_bars("BTC/USD", "1h"))
    assert bars.attrs["symbol"] == "BTC/USD"
    assert len(bars) == 20111


def test_load_bars_is_in_schema_and_returns_copies() -> None:
    first = load_bars("ETH/USD")
    assert list(first.columns) == list(BARS_COLUMNS)
    assert str(first.index.dtype) == "datetime64[ns, UTC]"
    assert first.index.is_monotonic_increasing
    assert first.index.is_unique
    first.iloc[0, 0] = -1.0
    assert load_bars("ETH/USD").iloc[0, 0] == 322.15


def test_spy_and_qqq_are_documented_aliases_of_the_index_files() -> None:
    pd.testing.assert_frame_equal(load_bars("SPY"), load_bars("GSPC"))
    pd.testing.assert_frame_equal(load_bars("qqq"), load_bars("IXIC"))


def test_unknown_symbol_lists_the_bundled_symbols() -> None:
    with pytest.raises(DataError) as info:
        load_bars("AAPLE")
    message = str(info.value)
    assert "symbol 'AAPLE' is not bundled. Did you mean 'AAPL'?" in message
    assert "['AAPL', 'BTC/USD', 'ETH/USD', 'GOOG', 'GSPC', 'IBM', 'IXIC', 'MSFT']" in message


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2019-01-01", "2019-01-31"),
        (date(2019, 1, 1), date(2019, 1, 31)),
        (datetime(2019, 1, 1), datetime(2019, 1, 31, 23)),
        (pd.Timestamp("2019-01-01T00:00Z"), pd.Timestamp("2019-01-31T23:00Z")),
        (pd.Timestamp("2018-12-31T19:00", tz="America/New_York"), "2019-01-31"),
    ],
)
def test_start_end_forms_select_the_same_range(start: object, end: object) -> None:
    bars = load_bars("BTC/USD", "1h", start, end)  # type: ignore[arg-type]
    assert (bars.index[0], bars.index[-1], len(bars)) == (
        pd.Timestamp("2019-01-01T00:00:00Z"),
        pd.Timestamp("2019-01-31T23:00:00Z"),
        31 * 24,
    )


def test_empty_range_names_requested_and_available_range() -> None:
    with pytest.raises(DataError) as info:
        load_bars("MSFT", start="2020-01-01", end="2020-02-01")
    message = str(info.value)
    assert message.startswith("MSFT 1d: no bars between 2020-01-01 00:00:00+00:00 and")
    assert "covers 2000-03-01 21:00:00+00:00 .. 2013-03-01 21:00:00+00:00" in message


def test_missing_timeframe_lists_available_ones() -> None:
    with pytest.raises(DataError, match=r"AAPL: no bundled '1h' bars .* \['1d'\]"):
        load_bars("AAPL", "1h")
    with pytest.raises(DataError, match=r"BTC/USD: no bundled '15min' bars .* \['1h', '1d'\]"):
        load_bars("BTC/USD", "15min")


def test_coarser_timeframe_is_resampled_from_a_finer_file() -> None:
    bars = load_bars("BTC/USD", "4h", "2019-01-01", "2019-01-01")
    hourly = load_bars("BTC/USD", "1h", "2019-01-01T00:00", "2019-01-01T03:00")
    assert bars.index.tolist()[:2] == [
        pd.Timestamp("2019-01-01T00:00Z"),
        pd.Timestamp("2019-01-01T04:00Z"),
    ]
    assert bars.iloc[0].tolist() == [
        hourly["open"].iloc[0],
        hourly["high"].max(),
        hourly["low"].min(),
        hourly["close"].iloc[-1],
        pytest.approx(hourly["volume"].sum()),
    ]


def test_truncated_bundled_gzip_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = (DATA / "equity/IBM_1d.csv.gz").read_bytes()
    (tmp_path / "equity").mkdir()
    (tmp_path / "equity/IBM_1d.csv.gz").write_bytes(blob[: len(blob) // 2])
    monkeypatch.setattr(bundled_module, "data_dir", lambda: tmp_path)
    with pytest.raises(DataError, match=r"IBM_1d\.csv\.gz: cannot be read .*truncated") as info:
        load_bars("IBM")
    assert isinstance(info.value.__cause__, EOFError | OSError)


# --- read_bars ----------------------------------------------------------------------
def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_read_bars_maps_columns_and_localizes_naive_times(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "spy.csv.gz",
        ["Date", "Open", "High", "Low", "Close", "Volume", "Adj Close"],
        [
            ["2020-12-15 09:30:00", 1, 2, 0.5, 1.5, 100, 9],
            ["2020-12-15 09:31:00", 1.5, 2.5, 1.0, 2.0, 200, 9],
        ],
    )
    columns = {"Date": "timestamp", "Open": "open", "High": "high", "Low": "low"}
    columns |= {"Close": "close", "Volume": "volume"}
    bars = read_bars(path, columns=columns, tz="America/New_York", symbol="SPY")
    expected = pd.DataFrame(
        {
            "open": [1.0, 1.5],
            "high": [2.0, 2.5],
            "low": [0.5, 1.0],
            "close": [1.5, 2.0],
            "volume": [100.0, 200.0],
        },
        index=pd.DatetimeIndex(
            ["2020-12-15T14:30:00Z", "2020-12-15T14:31:00Z"], name="timestamp"
        ).as_unit("ns"),
    )
    pd.testing.assert_frame_equal(bars, expected)


def test_read_bars_session_close_dates(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "x.csv",
        ["timestamp", *BARS_COLUMNS],
        [["2020-07-01", 1, 2, 0.5, 1.5, 1], ["2020-12-01", 1, 2, 0.5, 1.5, 1]],
    )
    bars = read_bars(path, tz="America/New_York", date_means="session_close")
    assert bars.index.tolist() == [
        pd.Timestamp("2020-07-01T20:00:00Z"),
        pd.Timestamp("2020-12-01T21:00:00Z"),
    ]


def test_read_bars_converts_aware_timestamps_and_reads_parquet(tmp_path: Path) -> None:
    csv_path = _write_csv(
        tmp_path / "x.csv",
        ["timestamp", *BARS_COLUMNS],
        [
            ["2020-01-01T00:00:00+01:00", 1, 2, 0.5, 1.5, 1],
            ["2020-01-01T00:00:00Z", 1, 2, 0.5, 1.5, 1],
        ],
    )
    from_csv = read_bars(csv_path, tz="Asia/Tokyo")  # tz ignored for aware values
    assert from_csv.index.tolist() == [
        pd.Timestamp("2019-12-31T23:00:00Z"),
        pd.Timestamp("2020-01-01T00:00:00Z"),
    ]
    parquet = tmp_path / "x.parquet"
    from_csv.to_parquet(parquet)
    pd.testing.assert_frame_equal(read_bars(parquet), from_csv)


def test_read_bars_mixed_naive_and_aware_strings_is_an_error(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "x.csv",
        ["timestamp", *BARS_COLUMNS],
        [["2020-01-01T00:00:00Z", 1, 2, 0.5, 1.5, 1], ["2020-01-01T01:00:00", 1, 2, 0.5, 1.5, 1]],
    )
    with pytest.raises(DataError, match=r"x\.csv: timestamps mix naive \(2020-01-01T01:00:00\)"):
        read_bars(path)


def test_read_bars_missing_column_suggests_mapping(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "x.csv",
        ["timestamp", "open", "high", "low", "Close", "vol"],
        [["2020-01-01T00:00:00Z", 1, 2, 0.5, 1.5, 1]],
    )
    with pytest.raises(DataError, match=r"missing column\(s\) \['close', 'volume'\].*'Close'"):
        read_bars(path)
    with pytest.raises(DataError, match=r"names \['CLOSE'\].*Did you mean 'Close'\?"):
        read_bars(path, columns={"CLOSE": "close"})


def test_read_bars_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    rows = [[f"2020-01-01T{h:02d}:00:00Z", 1, 2, 0.5, 1.5, 1] for h in range(24)] * 50
    path = _write_csv(tmp_path / "cut.csv.gz", ["timestamp", *BARS_COLUMNS], rows)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) - 20])
    with pytest.raises(DataError, match=r"cut\.csv\.gz: cannot be read") as info:
        read_bars(path)
    assert info.value.__cause__ is not None


def test_read_bars_unsorted_rows_are_sorted_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write_csv(
        tmp_path / "x.csv",
        ["timestamp", *BARS_COLUMNS],
        [["2020-01-02", 1, 2, 0.5, 1.5, 1], ["2020-01-01", 1, 2, 0.5, 1.5, 1]],
    )
    with caplog.at_level(logging.WARNING):
        bars = read_bars(path)
    assert bars.index.tolist() == [
        pd.Timestamp("2020-01-01T00:00:00Z"),
        pd.Timestamp("2020-01-02T00:00:00Z"),
    ]
    assert any("not sorted" in r.getMessage() for r in caplog.records)


def test_read_bars_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        read_bars(tmp_path / "nope.csv")


def test_read_bars_drop_policy_removes_non_positive_rows(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "x.csv",
        ["timestamp", *BARS_COLUMNS],
        [
            ["2020-01-01T00:00:00Z", 1, 2, 0.5, 1.5, 1],
            ["2020-01-01T01:00:00Z", 0, 2, 0.5, 1.5, 1],
            ["2020-01-01T02:00:00Z", 1, 2, 0.5, 1.5, 1],
        ],
    )
    with pytest.raises(DataError, match="zero or negative"):
        read_bars(path, quality="warn")
    bars = read_bars(path, quality="drop")
    assert bars.index.tolist() == [
        pd.Timestamp("2020-01-01T00:00:00Z"),
        pd.Timestamp("2020-01-01T02:00:00Z"),
    ]
    assert np.array_equal(bars["open"].to_numpy(), [1.0, 1.0])


@pytest.mark.parametrize("symbol", ["BTC-USD", "BTCUSD", "btc/usd", "eth_usd", "spy", "AAPL"])
def test_symbols_resolve_without_a_usable_config(
    symbol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_config = bundled_module.canonical_symbol(symbol)
    monkeypatch.setattr(bundled_module, "_classifier", lambda: None)
    assert bundled_module.canonical_symbol(symbol) == with_config
    assert with_config in {"BTC/USD", "ETH/USD", "GSPC", "AAPL"}


def test_symbols_resolve_through_the_project_classifier(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelyard.config import parse_config
    from modelyard.routing.classifier import AssetClassifier

    config = parse_config(
        {
            "universal": "u",
            "asset_classes": {"crypto": {"patterns": [r"^BTC"]}, "equities": {}},
            "models": {"u": {"path": "u.onnx", "features": ["f"], "spec": "s"}},
        }
    )
    monkeypatch.setattr(bundled_module, "_classifier", lambda: AssetClassifier(config))
    assert bundled_module.canonical_symbol("btc-usd") == "BTC/USD"
    with pytest.raises(DataError, match="has characters no venue uses"):
        bundled_module.canonical_symbol("BTC$USD")
