"""The router: isolation by flag, every fallback reason, strict mode, concurrency, batches."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelyard.config import load_config
from modelyard.errors import ContractViolation, ModelLoadError, RoutingError
from modelyard.models.onnx_model import OnnxModel
from modelyard.routing import AssetSpecificModelRouter, ContractCheck, ModelRegistry
from tests.conftest import build_onnx

SYMBOLS = {"BTC-USD": "crypto", "ETHUSDT": "crypto", "AAPL": "equities", "ZZZZ9": "equities"}


def _features(router: AssetSpecificModelRouter, symbol: str, seed: int = 0) -> dict[str, float]:
    """A mapping with every feature name of every model (so any fallback can be served)."""
    names = {n for spec in router.config.models.values() for n in spec.features}
    rng = np.random.default_rng(seed)
    return {name: float(rng.normal(scale=0.01)) for name in sorted(names)}


def _router(registry_dir: Path, **kwargs: object) -> AssetSpecificModelRouter:
    return AssetSpecificModelRouter(load_config(registry_dir / "assets.yaml"), **kwargs)  # type: ignore[arg-type]


def test_flag_off_routes_everything_to_universal(registry_dir: Path, no_flag_env: None) -> None:
    router = _router(registry_dir)
    assert router.asset_specific is False
    for symbol, cls in SYMBOLS.items():
        d = router.route(symbol)
        assert (d.asset_class, d.model_id, d.reason) == (cls, "universal_v1", "flag_off")
        assert (
            d.model_sha256
            == OnnxModel(registry_dir / "models/universal_v1.onnx", model_id="u").sha256
        )


def test_flag_on_routes_each_class_to_its_model(registry_dir: Path, no_flag_env: None) -> None:
    router = _router(registry_dir, asset_specific=True)
    served = {s: router.route(s).model_id for s in SYMBOLS}
    assert served == {
        "BTC-USD": "crypto_v1",
        "ETHUSDT": "crypto_v1",
        "AAPL": "equities_v1",
        "ZZZZ9": "equities_v1",  # unknown symbols go to the default class, equities
    }
    assert {router.route(s).reason for s in SYMBOLS} == {"asset_specific"}


def test_environment_flag_switches_routing(
    registry_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLAG_ASSET_SPECIFIC_MODELS", "1")
    assert _router(registry_dir).route("AAPL").model_id == "equities_v1"
    monkeypatch.setenv("FLAG_ASSET_SPECIFIC_MODELS", "0")
    assert _router(registry_dir).route("AAPL").model_id == "universal_v1"


def test_predictions_differ_by_model(registry_dir: Path) -> None:
    on = _router(registry_dir, asset_specific=True)
    off = _router(registry_dir, asset_specific=False)
    feats = _features(on, "AAPL")
    universal = OnnxModel(registry_dir / "models/universal_v1.onnx", model_id="u")
    equities = OnnxModel(registry_dir / "models/equities_v1.onnx", model_id="e")
    u_row = [feats[n] for n in on.config.models["universal_v1"].features]
    e_row = [feats[n] for n in on.config.models["equities_v1"].features]
    assert off.predict("AAPL", feats) == universal.predict(u_row)[0]
    assert on.predict("AAPL", feats) == equities.predict(e_row)[0]
    assert on.predict("AAPL", feats) != off.predict("AAPL", feats)


def test_missing_model_falls_back(registry_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    router = _router(registry_dir, asset_specific=True)
    with caplog.at_level(logging.WARNING):
        d = router.route("SPY240119C00450000")
        router.route("SPY240119C00450000")
        router.route("QQQ240119P00300000")
    assert (d.asset_class, d.model_id, d.reason) == ("options", "universal_v1", "missing")
    assert "options_v1.onnx does not exist" in d.detail
    # logged once per (symbol, reason), counted per (model, reason)
    assert sum("SPY240119C00450000" in r.message for r in caplog.records) == 1
    assert router.fallback_counts[("options_v1", "missing")] == 2


def test_corrupt_onnx_falls_back_with_load_error(registry_dir: Path) -> None:
    (registry_dir / "models/crypto_v1.onnx").write_bytes(np.random.default_rng(1).bytes(512))
    d = _router(registry_dir, asset_specific=True).route("BTC/USD")
    assert (d.model_id, d.reason) == ("universal_v1", "load_error")
    assert "onnxruntime cannot load" in d.detail


def test_feature_count_mismatch_falls_back(registry_dir: Path) -> None:
    build_onnx(registry_dir / "models/equities_v1.onnx", ["a", "b", "c"], model_id="equities_v1")
    d = _router(registry_dir, asset_specific=True).route("MSFT")
    assert (d.model_id, d.reason) == ("universal_v1", "feature_mismatch")
    assert "takes 3 features but the registry lists 12" in d.detail


def test_feature_name_mismatch_falls_back(registry_dir: Path) -> None:
    names = list(load_config(registry_dir / "assets.yaml").models["equities_v1"].features)
    names[2] = "ret_21"
    build_onnx(registry_dir / "models/equities_v1.onnx", names, model_id="equities_v1")
    d = _router(registry_dir, asset_specific=True).route("MSFT")
    assert (d.model_id, d.reason) == ("universal_v1", "feature_mismatch")
    assert "'ret_21'" in d.detail


def test_sha256_mismatch_names_both_hashes(registry_dir: Path) -> None:
    config = load_config(registry_dir / "assets.yaml")
    spec = config.models["crypto_v1"]
    wrong = "0" * 64
    tampered = config.model_copy(
        update={"models": {**config.models, "crypto_v1": spec.model_copy(update={"sha256": wrong})}}
    )
    router = AssetSpecificModelRouter(tampered, asset_specific=True)
    d = router.route("BTC/USD")
    actual = OnnxModel(spec.path, model_id="c").sha256
    assert d.reason == "load_error"
    assert wrong in d.detail
    assert actual in d.detail


def test_strict_mode_raises(registry_dir: Path) -> None:
    router = _router(registry_dir, asset_specific=True, strict=True)
    assert router.route("AAPL").model_id == "equities_v1"
    with pytest.raises(RoutingError, match=r"options_v1.*missing.*strict"):
        router.route("SPY240119C00450000")


def test_universal_failure_is_an_error_not_a_zero(registry_dir: Path) -> None:
    (registry_dir / "models/universal_v1.onnx").unlink()
    router = _router(registry_dir, asset_specific=False)
    d = router.route("AAPL")  # decisions still work while files are missing
    assert (d.model_id, d.model_sha256) == ("universal_v1", None)
    with pytest.raises(ModelLoadError, match="universal model cannot serve"):
        router.predict("AAPL", _features(router, "AAPL"))


def test_sixteen_threads_load_each_session_once(registry_dir: Path) -> None:
    config = load_config(registry_dir / "assets.yaml")
    registry = ModelRegistry(config)
    router = AssetSpecificModelRouter(config, registry=registry, asset_specific=True)
    barrier = threading.Barrier(16)
    results: list[float] = []
    errors: list[BaseException] = []
    symbols = ["AAPL", "BTC/USD", "MSFT", "ETH/USD"]

    def work(i: int) -> None:
        try:
            barrier.wait()
            symbol = symbols[i % 4]
            results.append(router.predict(symbol, _features(router, symbol, seed=i)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 16
    assert registry.load_count == {
        "universal_v1": 0,
        "crypto_v1": 1,
        "equities_v1": 1,
        "options_v1": 0,
    }


def test_predict_frame_groups_by_model_and_matches_predict(registry_dir: Path) -> None:
    router = _router(registry_dir, asset_specific=True)
    symbols = ["AAPL", "BTC/USD", "SPY240119C00450000", "MSFT", "ETH/USD", "AAPL"]
    rows = [{"symbol": s, **_features(router, s, seed=i)} for i, s in enumerate(symbols)]
    frame = pd.DataFrame(rows, index=pd.RangeIndex(10, 16))
    result = router.predict_frame(frame, with_models=True)
    assert isinstance(result, pd.DataFrame)
    expected = [router.predict(s, _features(router, s, seed=i)) for i, s in enumerate(symbols)]
    np.testing.assert_array_equal(result["prediction"].to_numpy(), expected)
    assert list(result["model_id"]) == [
        "equities_v1",
        "crypto_v1",
        "universal_v1",
        "equities_v1",
        "crypto_v1",
        "equities_v1",
    ]
    assert list(result.index) == list(range(10, 16))


def _bound_check(limit: float) -> ContractCheck:
    def row(x: np.ndarray) -> str | None:
        return None if np.all(np.abs(x) <= limit) else f"a value beyond ±{limit}"

    def batch(x: np.ndarray) -> np.ndarray:
        return np.asarray(~np.all(np.abs(x) <= limit, axis=1))

    return ContractCheck(row=row, batch=batch)


def test_contract_violation_falls_back_per_row(registry_dir: Path) -> None:
    config = load_config(registry_dir / "assets.yaml")
    router = AssetSpecificModelRouter(
        config,
        asset_specific=True,
        contracts=lambda mid: _bound_check(1.0) if mid == "equities_v1" else None,
    )
    good = _features(router, "AAPL", seed=1)
    bad = {**good, "gap": 50.0}  # gap is an equities feature only
    universal = OnnxModel(registry_dir / "models/universal_v1.onnx", model_id="u")
    u_row = [good[n] for n in config.models["universal_v1"].features]
    assert router.predict("AAPL", bad) == universal.predict(u_row)[0]
    assert router.fallback_counts[("equities_v1", "contract_violation")] == 1
    frame = pd.DataFrame([{"symbol": "AAPL", **good}, {"symbol": "AAPL", **bad}])
    out = router.predict_frame(frame, with_models=True)
    assert isinstance(out, pd.DataFrame)
    assert list(out["model_id"]) == ["equities_v1", "universal_v1"]
    assert out["prediction"].iloc[1] == universal.predict(u_row)[0]

    strict = AssetSpecificModelRouter(
        config, asset_specific=True, strict=True, contracts=lambda mid: _bound_check(1.0)
    )
    with pytest.raises(ContractViolation, match="AAPL"):
        strict.predict("AAPL", bad)


def test_universal_contract_violation_gives_no_signal(registry_dir: Path) -> None:
    config = load_config(registry_dir / "assets.yaml")
    router = AssetSpecificModelRouter(
        config, asset_specific=False, contracts=lambda mid: _bound_check(1.0)
    )
    good = _features(router, "AAPL", seed=2)
    bad = {**good, "rsi_14": 500.0}
    assert np.isnan(router.predict("AAPL", bad))
    assert np.isfinite(router.predict("AAPL", good))
    frame = pd.DataFrame([{"symbol": "AAPL", **good}, {"symbol": "MSFT", **bad}])
    out = router.predict_frame(frame, with_models=True)
    assert isinstance(out, pd.DataFrame)
    assert np.isfinite(out["prediction"].iloc[0])
    assert np.isnan(out["prediction"].iloc[1])
    assert list(out["model_id"]) == ["universal_v1", "universal_v1"]
    assert router.fallback_counts[("universal_v1", "contract_violation")] == 2
    strict = AssetSpecificModelRouter(
        config, asset_specific=False, strict=True, contracts=lambda mid: _bound_check(1.0)
    )
    with pytest.raises(ContractViolation, match="universal_v1"):
        strict.predict_frame(frame)


def _blocks(
    router: AssetSpecificModelRouter, symbols: list[str], sizes: list[int], bad: float
) -> list[dict[str, np.ndarray]]:
    names = sorted({n for spec in router.config.models.values() for n in spec.features})
    rng = np.random.default_rng(9)
    blocks = []
    for size in sizes:
        block = {n: rng.normal(scale=0.01, size=size) for n in names}
        block["gap"][::3] = bad  # an equities-only feature
        block["rsi_14"][::5] = bad  # every model's
        blocks.append(block)
    return blocks


@pytest.mark.parametrize("chunk", [1 << 16, 4])  # 4: a model call per 4 rows, across blocks
@pytest.mark.parametrize("asset_specific", [False, True])
def test_predict_arrays_equals_predict_frame_on_the_stacked_frame(
    registry_dir: Path, asset_specific: bool, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("modelyard.routing.router.PREDICT_CHUNK", chunk)
    config = load_config(registry_dir / "assets.yaml")

    def router() -> AssetSpecificModelRouter:
        return AssetSpecificModelRouter(
            config,
            asset_specific=asset_specific,
            contracts=lambda mid: _bound_check(1.0 if mid == "equities_v1" else 2.0),
        )

    symbols = ["AAPL", "BTC/USD", "SPY240119C00450000", "MSFT", "ETH/USD", "IBM"]
    sizes = [7, 5, 0, 6, 4, 3]
    blocks = _blocks(router(), symbols, sizes, bad=1.5)
    blocks[-1]["rsi_14"][:] = 5.0  # IBM: every row breaks every contract
    frame = pd.concat(
        [pd.DataFrame({"symbol": s, **b}) for s, b in zip(symbols, blocks, strict=True)],
        ignore_index=True,
    )
    by_frame, by_arrays = router(), router()
    expected = by_frame.predict_frame(frame).to_numpy()
    got = by_arrays.predict_arrays(symbols, blocks)
    assert [len(g) for g in got] == sizes
    assert np.concatenate(got).tobytes() == expected.tobytes()
    assert np.isnan(got[-1]).all()
    assert np.isfinite(got[0][1])
    assert by_arrays.fallback_counts == by_frame.fallback_counts
    assert by_arrays.fallback_counts[("universal_v1", "contract_violation")] > 0
    assert by_arrays.predict_arrays([], []) == []


@pytest.mark.parametrize("chunk", [1 << 16, 1])  # 1: the broken rows in separate chunks
def test_predict_arrays_strict_names_the_symbol_and_its_rows(
    registry_dir: Path, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("modelyard.routing.router.PREDICT_CHUNK", chunk)
    config = load_config(registry_dir / "assets.yaml")
    strict = AssetSpecificModelRouter(
        config, asset_specific=False, strict=True, contracts=lambda mid: _bound_check(1.0)
    )
    blocks = _blocks(strict, ["AAPL", "MSFT"], [2, 4], bad=0.0)
    blocks[1]["rsi_14"][2:] = 9.0
    days = pd.date_range("2024-01-01", periods=4, freq="D", tz="UTC")
    index: list[pd.Index] = [pd.RangeIndex(2), days]
    with pytest.raises(ContractViolation, match="MSFT: 2 feature row") as err:
        strict.predict_arrays(["AAPL", "MSFT"], blocks, index=index)
    assert err.value.first == tuple(days[2:])
    with pytest.raises(ValueError, match="feature blocks"):
        strict.predict_arrays(["AAPL"], blocks)
