"""Every model through train → export → parity → load through the router → predict."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from modelyard.config import load_config
from modelyard.errors import ModelLoadError, ParityError
from modelyard.feeds import load_bars
from modelyard.models.cards import card_path, read_card
from modelyard.models.dataset import build_dataset
from modelyard.models.export import to_onnx_bytes
from modelyard.models.features import compute, spec_for
from modelyard.models.onnx_model import OnnxModel
from modelyard.models.parity import check_parity
from modelyard.models.training import fit_pipeline, train_model
from modelyard.models.walkforward import walk_forward_folds
from modelyard.routing import AssetSpecificModelRouter, ModelRegistry

SMALL = {
    "universal": ["AAPL", "BTC/USD"],
    "crypto": ["BTC/USD", "ETH/USD"],
    "equities": ["AAPL", "MSFT"],
}
EXPECTED_ID = {"universal": "universal_v1", "crypto": "crypto_v1", "equities": "equities_v1"}


@pytest.fixture
def workdir(tmp_path: Path, base_config_dict: dict[str, Any]) -> Path:
    """A registry copy whose model paths point into ``tmp_path/models`` (empty)."""
    raw = yaml.safe_load(yaml.safe_dump(base_config_dict))
    for model_id, spec in raw["models"].items():
        spec["path"] = f"models/{model_id}.onnx"
        spec["contract"] = str(Path("config/contracts").resolve() / Path(spec["contract"]).name)
    (tmp_path / "assets.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path


@pytest.mark.parametrize("which", ["universal", "crypto", "equities"])
def test_train_export_parity_route_predict(workdir: Path, which: str) -> None:
    config = load_config(workdir / "assets.yaml")
    bars = {
        s: load_bars(s, "1d", start="2009-01-01" if s in ("AAPL", "MSFT") else "2016-01-01")
        for s in SMALL[which]
    }
    result = train_model(config, which, bars=bars, alphas=(0.1, 10.0, 1000.0))
    model_id = EXPECTED_ID[which]
    assert result.onnx_path == workdir / "models" / f"{model_id}.onnx"
    card = read_card(result.onnx_path)
    assert card is not None
    assert card.id == model_id
    assert card.sha256 == OnnxModel(result.onnx_path, model_id=model_id).sha256
    assert card.parity_max_abs_diff <= 1e-5 * 1e-3  # far inside the gate on double precision
    assert card.penalty["alpha"] in (0.1, 10.0, 1000.0)
    assert len(card.folds) == 5
    assert card.overall.n == sum(f.n for f in card.folds)
    # route and predict through the router, against the card's own pipeline refit
    router = AssetSpecificModelRouter(config, asset_specific=True)
    symbol = SMALL[which][-1]
    decision = router.route(symbol)
    if which != "universal":
        assert (decision.model_id, decision.reason) == (model_id, "asset_specific")
    spec = config.models[model_id]
    features = compute(bars[symbol], spec_for(spec.spec)).dropna()
    dataset = build_dataset(bars, spec.spec, spec.horizon)
    pipeline = fit_pipeline(dataset.x, dataset.y, card.penalty["alpha"])
    row = features.iloc[-1]
    got = OnnxModel(result.onnx_path, model_id=model_id).predict(row.to_numpy())[0]
    assert got == pytest.approx(pipeline.predict(row.to_numpy()[None, :])[0], abs=1e-12)


def test_training_twice_gives_identical_bytes(workdir: Path, tmp_path: Path) -> None:
    config = load_config(workdir / "assets.yaml")
    bars = {s: load_bars(s, "1d", start="2016-01-01") for s in SMALL["crypto"]}
    a = train_model(config, "crypto", bars=bars, out=tmp_path / "a.onnx", alphas=(1.0, 100.0))
    b = train_model(config, "crypto", bars=bars, out=tmp_path / "b.onnx", alphas=(1.0, 100.0))
    assert a.onnx_path.read_bytes() == b.onnx_path.read_bytes()
    assert a.card.sha256 == b.card.sha256


def test_purge_no_training_target_overlaps_validation() -> None:
    bars = {s: load_bars(s, "1d", start="2010-01-01") for s in ["AAPL", "BTC/USD"]}
    for horizon in (1, 5):
        dataset = build_dataset(bars, "universal", horizon)
        folds = list(walk_forward_folds(dataset, 5))
        assert len(folds) == 5
        for fold in folds:
            first_validation = dataset.timestamps[fold.validate].min()
            assert dataset.target_end[fold.train].max() < first_validation
            assert dataset.timestamps[fold.train].max() < first_validation
            # the purge is at least `horizon` bars of the training symbol's own calendar
            assert fold.train.size > 0


def test_parity_gate_refuses_a_mismatched_export(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0])
    good = fit_pipeline(x, y, 1.0)
    other = fit_pipeline(x, -y, 1.0)
    onnx_bytes = to_onnx_bytes(other, ["a", "b", "c", "d"], model_id="m")
    with pytest.raises(ParityError, match="differ by"):
        check_parity(good, onnx_bytes, x, model_id="m")
    assert check_parity(other, onnx_bytes, x, model_id="m") < 1e-12


@pytest.fixture
def trained(workdir: Path) -> tuple[Path, Path]:
    config = load_config(workdir / "assets.yaml")
    bars = {s: load_bars(s, "1d", start="2016-01-01") for s in SMALL["crypto"]}
    result = train_model(config, "crypto", bars=bars, alphas=(1.0,))
    return workdir, result.onnx_path


def test_tampered_onnx_is_refused_naming_both_hashes(trained: tuple[Path, Path]) -> None:
    workdir, path = trained
    card = read_card(path)
    assert card is not None
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    new_sha = hashlib.sha256(bytes(data)).hexdigest()
    registry = ModelRegistry(load_config(workdir / "assets.yaml"))
    with pytest.raises(ModelLoadError) as info:
        registry.get("crypto_v1")
    assert card.sha256 in str(info.value)
    assert new_sha in str(info.value)


def test_corrupt_card_is_a_clear_error(trained: tuple[Path, Path]) -> None:
    workdir, path = trained
    card_path(path).write_text("{not json")
    registry = ModelRegistry(load_config(workdir / "assets.yaml"))
    with pytest.raises(ModelLoadError, match=r"crypto_v1\.card\.json is corrupt"):
        registry.get("crypto_v1")
    card_path(path).write_text(json.dumps({"id": "crypto_v1"}))
    with pytest.raises(ModelLoadError, match="is corrupt"):
        ModelRegistry(load_config(workdir / "assets.yaml")).get("crypto_v1")


def test_wrong_input_width_is_a_clear_error(trained: tuple[Path, Path]) -> None:
    workdir, path = trained
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    path.write_bytes(to_onnx_bytes(fit_pipeline(x, x[:, 0], 1.0), ["a", "b", "c"], model_id="x"))
    card_path(path).unlink()
    with pytest.raises(ModelLoadError, match="takes 3 features but the registry lists 16"):
        ModelRegistry(load_config(workdir / "assets.yaml")).get("crypto_v1")


@pytest.mark.slow
@pytest.mark.parametrize("which", ["universal", "crypto", "equities"])
def test_shipped_models_retrain_to_the_same_sha256(which: str, tmp_path: Path) -> None:
    config = load_config()
    model_id = EXPECTED_ID[which]
    shipped = config.models[model_id].path
    card = read_card(shipped)
    assert card is not None, f"{shipped} has no card: run `modelyard train --model {which}`"
    result = train_model(config, which, out=tmp_path / shipped.name)
    assert result.card.sha256 == card.sha256
    assert result.onnx_path.read_bytes() == shipped.read_bytes()
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_eval_cli_json_compares_on_the_same_rows(capsys: pytest.CaptureFixture[str]) -> None:
    from modelyard.cli import main

    assert main(["eval", "crypto", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["asset_class"] == "crypto"
    assert row["universal"]["model_id"] == "universal_v1"
    assert row["specific"]["model_id"] == "crypto_v1"
    assert row["universal"]["n"] == row["specific"]["n"] > 1000
    assert row["ic_diff"] == pytest.approx(row["specific"]["ic"] - row["universal"]["ic"])
    assert row["ci_low"] <= row["ci_high"]


def test_train_cli_unknown_model_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from modelyard.cli import main

    assert main(["train", "--model", "optionz"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unknown model 'optionz'" in err
