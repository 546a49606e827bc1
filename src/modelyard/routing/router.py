"""The model router: symbol → asset class → model (flag, fallback) → prediction + decision.

Rules (see DESIGN.md):

* ``FLAG_ASSET_SPECIFIC_MODELS`` (or the ``asset_specific`` argument) off: every symbol gets
  the universal model, reason ``flag_off``.
* On: the class's model serves when its file exists, loads, and declares the registry's
  feature list (reason ``asset_specific``). Otherwise the universal model serves and the
  reason says why: ``missing``, ``load_error``, ``feature_mismatch``. A feature row that
  breaks the model's data contract is served by the universal model with
  ``contract_violation``; a row that breaks the universal model's own contract gets NaN (no
  signal: the policy goes flat), logged and counted the same way. A class that names no
  model is served by the universal model by design (``no_model``).
* Each fallback is logged once per (symbol, reason) and counted per (model, reason).
* ``strict`` raises :class:`RoutingError` instead of falling back.
* If the universal model cannot load, that is a :class:`ModelLoadError`, never a zero.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from modelyard.config.flags import asset_specific_enabled
from modelyard.config.schema import AssetsConfig
from modelyard.errors import (
    ContractViolation,
    DataError,
    FeatureMismatchError,
    ModelLoadError,
    RoutingError,
)
from modelyard.models.onnx_model import OnnxModel
from modelyard.routing.classifier import AssetClassifier, Classification
from modelyard.routing.contract_checks import ContractCheck, contract_check
from modelyard.routing.decision import Reason, RouteDecision
from modelyard.routing.registry import ModelRegistry

__all__ = ["AssetSpecificModelRouter", "ContractCheck"]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
PREDICT_CHUNK = 1 << 16  # rows per model call in predict_arrays (a few MB of features)


@dataclass(frozen=True, slots=True)
class _Served:
    decision: RouteDecision
    model: OnnxModel
    names: tuple[str, ...]
    check: ContractCheck | None


ContractFactory = Callable[[str], ContractCheck | None]


class AssetSpecificModelRouter:
    """Route symbols to models and predict through them; see the module docstring."""

    def __init__(
        self,
        config: AssetsConfig,
        *,
        registry: ModelRegistry | None = None,
        asset_specific: bool | None = None,
        strict: bool | None = None,
        contracts: bool | ContractFactory = True,
    ) -> None:
        self.config = config
        self.asset_specific = asset_specific_enabled(config, asset_specific)
        self.strict = config.routing.strict if strict is None else strict
        self.classifier = AssetClassifier(config)
        self.registry = registry if registry is not None else ModelRegistry(config)
        self.fallback_counts: Counter[tuple[str, str]] = Counter()
        self._decisions: dict[str, RouteDecision] = {}
        self._served: dict[str, _Served] = {}
        self._logged: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._checks: dict[str, ContractCheck | None] = {}
        self._plans: dict[tuple[object, ...], list[tuple[str, npt.NDArray[np.intp] | None]]] = {}
        if contracts is True:
            self._contract_factory: ContractFactory | None = lambda mid: contract_check(
                self.registry.spec(mid)
            )
        elif contracts is False:
            self._contract_factory = None
        else:
            self._contract_factory = contracts

    # --- decisions ------------------------------------------------------------------
    @property
    def universal_id(self) -> str:
        return self.config.universal

    def route(self, symbol: str) -> RouteDecision:
        """Which model serves ``symbol``, and why. Loads the class model if needed."""
        decision = self._decisions.get(symbol)
        if decision is not None:
            return decision
        with self._lock:
            decision = self._decisions.get(symbol)
            if decision is None:
                decision = self._decide(self.classifier.classify(symbol))
                self._decisions[symbol] = decision
        return decision

    def route_many(self, symbols: Sequence[str]) -> list[RouteDecision]:
        return [self.route(symbol) for symbol in symbols]

    def decisions(self) -> list[RouteDecision]:
        """Every decision made so far, in the order first asked."""
        return list(self._decisions.values())

    def _decide(self, c: Classification) -> RouteDecision:
        universal = self.universal_id
        if not self.asset_specific:
            return self._decision(c, universal, "flag_off")
        model_id = self.config.class_config(c.asset_class).model
        if model_id is None:
            return self._decision(c, universal, "no_model")
        if model_id == universal:
            return self._decision(c, universal, "asset_specific")
        if not self.registry.exists(model_id):
            return self._fallback(
                c, model_id, "missing", f"file {self.registry.path(model_id)} does not exist"
            )
        try:
            self.registry.get(model_id)
        except FeatureMismatchError as exc:
            return self._fallback(c, model_id, "feature_mismatch", str(exc))
        except ModelLoadError as exc:
            return self._fallback(c, model_id, "load_error", str(exc))
        return self._decision(c, model_id, "asset_specific")

    def _decision(
        self, c: Classification, model_id: str, reason: Reason, detail: str = ""
    ) -> RouteDecision:
        return RouteDecision(
            symbol=c.symbol,
            canonical=c.canonical,
            asset_class=c.asset_class,
            model_id=model_id,
            model_sha256=self.registry.file_sha256(model_id),
            reason=reason,
            detail=detail,
        )

    def _fallback(
        self, c: Classification, model_id: str, reason: Reason, detail: str
    ) -> RouteDecision:
        if self.strict:
            raise RoutingError(
                f"{c.symbol} ({c.asset_class}): model '{model_id}' is unusable ({reason}): "
                f"{detail}; strict mode does not fall back to '{self.universal_id}'"
            )
        self._count(c.symbol, model_id, reason, detail)
        return self._decision(c, self.universal_id, reason, detail)

    def _count(self, symbol: str, model_id: str, reason: str, detail: str) -> None:
        self.fallback_counts[(model_id, reason)] += 1
        key = (symbol, reason)
        if key not in self._logged:
            self._logged.add(key)
            log.warning(
                "%s: falling back from %s to %s (%s): %s",
                symbol,
                model_id,
                self.universal_id,
                reason,
                detail,
            )

    # --- models and contracts -------------------------------------------------------
    def model(self, model_id: str) -> OnnxModel:
        """The loaded model; for the universal model a failure is an error, not a fallback."""
        try:
            return self.registry.get(model_id)
        except ModelLoadError as exc:
            if model_id == self.universal_id:
                raise ModelLoadError(
                    f"the universal model cannot serve, so nothing can: {exc}"
                ) from exc
            raise

    def _check(self, model_id: str) -> ContractCheck | None:
        if model_id not in self._checks:
            factory = self._contract_factory
            self._checks[model_id] = factory(model_id) if factory is not None else None
        return self._checks[model_id]

    def _serve(self, symbol: str) -> _Served:
        served = self._served.get(symbol)
        if served is None:
            decision = self.route(symbol)
            served = _Served(
                decision,
                self.model(decision.model_id),
                self.registry.spec(decision.model_id).features,
                self._check(decision.model_id),
            )
            self._served[symbol] = served
        return served

    # --- prediction -----------------------------------------------------------------
    def predict(self, symbol: str, features: Mapping[str, float] | npt.ArrayLike) -> float:
        """Predict one row for ``symbol``.

        ``features`` is a mapping of feature name → value (it may hold more names than the
        model needs, e.g. the universal model's too, which a contract fallback uses) or a
        1-D array in the serving model's feature order.
        """
        served = self._serve(symbol)
        model = served.model
        if isinstance(features, Mapping):
            row = np.array([features[name] for name in served.names], dtype=model.dtype)
        else:
            row = np.asarray(features, dtype=model.dtype)
        if served.check is not None:
            problem = served.check.row(row)
            if problem is not None:
                return self._predict_after_violation(symbol, served, features, problem)
        return float(model.run_raw(row.reshape(1, -1))[0].item(0))

    def _predict_after_violation(
        self,
        symbol: str,
        served: _Served,
        features: Mapping[str, float] | npt.ArrayLike,
        problem: str,
    ) -> float:
        decision = served.decision
        universal = self.universal_id
        if self.strict:
            raise ContractViolation(
                f"{symbol}: features break the contract of model '{decision.model_id}': {problem}",
                rule=problem,
                count=1,
            )
        self._count(symbol, decision.model_id, "contract_violation", problem)
        if decision.model_id == universal:
            return float("nan")  # nothing to fall back to: no signal, never a made-up number
        names = self.registry.spec(universal).features
        if isinstance(features, Mapping):
            try:
                values = [features[name] for name in names]
            except KeyError as exc:
                raise RoutingError(
                    f"{symbol}: contract violation ({problem}) and no universal feature "
                    f"{exc.args[0]!r} to fall back on; pass the universal features too"
                ) from None
        elif names == served.names:
            values = list(np.asarray(features, dtype=np.float64))
        else:
            raise RoutingError(
                f"{symbol}: contract violation ({problem}); pass a mapping with the "
                "universal model's features to fall back"
            )
        return float(self.model(universal).predict(np.asarray(values))[0])

    def predict_frame(
        self, frame: pd.DataFrame, *, symbol_col: str = "symbol", with_models: bool = False
    ) -> pd.Series | pd.DataFrame:
        """Predict many rows of many symbols: rows are grouped by model, one run per model.

        ``frame`` has a ``symbol_col`` column and a column per feature name of every model
        that may serve (the universal model's too, where a contract fallback may need them).
        Returns a float64 Series aligned to ``frame.index`` (with ``with_models``: a frame of
        ``prediction`` and ``model_id``).
        """
        if symbol_col not in frame.columns:
            raise DataError(f"predict_frame: the frame has no '{symbol_col}' column")
        n = len(frame)
        out = np.empty(n, dtype=np.float64)
        model_of_row = np.empty(n, dtype=object)
        symbols = frame[symbol_col].to_numpy()
        plan = self._plan(symbols)
        fallback_rows: list[npt.NDArray[np.intp]] = []
        for model_id, rows in plan:
            bad = self._predict_rows(frame, model_id, rows, out, model_of_row, symbols)
            if bad is not None:
                fallback_rows.append(bad)
        if fallback_rows:
            rows = np.concatenate(fallback_rows)
            self._predict_rows(frame, self.universal_id, rows, out, model_of_row, symbols)
        series = pd.Series(out, index=frame.index, name="prediction")
        if with_models:
            return pd.DataFrame({"prediction": series, "model_id": model_of_row}, index=frame.index)
        return series

    def _plan(self, symbols: npt.NDArray[Any]) -> list[tuple[str, npt.NDArray[np.intp] | None]]:
        """Rows grouped by serving model (None = every row); memoised per symbol sequence."""
        key = tuple(symbols.tolist())
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        codes, uniques = pd.factorize(symbols)
        served = np.array([self.route(s).model_id for s in uniques], dtype=object)
        order = list(dict.fromkeys(served.tolist()))
        if len(order) == 1:
            plan = [(order[0], None)]
        else:
            per_row = served[codes]
            plan = [(mid, np.flatnonzero(per_row == mid)) for mid in order]
        if len(self._plans) < 64:
            self._plans[key] = plan
        return plan

    def _predict_rows(
        self,
        frame: pd.DataFrame,
        model_id: str,
        rows: npt.NDArray[np.intp] | None,
        out: FloatArray,
        model_of_row: npt.NDArray[Any],
        symbols: npt.NDArray[Any],
    ) -> npt.NDArray[np.intp] | None:
        """Predict ``rows`` (None = all) with ``model_id``; returns rows that broke its contract."""
        model = self.model(model_id)
        names = list(self.registry.spec(model_id).features)
        missing = [name for name in names if name not in frame.columns]
        if missing:
            raise DataError(
                f"predict_frame: model '{model_id}' needs columns {missing} the frame lacks"
            )
        # reindex is about 2x faster than frame[names] on a frame with a string column.
        x = frame.reindex(columns=names).to_numpy(dtype=model.dtype)
        if rows is not None:
            x = x[rows]
        return self._predict_x(
            model_id,
            model,
            x,
            rows,
            len(frame),
            out,
            model_of_row,
            lambda row: str(symbols[row]),
            lambda where: tuple(frame.index[where]),
        )

    def _predict_x(
        self,
        model_id: str,
        model: OnnxModel,
        x: npt.NDArray[Any],
        rows: npt.NDArray[np.intp] | None,
        n: int,
        out: FloatArray,
        model_of_row: npt.NDArray[Any] | None,
        symbol_at: Callable[[int], str],
        labels: Callable[[npt.NDArray[np.intp]], tuple[Any, ...]],
        later: Callable[[], npt.NDArray[np.intp]] | None = None,
    ) -> npt.NDArray[np.intp] | None:
        """Check and run ``x`` (the feature rows ``rows`` of ``n``; None = all) through
        ``model_id``; returns the rows that broke its contract (see ``_predict_rows``).
        ``later``: the broken rows of the chunks after this one (strict mode's error counts
        and names them too)."""
        check = self._check(model_id)
        bad_rows = None
        if check is not None and len(x):
            bad = check.batch(x)
            if bad.any():
                index = np.flatnonzero(bad)
                all_rows = np.arange(n) if rows is None else rows
                first_row = int(all_rows[index[0]])
                symbol = symbol_at(first_row)
                problem = check.row(x[index[0]]) or "contract"
                if self.strict:
                    broken = all_rows[index]
                    if later is not None:
                        broken = np.concatenate([broken, later()])
                    count = len(broken)
                    raise ContractViolation(
                        f"{symbol}: {count} feature row(s) break the contract of model "
                        f"'{model_id}', first at {labels(np.array([first_row]))[0]}: {problem}",
                        rule=problem,
                        count=count,
                        first=labels(broken[:5]),
                    )
                for i in index:
                    sym = symbol_at(int(all_rows[i]))
                    self._count(sym, model_id, "contract_violation", problem)
                bad_rows = all_rows[index]
                if model_id == self.universal_id:
                    # The universal model is the last resort: its broken rows get no signal.
                    out[bad_rows] = np.nan
                    if model_of_row is not None:
                        model_of_row[bad_rows] = model_id
                    bad_rows = None
                keep = ~bad
                x = x[keep]
                rows = all_rows[keep]
        if len(x):
            pred = np.asarray(model.run_raw(x), dtype=np.float64).reshape(-1)
            if rows is None:
                out[:] = pred
                if model_of_row is not None:
                    model_of_row[:] = model_id
            else:
                out[rows] = pred
                if model_of_row is not None:
                    model_of_row[rows] = model_id
        return bad_rows

    def predict_arrays(
        self,
        symbols: Sequence[str],
        features: Sequence[Mapping[str, npt.ArrayLike]],
        *,
        index: Sequence[pd.Index] | None = None,
    ) -> list[FloatArray]:
        """:meth:`predict_frame` on per-symbol feature columns, without stacking a frame.

        ``features[i]`` maps each feature name (of every model that may serve
        ``symbols[i]``, the universal model's too) to a 1-D array of that symbol's rows.
        Gives what ``predict_frame`` gives on the frame that stacks the blocks in order (the
        same per-row contract fallbacks, counts and NaN), as one float64 array per block. Each
        model runs over its symbols' rows in chunks of ``PREDICT_CHUNK`` rows (its batch size
        does not change a row's prediction for the row-wise models modelyard exports; tested
        equal to one batch). ``index`` (one
        per block) labels rows in a strict-mode :class:`ContractViolation`; default: the
        row's position in its block.
        """
        if len(features) != len(symbols):
            raise ValueError(f"{len(symbols)} symbols but {len(features)} feature blocks")
        if index is not None and len(index) != len(symbols):
            raise ValueError(f"{len(symbols)} symbols but {len(index)} indexes")
        names_all = list(symbols)
        sizes = np.zeros(len(names_all), dtype=np.intp)
        for b, block in enumerate(features):
            lengths = {len(np.asarray(v)) for v in block.values()}
            if len(lengths) > 1:
                raise DataError(f"predict_arrays: the columns of {names_all[b]} differ in length")
            sizes[b] = lengths.pop() if lengths else 0
        starts = np.zeros(len(names_all) + 1, dtype=np.intp)
        np.cumsum(sizes, out=starts[1:])
        n = int(starts[-1])
        out = np.empty(n, dtype=np.float64)
        if n == 0:
            return [out[starts[b] : starts[b + 1]] for b in range(len(names_all))]

        def block_of(rows: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
            return np.searchsorted(starts, rows, side="right") - 1

        def symbol_at(row: int) -> str:
            return str(names_all[int(block_of(np.array([row]))[0])])

        def labels(rows: npt.NDArray[np.intp]) -> tuple[Any, ...]:
            blocks = block_of(rows)
            local = rows - starts[blocks]
            if index is None:
                return tuple(int(r) for r in local)
            return tuple(index[b][r] for b, r in zip(blocks, local, strict=True))

        def matrix(model_id: str, rows: npt.NDArray[np.intp]) -> npt.NDArray[Any]:
            """The model's feature matrix of ``rows``, in its dtype."""
            model = self.model(model_id)
            names = list(self.registry.spec(model_id).features)
            blocks = block_of(rows)
            # each block's positions in ``rows``: ascending rows (the usual) make contiguous
            # runs; else (fallback rows of several models) gather them
            runs: list[tuple[int, slice | npt.NDArray[np.intp]]] = []
            if len(blocks) and bool(np.all(rows[1:] > rows[:-1])):
                cut = np.flatnonzero(blocks[1:] != blocks[:-1]) + 1
                firsts = np.r_[0, cut].astype(np.intp)
                runs += [
                    (int(blocks[lo]), slice(int(lo), int(hi)))
                    for lo, hi in zip(firsts, np.r_[cut, len(blocks)], strict=True)
                ]
            else:
                runs += [(int(b), np.flatnonzero(blocks == b)) for b in np.unique(blocks)]
            for b, _ in runs:
                missing = [name for name in names if name not in features[b]]
                if missing:
                    raise DataError(
                        f"predict_arrays: model '{model_id}' needs columns {missing} that "
                        f"{names_all[b]} lacks"
                    )
            x = np.empty((len(rows), len(names)), dtype=model.dtype)
            local = rows - starts[blocks]
            for b, at in runs:
                own = local[at]
                # ascending distinct rows without a gap: a slice of the block's columns
                if isinstance(at, slice) and int(own[-1]) - int(own[0]) + 1 == len(own):
                    part = slice(int(own[0]), int(own[-1]) + 1)
                    for c, name in enumerate(names):
                        x[at, c] = np.asarray(features[b][name])[part]
                    continue
                for c, name in enumerate(names):
                    x[at, c] = np.asarray(features[b][name])[own]
            return x

        # like predict_frame, route only the symbols that have rows
        served = [
            self.route(s).model_id if size else "" for s, size in zip(names_all, sizes, strict=True)
        ]
        order = list(dict.fromkeys(served[b] for b in range(len(names_all)) if sizes[b]))
        plan: list[tuple[str, npt.NDArray[np.intp] | None]]
        if len(order) == 1:
            plan = [(order[0], None)]
        else:
            plan = [
                (
                    mid,
                    np.concatenate(
                        [
                            np.arange(starts[b], starts[b + 1])
                            for b in range(len(names_all))
                            if served[b] == mid
                        ]
                    ),
                )
                for mid in order
            ]

        def run(model_id: str, rows: npt.NDArray[np.intp] | None) -> npt.NDArray[np.intp] | None:
            """``_predict_x`` over ``rows`` (None = all) in chunks of ``PREDICT_CHUNK`` rows:
            a chunk's feature matrix and the model's intermediates stay small and their memory
            is reused, where one matrix of every row cost gigabytes of fresh pages."""
            model = self.model(model_id)
            total = n if rows is None else len(rows)
            chunks = [
                np.arange(lo, min(total, lo + PREDICT_CHUNK), dtype=np.intp)
                if rows is None
                else rows[lo : lo + PREDICT_CHUNK]
                for lo in range(0, total, PREDICT_CHUNK)
            ]
            check = self._check(model_id)

            def later_bad(after: int) -> npt.NDArray[np.intp]:  # strict mode: later chunks'
                found = [np.empty(0, dtype=np.intp)]
                if check is not None:
                    found += [c[check.batch(matrix(model_id, c))] for c in chunks[after:]]
                return np.concatenate(found)

            bad_rows = [
                self._predict_x(
                    model_id, model, matrix(model_id, chunk), chunk, n, out, None,
                    symbol_at, labels, later=functools.partial(later_bad, k + 1),
                )
                for k, chunk in enumerate(chunks)
            ]  # fmt: skip
            found = [b for b in bad_rows if b is not None]
            return np.concatenate(found) if found else None

        fallback_rows: list[npt.NDArray[np.intp]] = []
        for model_id, rows in plan:
            bad = run(model_id, rows)
            if bad is not None:
                fallback_rows.append(bad)
        if fallback_rows:
            run(self.universal_id, np.concatenate(fallback_rows))
        return [out[starts[b] : starts[b + 1]] for b in range(len(names_all))]
