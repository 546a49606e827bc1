"""Feature specs: formulas, warm-up, no look-ahead, and online/vectorized parity."""

from __future__ import annotations

from collections import namedtuple
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.errors import ConfigError, DataError
from modelyard.models.features import (
    Feature,
    FeatureSpec,
    OnlineFeatures,
    compute,
    compute_target,
    spec_for,
)

SPECS = ("crypto", "equities", "universal")
_MAIN_DATA = Path(__file__).resolve().parents[2] / "data"
_SHARED_DATA = Path("/work/shared/data/market")


def _real_bars(kind: str, file: str) -> pd.DataFrame:
    """Bundled bars if the project has them, else the shared copy; skip if neither."""
    shared_kind = "equity" if kind == "equities" else kind
    for path in (_MAIN_DATA / kind / file, _MAIN_DATA / shared_kind / file):
        if path.is_file():
            break
    else:
        path = _SHARED_DATA / shared_kind / file
    if not path.is_file():
        pytest.skip(f"no bundled bars {file} under {_MAIN_DATA} or {_SHARED_DATA}")
    frame = pd.read_csv(path, compression="gzip")
    index = pd.DatetimeIndex(pd.to_datetime(frame.pop("timestamp"), utc=True), name="timestamp")
    frame.index = index
    return frame[["open", "high", "low", "close", "volume"]].astype("float64")


def _synthetic(n: int, seed: int = 7, freq: str = "1h") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0.0, 0.002, n))
    high = np.maximum(open_, close) * (1.0 + rng.uniform(0.0, 0.01, n))
    low = np.minimum(open_, close) * (1.0 - rng.uniform(0.0, 0.01, n))
    volume = rng.uniform(0.0, 1000.0, n)
    volume[n // 3 : n // 3 + 40] = 0.0
    index = pd.date_range("2024-01-01", periods=n, freq=freq, tz="UTC", name="timestamp")
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index
    )


def _online_rows(bars: pd.DataFrame, spec: FeatureSpec) -> list[dict[str, float] | None]:
    online = OnlineFeatures(spec)
    return [online.update(bar) for bar in bars.reset_index().itertuples(index=False)]


def _assert_parity(bars: pd.DataFrame, spec: FeatureSpec) -> None:
    frame = compute(bars, spec)
    rows = _online_rows(bars, spec)
    w = spec.warmup
    assert rows[:w] == [None] * min(w, len(bars))
    if len(bars) <= w:
        return
    assert all(r is not None and tuple(r) == spec.names for r in rows[w:])
    online = np.array([list(r.values()) for r in rows[w:] if r is not None], dtype=np.float64)
    np.testing.assert_allclose(online, frame.to_numpy()[w:], rtol=1e-9, atol=1e-12)


# -- specs ---------------------------------------------------------------------------------


def test_spec_names_and_warmups_are_pinned() -> None:
    assert list(spec_for("crypto").names) == [
        "ret_1",
        "ret_3",
        "ret_6",
        "ret_12",
        "ret_24",
        "ret_1_lag1",
        "vol_24",
        "vol_72",
        "mom_72",
        "volm_24",
        "volz_24",
        "range_hl",
        "close_loc",
        "rsi_14",
        "hour_sin",
        "hour_cos",
    ]
    assert list(spec_for("equities").names) == [
        "ret_1",
        "ret_5",
        "ret_20",
        "vol_20",
        "vol_60",
        "mom_60",
        "mom_120",
        "gap",
        "volz_20",
        "rsi_14",
        "ma_dist_50",
        "range_hl",
    ]
    assert list(spec_for("universal").names) == [
        "ret_1",
        "ret_5",
        "ret_20",
        "vol_20",
        "mom_60",
        "volz_20",
        "rsi_14",
        "close_loc",
    ]
    assert {n: spec_for(n).warmup for n in SPECS} == {
        "crypto": 72,
        "equities": 119,
        "universal": 59,
    }


def test_spec_for_unknown_name_suggests() -> None:
    with pytest.raises(ConfigError, match="did you mean 'crypto'"):
        spec_for("crypo")


def test_specs_are_frozen_and_hashable() -> None:
    spec = spec_for("universal")
    with pytest.raises(AttributeError):
        spec.name = "x"  # type: ignore[misc]
    assert hash(spec) == hash(spec_for("universal"))


def test_feature_rejects_bad_kind_and_params() -> None:
    with pytest.raises(ConfigError, match="did you mean 'vol'"):
        Feature.of("v", "vo", window=3)
    with pytest.raises(ConfigError, match="takes parameters"):
        Feature.of("v", "vol", span=3)
    with pytest.raises(ConfigError, match="bad parameters"):
        Feature.of("v", "vol", window=1)
    with pytest.raises(ConfigError, match="repeated"):
        FeatureSpec("x", (Feature.of("a", "gap"), Feature.of("a", "gap")))


# -- vectorized formulas against a straightforward pandas reference ----------------------


def test_compute_matches_pandas_reference_formulas() -> None:
    bars = _synthetic(400)
    got = compute(bars, spec_for("crypto"))
    c, v = bars["close"], bars["volume"]
    r1 = np.log(c / c.shift(1))
    d = c.diff()
    gain = d.clip(lower=0).rolling(14).sum()
    loss = (-d).clip(lower=0).rolling(14).sum()
    hour = bars.index.hour.to_numpy()
    want = pd.DataFrame(
        {
            "ret_1": r1,
            "ret_3": np.log(c / c.shift(3)),
            "ret_6": np.log(c / c.shift(6)),
            "ret_12": np.log(c / c.shift(12)),
            "ret_24": np.log(c / c.shift(24)),
            "ret_1_lag1": r1.shift(1),
            "vol_24": r1.rolling(24).std(),
            "vol_72": r1.rolling(72).std(),
            "mom_72": c / c.rolling(72).mean() - 1,
            "volm_24": np.log((v.rolling(6).mean() + 1e-9) / (v.rolling(24).mean() + 1e-9)),
            "volz_24": ((v - v.rolling(24).mean()) / v.rolling(24).std()).where(
                v.rolling(24).std() > 1e-9, 0.0
            ),
            "range_hl": (bars["high"] - bars["low"]) / c,
            "close_loc": (c - bars["low"]) / (bars["high"] - bars["low"]),
            "rsi_14": (100 * gain / (gain + loss)),
            "hour_sin": np.sin(2 * np.pi * hour / 24),
            "hour_cos": np.cos(2 * np.pi * hour / 24),
        },
        index=bars.index,
    )
    want.iloc[:72] = np.nan
    assert list(got.columns) == list(want.columns)
    assert (got.dtypes == np.float64).all()
    pd.testing.assert_frame_equal(got, want, rtol=1e-9, atol=1e-9)


def test_flat_and_zero_volume_cases_are_defined() -> None:
    n = 200
    index = pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC")
    flat = pd.DataFrame(
        {"open": 5.0, "high": 5.0, "low": 5.0, "close": 5.0, "volume": 0.0}, index=index
    )
    got = compute(flat, spec_for("crypto")).iloc[72:]
    assert (got["volm_24"] == 0.0).all()
    assert (got["volz_24"] == 0.0).all()
    assert (got["close_loc"] == 0.5).all()
    assert (got["rsi_14"] == 50.0).all()
    assert (got[["ret_1", "vol_72", "mom_72", "range_hl"]] == 0.0).all().all()
    flat["volume"] = 0.1  # constant, not exactly representable: std is not exactly 0
    assert (compute(flat, spec_for("crypto"))["volz_24"].iloc[72:] == 0.0).all()


def test_equities_gap_and_ma_dist() -> None:
    bars = _synthetic(300, freq="1D")
    got = compute(bars, spec_for("equities"))
    c = bars["close"]
    want_gap = np.log(bars["open"] / c.shift(1)).iloc[119:]
    want_ma = (c / c.rolling(50).mean() - 1).iloc[119:]
    np.testing.assert_allclose(got["gap"].iloc[119:], want_gap, rtol=1e-12)
    np.testing.assert_allclose(got["ma_dist_50"].iloc[119:], want_ma, rtol=1e-9)


def test_hour_features_use_utc_hour() -> None:
    index = pd.date_range("2024-03-01 00:00", periods=100, freq="1h", tz="America/New_York")
    bars = _synthetic(100)
    bars.index = index
    got = compute(bars, spec_for("crypto")).iloc[72:]
    utc_hour = index.tz_convert("UTC").hour.to_numpy()[72:]
    np.testing.assert_allclose(got["hour_sin"], np.sin(2 * np.pi * utc_hour / 24), atol=1e-15)


def test_compute_missing_columns_raises_data_error() -> None:
    bars = _synthetic(10).drop(columns=["volume", "low"])
    with pytest.raises(DataError, match=r"\['low', 'volume'\]"):
        compute(bars, spec_for("crypto"))


@pytest.mark.parametrize("name", SPECS)
def test_compute_on_empty_frame(name: str) -> None:
    got = compute(_synthetic(5).iloc[:0], spec_for(name))
    assert list(got.columns) == list(spec_for(name).names)
    assert len(got) == 0
    assert (got.dtypes == np.float64).all()


@pytest.mark.parametrize("name", SPECS)
def test_warmup_rows_nan_then_finite(name: str) -> None:
    spec = spec_for(name)
    got = compute(_synthetic(300), spec).to_numpy()
    assert np.isnan(got[: spec.warmup]).all()
    assert np.isfinite(got[spec.warmup :]).all()


# -- no look-ahead ------------------------------------------------------------------------


@pytest.mark.parametrize("name", SPECS)
@pytest.mark.parametrize("t", [130, 131, 250])
def test_no_look_ahead(name: str, t: int) -> None:
    spec = spec_for(name)
    bars = _synthetic(300)
    base = compute(bars, spec)
    perturbed = bars.copy()
    rng = np.random.default_rng(t)
    factor = rng.uniform(0.5, 2.0, (len(bars) - t - 1, 1))
    perturbed.iloc[t + 1 :] = perturbed.iloc[t + 1 :].to_numpy() * factor
    after = compute(perturbed, spec)
    pd.testing.assert_frame_equal(after.iloc[: t + 1], base.iloc[: t + 1], rtol=0, atol=0)
    assert not after.iloc[t + 1 :].equals(base.iloc[t + 1 :])


def test_target_is_forward_log_return() -> None:
    bars = _synthetic(50)
    got = compute_target(bars, 3)
    c = bars["close"].to_numpy()
    want = np.r_[np.log(c[3:] / c[:-3]), [np.nan] * 3]
    np.testing.assert_allclose(got.to_numpy(), want, rtol=1e-15)
    assert got.name == "target_3"
    assert got.index.equals(bars.index)
    with pytest.raises(ValueError, match="positive"):
        compute_target(bars, 0)


# -- online -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SPECS)
def test_online_warmup_count(name: str) -> None:
    spec = spec_for(name)
    rows = _online_rows(_synthetic(spec.warmup + 3), spec)
    assert [r is None for r in rows] == [True] * spec.warmup + [False] * 3


def test_online_accepts_mapping_namedtuple_and_datetime() -> None:
    spec = spec_for("crypto")
    bars = _synthetic(80)
    bar_t = namedtuple("bar_t", "timestamp open high low close volume")
    a, b = OnlineFeatures(spec), OnlineFeatures(spec)
    out_a = out_b = None
    for ts, row in bars.iterrows():
        stamp = ts.to_pydatetime()
        assert stamp.tzinfo is not None
        out_a = a.update({"timestamp": ts, **row.to_dict()})
        out_b = b.update(bar_t(datetime.fromtimestamp(stamp.timestamp(), UTC), *row.to_list()))
    assert out_a is not None
    assert out_a == out_b
    assert a.count == 80
    assert a.ready


def test_online_rejects_bad_bars() -> None:
    online = OnlineFeatures(spec_for("universal"))
    ts = pd.Timestamp("2024-01-01", tz="UTC")
    bar = {"timestamp": ts, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0}
    online.update(bar)
    with pytest.raises(DataError, match="does not follow"):
        online.update(bar)
    with pytest.raises(DataError, match="volume"):
        online.update({k: v for k, v in bar.items() if k != "volume"})


@pytest.mark.parametrize(
    ("name", "kind", "file"),
    [
        ("crypto", "crypto", "BTC-USD_1h.csv.gz"),
        ("universal", "crypto", "BTC-USD_1h.csv.gz"),
        ("equities", "equities", "AAPL_1d.csv.gz"),
        ("universal", "equities", "AAPL_1d.csv.gz"),
    ],
)
def test_online_matches_vectorized_on_real_bars(name: str, kind: str, file: str) -> None:
    bars = _real_bars(kind, file)
    if kind == "crypto":
        assert len(bars) >= 20_000
    _assert_parity(bars, spec_for(name))


@st.composite
def _random_bars(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(min_value=1, max_value=260))
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1e-4, 1.0, 3e4]))
    sigma = draw(st.sampled_from([0.0, 1e-3, 0.05, 0.3]))
    close = scale * np.exp(np.cumsum(rng.normal(0.0, sigma, n)))
    open_ = close * np.exp(rng.normal(0.0, sigma, n))
    high = np.maximum(open_, close) * (1.0 + rng.exponential(sigma / 4 + 1e-12, n))
    low = np.minimum(open_, close) * (1.0 - rng.uniform(0.0, 0.5, n) * min(sigma, 0.5))
    volume = rng.choice([0.0, 1.0], n, p=[0.3, 0.7]) * rng.lognormal(5.0, 2.0, n)
    if draw(st.booleans()):
        start = draw(st.integers(min_value=0, max_value=n - 1))
        volume[start : start + draw(st.integers(1, 80))] = 0.0
    index = pd.date_range("2020-01-01", periods=n, freq="1h", tz="UTC", name="timestamp")
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index
    )


@settings(max_examples=30, deadline=None)
@given(bars=_random_bars(), name=st.sampled_from(SPECS))
def test_online_matches_vectorized_property(bars: pd.DataFrame, name: str) -> None:
    spec = spec_for(name)
    _assert_parity(bars, spec)
    frame = compute(bars, spec).to_numpy()[spec.warmup :]
    assert np.isfinite(frame).all()
    rsi = frame[:, list(spec.names).index("rsi_14")]
    assert ((rsi >= 0.0) & (rsi <= 100.0)).all()


def test_vectorized_window_sums_keep_flat_rules_after_large_values() -> None:
    """The vectorized path's O(1) window sums must not drift: flat runs after huge values
    still give exactly 0 (volz, volm) and 50 (rsi), and every row matches online."""
    n = 1500
    rng = np.random.default_rng(11)
    bars = _synthetic(n, seed=11)
    volume = rng.lognormal(20.0, 3.0, n)  # up to ~1e13
    volume[300:400] = 0.0
    volume[600:700] = 0.1  # constant, not exactly representable
    volume[900:1000] = 1e-7 * (1.0 + 1e-15 * rng.uniform(size=100))  # flat up to rounding
    bars["volume"] = volume
    flat_price = float(bars["close"].iloc[1100])
    for col in ("open", "high", "low", "close"):
        prices = bars[col].to_numpy().copy()
        prices[1100:1200] = flat_price
        bars[col] = prices
    spec = spec_for("crypto")
    got = compute(bars, spec)
    for lo, hi in ((300, 400), (600, 700), (900, 1000)):
        assert (got["volz_24"].iloc[lo + 23 : hi] == 0.0).all()
    assert (got["volm_24"].iloc[323:400] == 0.0).all()
    assert (got["rsi_14"].iloc[1114:1200] == 50.0).all()
    assert (got["vol_24"].iloc[1124:1200] == 0.0).all()
    _assert_parity(bars, spec)
    _assert_parity(bars, spec_for("equities"))


@pytest.mark.parametrize(
    ("n", "k", "start"),
    [(1, 1, 0), (50, 1, 0), (50, 7, 0), (50, 7, 9), (60, 24, 72), (200, 72, 72), (200, 13, 150)],
)
def test_window_sums_match_naive_and_keep_nan_local(n: int, k: int, start: int) -> None:
    from modelyard.models._feature_kernels import _window_sums

    rng = np.random.default_rng(n * 1000 + k)
    x = rng.lognormal(0.0, 4.0, n) * rng.choice([-1.0, 1.0], n)
    x[n // 2] = np.nan
    suf, sums = np.full(n, -1.0), np.full(n, -1.0)
    _window_sums(x, k, start, suf, sums)
    first = max(start, k - 1)
    for t in range(first, n):
        window = x[t - k + 1 : t + 1]
        if np.isnan(window).any():
            assert np.isnan(sums[t])
        else:
            np.testing.assert_allclose(
                sums[t], window.sum(), rtol=1e-12, atol=1e-12 * np.abs(window).sum()
            )
    assert (sums[:first] == -1.0).all()


def test_rsi_never_exceeds_100_when_every_move_is_up() -> None:
    """Regression: ``100 * g / g`` rounds to 100.00000000000001 for some g, which broke the
    contract's [0, 100] bound on synthetic bars; ``100 * (g / g)`` is exactly 100."""
    rng = np.random.default_rng(3)
    n = 4000
    close = 100.0 + np.cumsum(rng.uniform(0.001, 3.0, n))  # strictly rising
    index = pd.date_range("2020-01-01", periods=n, freq="h", tz="UTC")
    bars = pd.DataFrame(
        {
            "open": close,
            "high": close * 1.001,
            "low": close * 0.999,
            "close": close,
            "volume": np.full(n, 10.0),
        },
        index=index,
    )
    spec = spec_for("universal")
    rsi = compute(bars, spec)["rsi_14"].to_numpy()[spec.warmup :]
    assert (rsi == 100.0).all()
    online = OnlineFeatures(spec)
    records = bars.to_dict("records")
    rows = [online.update({"timestamp": t, **r}) for t, r in zip(index, records, strict=True)]
    assert all(row["rsi_14"] == 100.0 for row in rows[spec.warmup :] if row is not None)
