"""The registry loader: valid files load, every malformed case names the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from modelyard.config import AssetsConfig, asset_specific_enabled, load_config
from modelyard.errors import ConfigError


def _write(tmp_path: Path, raw: Any) -> Path:
    path = tmp_path / "assets.yaml"
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw, sort_keys=False))
    return path


def test_bundled_registry_loads_with_absolute_paths() -> None:
    config = load_config()
    assert isinstance(config, AssetsConfig)
    assert config.default_class == "equities"
    assert config.universal == "universal_v1"
    assert (config.routing.asset_specific, config.routing.strict) == (False, False)
    assert set(config.asset_classes) == {"crypto", "equities", "options"}
    for model in config.models.values():
        assert model.path.is_absolute()
        assert model.path.parent.name == "models"


def test_config_is_frozen() -> None:
    config = load_config()
    with pytest.raises(Exception, match="frozen"):
        config.universal = "x"  # type: ignore[misc]


def test_relative_paths_resolve_against_the_file(
    tmp_path: Path, base_config_dict: dict[str, Any]
) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    config = load_config(_write(sub, base_config_dict))
    assert config.models["crypto_v1"].path == (sub / "../models/crypto_v1.onnx").resolve()


def _mutate(base: dict[str, Any], edit: Any) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(yaml.safe_dump(base))
    edit(raw)
    return raw


@pytest.mark.parametrize(
    ("edit", "key", "fragment"),
    [
        (lambda r: r.update(modles=r.pop("models")), "modles", "did you mean 'models'"),
        (
            lambda r: r["asset_classes"]["crypto"]["patterns"].append("([unclosed"),
            "asset_classes.crypto.patterns",
            "not a valid regular expression",
        ),
        (
            lambda r: r["asset_classes"]["equities"].update(model="equity_v9"),
            "asset_classes.equities.model",
            "'equity_v9' is used but not defined",
        ),
        (
            lambda r: r["asset_classes"]["options"].update(model=None, fallback=False),
            "asset_classes.options.model",
            "no model and fallback is off",
        ),
        (
            lambda r: r["asset_classes"]["equities"]["symbols"].append("BTC-USD"),
            "asset_classes.equities.symbols[8]",
            "listed under both 'crypto' and 'equities'",
        ),
        (lambda r: r.update(universal="universal_v2"), "universal", "not defined"),
        (
            lambda r: r["asset_classes"].update(cryptos=r["asset_classes"].pop("crypto")),
            "asset_classes.cryptos",
            "did you mean 'crypto'",
        ),
        (
            lambda r: r["models"]["crypto_v1"].update(featurs=[]),
            "models.crypto_v1.featurs",
            "did you mean 'features'",
        ),
        (lambda r: r["routing"].update(strict="maybe"), "routing.strict", "boolean"),
    ],
)
def test_bad_config_names_file_and_key(
    tmp_path: Path, base_config_dict: dict[str, Any], edit: Any, key: str, fragment: str
) -> None:
    path = _write(tmp_path, _mutate(base_config_dict, edit))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path.resolve()) in message
    assert info.value.key == key
    assert f"key '{key}'" in message
    assert fragment in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: file not found"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_that_does_not_parse(tmp_path: Path) -> None:
    path = _write(tmp_path, "models: [unclosed\n  universal: x\n")
    with pytest.raises(ConfigError, match=r"assets\.yaml: YAML does not parse at line \d+"):
        load_config(path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(_write(tmp_path, "- a\n- b\n"))


@pytest.mark.parametrize(
    ("env", "expected"), [("1", True), ("0", False), ("true", True), ("off", False)]
)
def test_flag_environment_overrides_config(
    monkeypatch: pytest.MonkeyPatch, env: str, expected: bool
) -> None:
    config = load_config()
    monkeypatch.setenv("FLAG_ASSET_SPECIFIC_MODELS", env)
    assert asset_specific_enabled(config) is expected
    assert asset_specific_enabled(config, override=not expected) is (not expected)


def test_flag_defaults_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLAG_ASSET_SPECIFIC_MODELS", raising=False)
    assert asset_specific_enabled(load_config()) is False


def test_bad_flag_value_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAG_ASSET_SPECIFIC_MODELS", "yes please")
    with pytest.raises(ConfigError, match="FLAG_ASSET_SPECIFIC_MODELS='yes please' must be 0 or 1"):
        asset_specific_enabled(load_config())
