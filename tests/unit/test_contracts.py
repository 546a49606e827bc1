"""Data contracts: loading, whole-frame validation, and the fast per-row checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from modelyard.errors import ConfigError, ContractViolation
from modelyard.models.contracts import (
    DataContract,
    frame_violations,
    load_contract,
    row_violations,
    validate,
)
from modelyard.models.features import compute, spec_for

SPECS = ("crypto", "equities", "universal")


def _bars(n: int = 300, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * 1.002
    low = np.minimum(open_, close) * 0.998
    volume = rng.uniform(0.0, 10.0, n)
    index = pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC", name="timestamp")
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index
    )


@pytest.fixture
def crypto() -> tuple[DataContract, pd.DataFrame]:
    return load_contract("crypto"), compute(_bars(), spec_for("crypto"))


@pytest.mark.parametrize("name", SPECS)
def test_contract_matches_spec_and_valid_frame_passes(name: str) -> None:
    contract = load_contract(name)
    spec = spec_for(name)
    assert contract.names == spec.names
    assert contract.warmup == spec.warmup
    assert contract.spec == name
    report = validate(compute(_bars(), spec), contract)
    assert report.ok
    assert report.violations == ()


def test_load_by_path_equals_load_by_name() -> None:
    contract = load_contract("universal")
    path = Path(__file__).resolve().parents[2] / "config/contracts/universal_features.yaml"
    assert load_contract(path) == contract
    assert load_contract(str(path)) == contract


def _raises(frame: pd.DataFrame, contract: DataContract) -> ContractViolation:
    with pytest.raises(ContractViolation) as info:
        validate(frame, contract)
    return info.value


def test_nan_after_warmup(crypto: tuple[DataContract, pd.DataFrame]) -> None:
    contract, frame = crypto
    frame.iloc[[100, 150], frame.columns.get_loc("vol_24")] = np.nan
    frame.iloc[200, frame.columns.get_loc("vol_24")] = np.inf
    err = _raises(frame, contract)
    assert (err.column, err.rule, err.count) == ("vol_24", "non_finite", 3)
    assert err.first == tuple(frame.index[[100, 150, 200]])
    assert "vol_24: non_finite" in str(err)
    assert "3 row(s)" in str(err)
    assert str(frame.index[100]) in str(err)


def test_nan_during_warmup_is_allowed(crypto: tuple[DataContract, pd.DataFrame]) -> None:
    contract, frame = crypto
    assert frame.iloc[: contract.warmup].isna().all().all()
    assert validate(frame, contract).ok


def test_out_of_range_above_max(crypto: tuple[DataContract, pd.DataFrame]) -> None:
    contract, frame = crypto
    rows = list(range(80, 90))
    frame.iloc[rows, frame.columns.get_loc("rsi_14")] = 100.5
    err = _raises(frame, contract)
    assert (err.column, err.rule, err.count) == ("rsi_14", "max", 10)
    assert err.first == tuple(frame.index[80:85])
    assert "above max 100" in str(err)


def test_out_of_range_below_min(crypto: tuple[DataContract, pd.DataFrame]) -> None:
    contract, frame = crypto
    frame.iloc[120, frame.columns.get_loc("close_loc")] = -0.01
    err = _raises(frame, contract)
    assert (err.column, err.rule, err.count, err.first) == (
        "close_loc",
        "min",
        1,
        (frame.index[120],),
    )


def test_missing_column(crypto: tuple[DataContract, pd.DataFrame]) -> None:
    contract, frame = crypto
    err = _raises(frame.drop(columns=["hour_cos"]), contract)
    assert (err.column, err.rule) == ("hour_cos", "missing_column")
    assert "hour_cos: missing_column" in str(err)


def test_unexpected_column_and_order(crypto: tuple[DataContract, pd.DataFrame]) -> None:
    contract, frame = crypto
    err = _raises(frame.assign(extra=1.0), contract)
    assert (err.column, err.rule) == ("extra", "unexpected_column")
    swapped = frame[list(reversed(frame.columns))]
    assert _raises(swapped, contract).rule == "column_order"


def test_wrong_dtype(crypto: tuple[DataContract, pd.DataFrame]) -> None:
    contract, frame = crypto
    frame["rsi_14"] = frame["rsi_14"].astype("float32")
    err = _raises(frame, contract)
    assert (err.column, err.rule) == ("rsi_14", "dtype")


def test_non_monotonic_index(crypto: tuple[DataContract, pd.DataFrame]) -> None:
    contract, frame = crypto
    order = np.arange(len(frame))
    order[[150, 151]] = [151, 150]
    shuffled = frame.iloc[order]
    err = _raises(shuffled, contract)
    assert (err.column, err.rule, err.count) == ("<index>", "index_monotonic", 1)
    assert err.first == (shuffled.index[151],)


def test_duplicate_index(crypto: tuple[DataContract, pd.DataFrame]) -> None:
    contract, frame = crypto
    index = frame.index.to_numpy().copy()
    index[200] = index[199]
    frame.index = pd.DatetimeIndex(index)
    err = _raises(frame, contract)
    assert (err.column, err.rule, err.count, err.first) == (
        "<index>",
        "index_unique",
        1,
        (frame.index[200],),
    )


def test_too_few_rows(crypto: tuple[DataContract, pd.DataFrame]) -> None:
    contract, frame = crypto
    err = _raises(frame.iloc[: contract.min_rows - 1], contract)
    assert (err.column, err.rule, err.count) == ("<index>", "min_rows", contract.min_rows - 1)


def test_report_lists_every_violation_without_raising(
    crypto: tuple[DataContract, pd.DataFrame],
) -> None:
    contract, frame = crypto
    frame.iloc[100, 0] = np.nan
    frame.iloc[101, frame.columns.get_loc("hour_sin")] = 1.5
    report = validate(frame, contract, raise_on_error=False)
    assert not report.ok
    got = [(v.column, v.rule, v.count, v.first) for v in report.violations]
    assert got == [
        ("ret_1", "non_finite", 1, (frame.index[100],)),
        ("hour_sin", "max", 1, (frame.index[101],)),
    ]


def _write(tmp_path: Path, mutate: dict[str, object]) -> Path:
    source = Path(__file__).resolve().parents[2] / "config/contracts/universal_features.yaml"
    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    raw.update(mutate)
    path = tmp_path / "bad_features.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_unknown_key_raises_config_error_naming_it(tmp_path: Path) -> None:
    path = _write(tmp_path, {"warmpu": 3})
    with pytest.raises(ConfigError, match="unknown key 'warmpu'; did you mean 'warmup'") as info:
        load_contract(path)
    assert info.value.key == "warmpu"
    assert str(path) in str(info.value)


def test_unknown_column_key_names_the_column_path(tmp_path: Path) -> None:
    raw_cols = load_contract("universal").model_dump()["columns"]
    raw_cols[2]["maximum"] = 3
    path = _write(tmp_path, {"columns": raw_cols})
    with pytest.raises(ConfigError, match="unknown key 'maximum'") as info:
        load_contract(path)
    assert info.value.key == "columns.2.maximum"


def test_bad_value_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="min_rows"):
        load_contract(_write(tmp_path, {"min_rows": 0}))
    with pytest.raises(ConfigError, match="not found"):
        load_contract("nonesuch")


def test_row_violations_reasons() -> None:
    contract = load_contract("crypto")
    check = row_violations(contract, contract.names)
    row = compute(_bars(), spec_for("crypto")).to_numpy()[-1].copy()
    assert check(row) is None
    bad = row.copy()
    bad[13] = 101.0
    assert check(bad) == "rsi_14 above max 100"
    bad = row.copy()
    bad[6] = -1e-3
    assert check(bad) == "vol_24 below min 0"
    bad = row.copy()
    bad[0] = np.nan
    assert check(bad) == "ret_1 is not finite (nan)"
    bad[0] = np.inf
    assert check(bad) == "ret_1 is not finite (inf)"
    assert check(row[:3]) == "expected 16 features, got shape (3,)"


def test_row_violations_subset_and_unknown_name() -> None:
    contract = load_contract("crypto")
    check = row_violations(contract, ["rsi_14", "close_loc"])
    assert check(np.array([50.0, 0.5])) is None
    assert check(np.array([50.0, 1.5])) == "close_loc above max 1"
    with pytest.raises(ConfigError, match="nope"):
        row_violations(contract, ["rsi_14", "nope"])


def test_frame_violations_mask() -> None:
    contract = load_contract("universal")
    x = compute(_bars(), spec_for("universal")).to_numpy(copy=True)
    want = np.zeros(len(x), dtype=bool)
    want[: contract.warmup] = True
    x[200, 6] = 100.1
    x[201, 0] = -np.inf
    want[[200, 201]] = True
    np.testing.assert_array_equal(frame_violations(contract, x), want)
    with pytest.raises(ValueError, match="shape"):
        frame_violations(contract, x[:, :3])
