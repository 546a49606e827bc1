"""Data contracts of feature frames: ``config/contracts/<name>_features.yaml``.

A contract fixes the columns (in order), their dtype, value ranges, the NaN policy
after warm-up, index rules and a minimum row count. :func:`validate` checks a whole
frame and reports every violation; :func:`row_violations` and
:func:`frame_violations` are the fast checks the router runs per prediction.

Rules named in reports and errors: ``missing_column``, ``unexpected_column``,
``column_order``, ``dtype``, ``non_finite`` (NaN or inf after warm-up), ``min``,
``max``, ``index_type``, ``index_monotonic``, ``index_unique``, ``min_rows``.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numba
import numpy as np
import numpy.typing as npt
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelyard._paths import project_root
from modelyard._yaml import safe_load
from modelyard.errors import ConfigError, ContractViolation

__all__ = [
    "ColumnRule",
    "ContractReport",
    "DataContract",
    "IndexRules",
    "Violation",
    "contract_path",
    "frame_violations",
    "load_contract",
    "row_violations",
    "validate",
]

logger = logging.getLogger(__name__)

INDEX = "<index>"
_MAX_FIRST = 5


class ColumnRule(BaseModel):
    """One column: its name and inclusive bounds (``None`` = unbounded)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ColumnRule:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} > max {self.max}")
        return self


class IndexRules(BaseModel):
    """Rules of the frame's index."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    datetime: bool = True
    monotonic_increasing: bool = True
    unique: bool = True


class DataContract(BaseModel):
    """The contract of one feature frame."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    spec: str = Field(min_length=1)
    dtype: Literal["float64"] = "float64"
    warmup: int = Field(ge=0)
    min_rows: int = Field(ge=1)
    nan_policy: Literal["forbid_after_warmup", "allow"] = "forbid_after_warmup"
    allow_extra_columns: bool = False
    index: IndexRules = IndexRules()
    columns: tuple[ColumnRule, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_columns(self) -> DataContract:
        names = [c.name for c in self.columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"repeated columns {dupes}")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        """Required column names, in order."""
        return tuple(c.name for c in self.columns)

    def bounds(self, names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(lo, hi)`` float64 arrays for ``names`` (default: all columns); unbounded is ±max."""
        by_name = {c.name: c for c in self.columns}
        wanted = self.names if names is None else tuple(names)
        unknown = [n for n in wanted if n not in by_name]
        if unknown:
            raise ConfigError(f"contract {self.name!r} has no columns {unknown}", key="columns")
        big = np.finfo(np.float64).max
        lo = np.array([_or(by_name[n].min, -big) for n in wanted], dtype=np.float64)
        hi = np.array([_or(by_name[n].max, big) for n in wanted], dtype=np.float64)
        return lo, hi


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: where, how often, and the first offending index labels."""

    column: str
    rule: str
    count: int
    first: tuple[object, ...]
    detail: str = ""

    def __str__(self) -> str:
        first = ", ".join(str(x) for x in self.first)
        more = f" ({self.detail})" if self.detail else ""
        return f"{self.column}: {self.rule}{more}: {self.count} row(s), first at [{first}]"


@dataclass(frozen=True, slots=True)
class ContractReport:
    """Every violation :func:`validate` found; empty when the frame is valid."""

    contract: str
    rows: int
    violations: tuple[Violation, ...]

    @property
    def ok(self) -> bool:
        """True when nothing is violated."""
        return not self.violations

    def __str__(self) -> str:
        if self.ok:
            return f"contract {self.contract!r}: {self.rows} rows OK"
        lines = [f"contract {self.contract!r}: {len(self.violations)} violation(s)"]
        lines += [f"  {v}" for v in self.violations]
        return "\n".join(lines)


_KNOWN_KEYS = sorted(
    set(DataContract.model_fields) | set(ColumnRule.model_fields) | set(IndexRules.model_fields)
)


def contract_path(name: str) -> Path:
    """``<project root>/config/contracts/<name>_features.yaml``."""
    return project_root() / "config" / "contracts" / f"{name}_features.yaml"


def load_contract(path_or_name: str | Path) -> DataContract:
    """Load a contract from a YAML path, or by bare name (``"crypto"``)."""
    text_arg = str(path_or_name)
    is_name = isinstance(path_or_name, str) and not text_arg.endswith((".yaml", ".yml"))
    is_name = is_name and "/" not in text_arg
    file = contract_path(text_arg) if is_name else Path(path_or_name)
    if not file.is_file():
        raise ConfigError("contract file not found", path=str(file))
    try:
        raw = safe_load(file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read contract: {exc}", path=str(file)) from exc
    if not isinstance(raw, dict):
        raise ConfigError("a contract must be a mapping", path=str(file))
    try:
        return DataContract.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            last = str(err["loc"][-1])
            hint = difflib.get_close_matches(last, _KNOWN_KEYS, n=1)
            msg = f"unknown key {last!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
        raise ConfigError(msg, path=str(file), key=key) from exc


def _first(index: pd.Index, mask: npt.NDArray[np.bool_]) -> tuple[object, ...]:
    pos = np.flatnonzero(mask)[:_MAX_FIRST]
    return tuple(index[int(i)] for i in pos)


def _check_index(frame: pd.DataFrame, contract: DataContract) -> list[Violation]:
    out: list[Violation] = []
    idx = frame.index
    rules = contract.index
    if rules.datetime and not isinstance(idx, pd.DatetimeIndex):
        out.append(Violation(INDEX, "index_type", len(idx), (), type(idx).__name__))
        return out
    if len(idx) < 2:
        return out
    values: Any = idx.asi8 if isinstance(idx, pd.DatetimeIndex) else idx.to_numpy()
    if rules.monotonic_increasing and not idx.is_monotonic_increasing:
        bad = np.zeros(len(idx), dtype=bool)
        bad[1:] = values[1:] < values[:-1]
        out.append(Violation(INDEX, "index_monotonic", int(bad.sum()), _first(idx, bad)))
    if rules.unique and not idx.is_unique:
        bad = np.asarray(idx.duplicated(keep="first"), dtype=bool)
        out.append(Violation(INDEX, "index_unique", int(bad.sum()), _first(idx, bad)))
    return out


def _check_columns(frame: pd.DataFrame, contract: DataContract) -> list[Violation]:
    out: list[Violation] = []
    present = [str(c) for c in frame.columns]
    n = len(frame)
    for col in contract.names:
        if col not in present:
            out.append(Violation(col, "missing_column", n, (), "required column absent"))
    if not contract.allow_extra_columns:
        for col in present:
            if col not in contract.names:
                out.append(Violation(col, "unexpected_column", n, ()))
    ordered = [c for c in present if c in contract.names]
    if not out and ordered != list(contract.names):
        out.append(Violation(INDEX, "column_order", 0, (), f"expected {list(contract.names)}"))
    return out


def _check_values(frame: pd.DataFrame, contract: DataContract) -> list[Violation]:
    out: list[Violation] = []
    idx = frame.index
    after = np.arange(len(frame)) >= contract.warmup
    for rule in contract.columns:
        if rule.name not in frame.columns:
            continue
        series = frame[rule.name]
        if series.dtype != np.float64:
            out.append(Violation(rule.name, "dtype", len(frame), (), f"{series.dtype} != float64"))
            continue
        x = series.to_numpy()
        finite = np.isfinite(x)
        if contract.nan_policy == "forbid_after_warmup":
            bad = ~finite & after
            if bad.any():
                detail = f"NaN/inf after warm-up of {contract.warmup} rows"
                out.append(
                    Violation(rule.name, "non_finite", int(bad.sum()), _first(idx, bad), detail)
                )
        if rule.min is not None:
            bad = finite & (x < rule.min)
            if bad.any():
                detail = f"below min {rule.min:g}"
                out.append(Violation(rule.name, "min", int(bad.sum()), _first(idx, bad), detail))
        if rule.max is not None:
            bad = finite & (x > rule.max)
            if bad.any():
                detail = f"above max {rule.max:g}"
                out.append(Violation(rule.name, "max", int(bad.sum()), _first(idx, bad), detail))
    return out


def validate(
    frame: pd.DataFrame, contract: DataContract, *, raise_on_error: bool = True
) -> ContractReport:
    """Check ``frame`` against ``contract``; raise :class:`ContractViolation` on the first.

    The exception's message lists every violation; its ``column``/``rule``/``count``/
    ``first`` attributes describe the first one.
    """
    violations: list[Violation] = []
    if len(frame) < contract.min_rows:
        violations.append(
            Violation(INDEX, "min_rows", len(frame), (), f"need >= {contract.min_rows}")
        )
    violations += _check_index(frame, contract)
    violations += _check_columns(frame, contract)
    violations += _check_values(frame, contract)
    report = ContractReport(contract.name, len(frame), tuple(violations))
    if violations:
        logger.debug("%s", report)
        if raise_on_error:
            v = violations[0]
            raise ContractViolation(
                str(report), column=v.column, rule=v.rule, count=v.count, first=v.first
            )
    return report


@numba.njit(cache=True)
def _within(row: npt.NDArray[Any], lo: npt.NDArray[Any], hi: npt.NDArray[Any]) -> bool:
    """True when every value is finite and inside [lo, hi]: 0.2 µs against numpy's 1.5 µs."""
    for j in range(row.shape[0]):
        x = row[j]
        if not (x >= lo[j] and x <= hi[j]):  # NaN fails both comparisons
            return False
    return True


def row_violations(
    contract: DataContract, names: Sequence[str]
) -> Callable[[npt.NDArray[np.float64]], str | None]:
    """A fast per-row check: ``check(row) -> None`` if ok, else a short reason.

    ``row`` holds the features ``names`` in order; NaN, inf and out-of-range fail.
    """
    names_t = tuple(names)
    lo, hi = contract.bounds(names_t)
    n = len(names_t)

    def check(row: npt.NDArray[np.float64]) -> str | None:
        if row.shape != (n,):
            return f"expected {n} features, got shape {row.shape}"
        if _within(row, lo, hi):
            return None
        for j in range(n):
            x = float(row[j])
            if x != x or x in (np.inf, -np.inf):
                return f"{names_t[j]} is not finite ({x})"
            if x < lo[j]:
                return f"{names_t[j]} below min {lo[j]:g}"
            if x > hi[j]:
                return f"{names_t[j]} above max {hi[j]:g}"
        return "violation"  # pragma: no cover - unreachable

    return check


def frame_violations(
    contract: DataContract, x: npt.NDArray[np.float64], names: Sequence[str] | None = None
) -> npt.NDArray[np.bool_]:
    """Mask of rows of the 2-D array ``x`` (columns ``names``, default the contract's) that
    hold NaN, inf or an out-of-range value."""
    lo, hi = contract.bounds(names)
    if x.ndim != 2 or x.shape[1] != lo.shape[0]:
        raise ValueError(f"expected shape (n, {lo.shape[0]}), got {x.shape}")
    bad: npt.NDArray[np.bool_] = _rows_outside(np.ascontiguousarray(x), lo, hi)
    return bad


@numba.njit(cache=True, nogil=True)
def _rows_outside(x: Any, lo: Any, hi: Any) -> Any:
    """Per row of ``x``: does some value fall outside ``[lo, hi]`` (NaN does)? One pass."""
    out = np.zeros(x.shape[0], dtype=np.bool_)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            v = x[i, j]
            if not (v >= lo[j] and v <= hi[j]):
                out[i] = True
                break
    return out
