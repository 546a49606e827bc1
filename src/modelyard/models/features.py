"""Feature specs, computed two ways that give the same numbers.

``compute(bars, spec)`` fills a whole frame (research, training, backtests);
``OnlineFeatures(spec).update(bar)`` gives one row per new bar (live). Both run the
same formulas compiled in :mod:`modelyard.models._feature_kernels` and agree to rounding
(well within 1e-9 relative). No feature at bar ``t`` reads anything after ``t``; only
:func:`compute_target` looks ahead.

Formulas (``c o h l v`` = close open high low volume; ``r_t = log(c_t / c_{t-1})``;
means are simple; ``std`` uses ddof=1; "lookback" = bars before ``t`` that are read):

==============  ====================================================  ========
kind            value at bar t                                        lookback
==============  ====================================================  ========
ret k           ``log(c_t / c_{t-k})``                                k
ret_lag k,lag   ``ret k`` at ``t - lag``                              k + lag
vol k           ``std(r over t-k+1..t)``                              k
mom k           ``c_t / mean(c over t-k+1..t) - 1`` (also ma_dist)    k - 1
volm s,L,eps    ``log((mean(v, s) + eps) / (mean(v, L) + eps))``      L - 1
volz k          ``(v_t - mean(v, k)) / std(v, k)``; 0 if the window   k - 1
                is flat (``std <= 1e-12 * |mean|``, e.g. all zero)
range_hl        ``(h_t - l_t) / c_t``                                 0
close_loc       ``(c_t - l_t) / (h_t - l_t)``; 0.5 when ``h_t == l_t``  0
rsi k           ``100 * G / (G + L)``, G and L the sums of the up and  k
                down moves ``c_i - c_{i-1}`` over the last k bars
                (simple-average RSI); 50 when there is no move
hour_sin/cos    ``sin / cos(2*pi*hour / 24)``, hour = UTC hour of t    0
gap             ``log(o_t / c_{t-1})``                                1
==============  ====================================================  ========

``volm_24`` uses ``eps = 1e-9`` (volume units): zero-volume filler bars give a finite
value (0 when both windows are all zero). A naive ``DatetimeIndex`` or timestamp is
read as UTC. Non-positive prices give NaN/inf, which the data contract rejects.

``spec.warmup`` is the largest lookback: the first ``warmup`` rows of ``compute`` are
all NaN and ``OnlineFeatures.update`` returns ``None`` for the first ``warmup`` bars.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from modelyard.errors import ConfigError, DataError
from modelyard.models._feature_kernels import KIND_CODES, N_SERIES, push_kernel, run_kernel

__all__ = [
    "Feature",
    "FeatureSpec",
    "OnlineFeatures",
    "compute",
    "compute_target",
    "forward_log_return",
    "spec_for",
]

logger = logging.getLogger(__name__)

BAR_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
VOLM_EPS = 1e-9

# kind -> (parameter names in kernel order, minimum of the first parameter)
_KIND_PARAMS: dict[str, tuple[tuple[str, ...], int]] = {
    "ret": (("window",), 1),
    "ret_lag": (("window", "lag"), 1),
    "vol": (("window",), 2),
    "mom": (("window",), 1),
    "volm": (("short", "long", "eps"), 1),
    "volz": (("window",), 2),
    "range_hl": ((), 0),
    "close_loc": ((), 0),
    "rsi": (("window",), 1),
    "hour_sin": ((), 0),
    "hour_cos": ((), 0),
    "gap": ((), 0),
}
_ZERO = timedelta(0)


@dataclass(frozen=True, slots=True)
class Feature:
    """One named feature: a ``kind`` of the formulas table and its parameters."""

    name: str
    kind: str
    params: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in _KIND_PARAMS:
            hint = difflib.get_close_matches(self.kind, _KIND_PARAMS, n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(f"unknown feature kind {self.kind!r} for {self.name!r}{extra}")
        wanted, minimum = _KIND_PARAMS[self.kind]
        given = dict(self.params)
        if set(given) != set(wanted) or len(given) != len(self.params):
            raise ConfigError(
                f"feature {self.name!r} ({self.kind}) takes parameters {list(wanted)}, "
                f"got {[k for k, _ in self.params]}"
            )
        ints = [given[p] for p in wanted if p != "eps"]
        if any(x != int(x) or x < 0 for x in ints) or (ints and ints[0] < minimum):
            raise ConfigError(f"feature {self.name!r}: bad parameters {given}")
        # Keep the kernel order whatever order the caller used.
        object.__setattr__(self, "params", tuple((p, float(given[p])) for p in wanted))

    @classmethod
    def of(cls, name: str, kind: str, **params: float) -> Feature:
        """``Feature.of("vol_24", "vol", window=24)``."""
        return cls(name, kind, tuple(params.items()))

    def param(self, key: str) -> float:
        """The value of parameter ``key``."""
        return dict(self.params)[key]

    @property
    def lookback(self) -> int:
        """Bars before ``t`` that this feature reads."""
        p = dict(self.params)
        if self.kind in ("ret", "vol", "rsi"):
            return int(p["window"])
        if self.kind == "ret_lag":
            return int(p["window"] + p["lag"])
        if self.kind in ("mom", "volz"):
            return int(p["window"]) - 1
        if self.kind == "volm":
            return int(max(p["short"], p["long"])) - 1
        return 1 if self.kind == "gap" else 0


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """An ordered, named tuple of features."""

    name: str
    features: tuple[Feature, ...] = field(default=())

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if not names or dupes:
            raise ConfigError(f"spec {self.name!r} needs unique feature names; repeated: {dupes}")

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names, in column order."""
        return tuple(f.name for f in self.features)

    @property
    def warmup(self) -> int:
        """Leading bars whose row is NaN (the largest lookback)."""
        return max(f.lookback for f in self.features)

    def __len__(self) -> int:
        return len(self.features)


def _f(name: str, kind: str, **params: float) -> Feature:
    return Feature.of(name, kind, **params)


CRYPTO = FeatureSpec(
    "crypto",
    (
        _f("ret_1", "ret", window=1),
        _f("ret_3", "ret", window=3),
        _f("ret_6", "ret", window=6),
        _f("ret_12", "ret", window=12),
        _f("ret_24", "ret", window=24),
        _f("ret_1_lag1", "ret_lag", window=1, lag=1),
        _f("vol_24", "vol", window=24),
        _f("vol_72", "vol", window=72),
        _f("mom_72", "mom", window=72),
        _f("volm_24", "volm", short=6, long=24, eps=VOLM_EPS),
        _f("volz_24", "volz", window=24),
        _f("range_hl", "range_hl"),
        _f("close_loc", "close_loc"),
        _f("rsi_14", "rsi", window=14),
        _f("hour_sin", "hour_sin"),
        _f("hour_cos", "hour_cos"),
    ),
)
EQUITIES = FeatureSpec(
    "equities",
    (
        _f("ret_1", "ret", window=1),
        _f("ret_5", "ret", window=5),
        _f("ret_20", "ret", window=20),
        _f("vol_20", "vol", window=20),
        _f("vol_60", "vol", window=60),
        _f("mom_60", "mom", window=60),
        _f("mom_120", "mom", window=120),
        _f("gap", "gap"),
        _f("volz_20", "volz", window=20),
        _f("rsi_14", "rsi", window=14),
        _f("ma_dist_50", "mom", window=50),
        _f("range_hl", "range_hl"),
    ),
)
UNIVERSAL = FeatureSpec(
    "universal",
    (
        _f("ret_1", "ret", window=1),
        _f("ret_5", "ret", window=5),
        _f("ret_20", "ret", window=20),
        _f("vol_20", "vol", window=20),
        _f("mom_60", "mom", window=60),
        _f("volz_20", "volz", window=20),
        _f("rsi_14", "rsi", window=14),
        _f("close_loc", "close_loc"),
    ),
)
_SPECS: dict[str, FeatureSpec] = {s.name: s for s in (CRYPTO, EQUITIES, UNIVERSAL)}


def spec_for(name: str) -> FeatureSpec:
    """The spec called ``name``: ``"crypto"``, ``"equities"`` or ``"universal"``."""
    try:
        return _SPECS[name]
    except (KeyError, TypeError):
        hint = difflib.get_close_matches(str(name), _SPECS, n=1)
        extra = f"; did you mean {hint[0]!r}?" if hint else ""
        raise ConfigError(
            f"unknown feature spec {name!r}{extra} (known: {', '.join(_SPECS)})", key="feature_spec"
        ) from None


@cache
def _kernel_arrays(
    spec: FeatureSpec,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    kinds = np.array([KIND_CODES[f.kind] for f in spec.features], dtype=np.int64)
    params = np.zeros((len(spec.features), 3), dtype=np.float64)
    for j, feat in enumerate(spec.features):
        for i, (_key, value) in enumerate(feat.params):
            params[j, i] = value
    kinds.setflags(write=False)
    params.setflags(write=False)
    return kinds, params


def _utc_hours(index: pd.Index) -> npt.NDArray[np.float64]:
    if not isinstance(index, pd.DatetimeIndex):
        raise DataError(f"bars need a DatetimeIndex, got {type(index).__name__}")
    if index.tz is not None:
        index = index.tz_convert("UTC")
    return np.asarray(index.hour, dtype=np.float64)


def compute(bars: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Every feature of ``spec`` for every bar: same index, columns ``spec.names``, float64."""
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise DataError(f"bars miss columns {missing} (need {list(BAR_COLUMNS)})")
    names = list(spec.names)
    if len(bars) == 0:
        return pd.DataFrame(
            np.empty((0, len(names)), dtype=np.float64), index=bars.index, columns=names
        )
    n = len(bars)
    data = np.empty((N_SERIES, n), dtype=np.float64)
    for i, col in enumerate(BAR_COLUMNS):
        data[i] = bars[col].to_numpy(dtype=np.float64)
    data[N_SERIES - 1] = _utc_hours(bars.index)
    kinds, params = _kernel_arrays(spec)
    # (features, bars) rows: each feature a contiguous column of the frame, which takes the
    # array as its block without a copy
    out = np.empty((len(names), n), dtype=np.float64)
    run_kernel(kinds, params, data, spec.warmup, out.T)
    return pd.DataFrame(out.T, index=bars.index, columns=names, copy=False)


def compute_target(bars: pd.DataFrame, horizon: int) -> pd.Series:
    """Forward LOG return ``log(close[t + horizon] / close[t])``; NaN for the last rows.

    The only function here that looks ahead. Named ``target_<horizon>``.
    """
    if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer) or horizon < 1:
        raise ValueError(f"horizon must be a positive int, got {horizon!r}")
    if "close" not in bars.columns:
        raise DataError("bars miss column 'close'")
    target = forward_log_return(bars["close"].to_numpy(dtype=np.float64), horizon)
    return pd.Series(target, index=bars.index, name=f"target_{horizon}", dtype=np.float64)


def forward_log_return(close: npt.NDArray[np.float64], horizon: int) -> npt.NDArray[np.float64]:
    """:func:`compute_target` of the closes ``close`` (one symbol's, in bar order) as an
    array: ``log(close[t + horizon] / close[t])``, NaN for the last ``horizon`` rows."""
    target = np.full(close.shape, np.nan)
    if len(close) > horizon:
        with np.errstate(divide="ignore", invalid="ignore"):
            target[:-horizon] = np.log(close[horizon:] / close[:-horizon])
    return target


def _field(bar: Any, key: str) -> Any:
    if isinstance(bar, Mapping):
        return bar[key]
    return getattr(bar, key)


def _utc_hour(ts: Any) -> float:
    if not isinstance(ts, datetime):
        raise DataError(f"bar timestamp must be a datetime or pandas.Timestamp, got {ts!r}")
    off = ts.utcoffset()
    if off is None or off == _ZERO:
        return float(ts.hour)
    return float(ts.astimezone(UTC).hour)


class OnlineFeatures:
    """Feature rows one bar at a time, in bounded memory.

    Keeps the last ``warmup + 1`` bars in a fixed ``numpy`` ring buffer and runs the
    per-bar kernel on it (the formulas of :func:`compute`). Timestamps must strictly
    increase.
    """

    __slots__ = ("_bar", "_buf", "_count", "_head", "_kinds", "_last", "_out", "_params", "spec")

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self._kinds, self._params = _kernel_arrays(spec)
        size = spec.warmup + 1
        self._buf = np.full((N_SERIES, 2 * size), np.nan, dtype=np.float64)
        self._bar = np.zeros(N_SERIES, dtype=np.float64)
        self._out = np.full((1, len(spec.features)), np.nan, dtype=np.float64)
        self._head = 0
        self._count = 0
        self._last: datetime | None = None

    @property
    def count(self) -> int:
        """Bars seen so far."""
        return self._count

    @property
    def ready(self) -> bool:
        """True once ``update`` returns rows."""
        return self._count > self.spec.warmup

    def update(self, bar: Any) -> dict[str, float] | None:
        """Add one bar (Mapping or object with ``timestamp open high low close volume``).

        Returns the feature row in spec order, or ``None`` during warm-up.
        """
        try:
            ts = _field(bar, "timestamp")
            values = self._bar
            values[0] = _field(bar, "open")
            values[1] = _field(bar, "high")
            values[2] = _field(bar, "low")
            values[3] = _field(bar, "close")
            values[4] = _field(bar, "volume")
        except (KeyError, AttributeError) as exc:
            raise DataError(f"bar misses field {exc}; need timestamp and {BAR_COLUMNS}") from exc
        except (TypeError, ValueError) as exc:
            raise DataError(f"bar has a non-numeric price or volume: {exc}") from exc
        values[N_SERIES - 1] = _utc_hour(ts)
        if self._last is not None and ts <= self._last:
            raise DataError(f"bar timestamp {ts} does not follow {self._last}")
        self._last = ts
        self._head = push_kernel(
            self._kinds,
            self._params,
            self._buf,
            self._head,
            self._count,
            self.spec.warmup,
            values,
            self._out,
        )
        self._count += 1
        if self._count <= self.spec.warmup:
            return None
        return dict(zip(self.spec.names, self._out[0].tolist(), strict=True))
