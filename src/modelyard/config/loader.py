"""Load ``assets.yaml`` into :class:`AssetsConfig`, with errors that name the file and key."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from modelyard._paths import default_config_path
from modelyard._yaml import safe_load
from modelyard.config.schema import (
    ASSET_CLASSES,
    AssetClassConfig,
    AssetsConfig,
    CostConfig,
    ModelConfig,
    PolicyConfig,
    RoutingConfig,
)
from modelyard.errors import ConfigError

__all__ = ["load_config", "parse_config"]

_KNOWN_KEYS: tuple[str, ...] = tuple(
    sorted(
        {
            name
            for model in (
                AssetsConfig,
                AssetClassConfig,
                ModelConfig,
                RoutingConfig,
                PolicyConfig,
                CostConfig,
            )
            for name in model.model_fields
        }
        | set(ASSET_CLASSES)
    )
)


def load_config(path: str | Path | None = None) -> AssetsConfig:
    """Read and validate the registry at ``path`` (default: ``config/assets.yaml``)."""
    file = Path(path) if path is not None else default_config_path()
    if not file.is_file():
        raise ConfigError(
            "file not found; pass --config PATH or create config/assets.yaml",
            path=str(file),
        )
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc}", path=str(file)) from exc
    try:
        raw = safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"YAML does not parse{where}: {problem}", path=str(file)) from exc
    return parse_config(raw, source=file.resolve())


def parse_config(raw: Any, *, source: Path | None = None) -> AssetsConfig:
    """Validate an already-parsed mapping. Relative paths resolve against ``source``'s folder."""
    where = str(source) if source is not None else "<config>"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"the top level must be a mapping, got {type(raw).__name__}", path=where)
    try:
        config = AssetsConfig.model_validate({**raw, "source": source})
    except ValidationError as exc:
        raise _config_error(exc, where) from exc
    base = source.parent if source is not None else Path.cwd()
    config = _resolve_paths(config, base)
    _check_consistency(config, where)
    return config


def _config_error(exc: ValidationError, where: str) -> ConfigError:
    errors = exc.errors()
    # An unknown key explains a "missing" one (a typo), so report it first.
    first = min(errors, key=lambda e: e["type"] != "extra_forbidden")
    key = ".".join(str(part) for part in first["loc"] if part != "[key]")
    kind = first["type"]
    if kind == "extra_forbidden":
        name = str(first["loc"][-1])
        close = difflib.get_close_matches(name, _KNOWN_KEYS, n=1)
        hint = f" — did you mean '{close[0]}'?" if close else ""
        message = f"unknown key '{name}'{hint}"
    elif kind == "literal_error" and first["loc"] and first["loc"][0] == "asset_classes":
        name = str(first["input"])
        close = difflib.get_close_matches(name, ASSET_CLASSES, n=1)
        hint = f" — did you mean '{close[0]}'?" if close else ""
        message = f"unknown asset class '{name}'{hint}; use one of {', '.join(ASSET_CLASSES)}"
    elif kind == "missing":
        message = "required key is missing"
    else:
        message = str(first["msg"])
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
    more = len(errors) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return ConfigError(message, path=where, key=key)


def _resolve(path: Path | None, base: Path) -> Path | None:
    if path is None or path.is_absolute():
        return path
    return (base / path).resolve()


def _resolve_paths(config: AssetsConfig, base: Path) -> AssetsConfig:
    models = {
        model_id: model.model_copy(
            update={"path": _resolve(model.path, base), "contract": _resolve(model.contract, base)}
        )
        for model_id, model in config.models.items()
    }
    return config.model_copy(update={"models": models})


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" — did you mean '{close[0]}'?" if close else ""


def _check_consistency(config: AssetsConfig, where: str) -> None:
    if config.universal not in config.models:
        raise ConfigError(
            f"universal model '{config.universal}' is not defined under 'models'"
            + _suggest(config.universal, config.models),
            path=where,
            key="universal",
        )
    if config.default_class not in config.asset_classes:
        raise ConfigError(
            f"default class '{config.default_class}' has no entry under 'asset_classes'",
            path=where,
            key="default_class",
        )
    owner: dict[str, str] = {}
    for name, cls in config.asset_classes.items():
        if cls.model is None and not cls.fallback:
            raise ConfigError(
                "the class has no model and fallback is off, so no model can serve it; "
                "name a model or set 'fallback: true'",
                path=where,
                key=f"asset_classes.{name}.model",
            )
        if cls.model is not None and cls.model not in config.models:
            raise ConfigError(
                f"model '{cls.model}' is used but not defined under 'models'"
                + _suggest(cls.model, config.models),
                path=where,
                key=f"asset_classes.{name}.model",
            )
        for index, symbol in enumerate(cls.symbols):
            key = _symbol_key(symbol)
            if key in owner and owner[key] != name:
                raise ConfigError(
                    f"symbol '{symbol}' is listed under both '{owner[key]}' and '{name}'; "
                    "keep it in one class",
                    path=where,
                    key=f"asset_classes.{name}.symbols[{index}]",
                )
            owner[key] = name


def _symbol_key(symbol: str) -> str:
    """The separator-free upper-case form used to compare symbols written differently."""
    return "".join(ch for ch in symbol.upper() if ch.isalnum())


def config_summary(config: AssetsConfig) -> dict[str, Any]:
    """A JSON-friendly dump of the resolved config (paths as strings)."""
    return _jsonable(config)


def _jsonable(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")
