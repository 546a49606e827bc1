"""Golden snapshots of ``compare()``: every variant on every bundled dataset, in both flag states.

``tests/golden/snapshots/<dataset>_<variant>.json`` holds, for one variant: the stats of the
portfolio, of each asset class and of each symbol (the rows of ``Comparison.table``), the
trade and bar counts in them, the sha256 of the float32 predictions and the route table.

Tolerances: floats to a relative :data:`REL` (absolute 1e-12 near zero); counts, model ids,
hashes and routes exactly; NaN matches only NaN (``null`` in the file). A mismatch prints a
table of what moved (old, new, relative change). ``pytest --update-golden`` rewrites the files.

``compare()`` always computes both variants explicitly, so the routing flag
``FLAG_ASSET_SPECIFIC_MODELS`` must not change anything: every case runs with the flag ``0``
and ``1`` against the same snapshot.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from modelyard.config import load_config
from modelyard.reports.folder import jsonable
from modelyard.strategies.compare import VARIANTS, Comparison, compare

SNAPSHOTS = Path(__file__).parent / "snapshots"
REL = 1e-6
ABS = 1e-12
EXACT = frozenset({"n_trades", "n_bars", "model_id"})
FLOATS = (
    "total_return",
    "sharpe",
    "sortino",
    "max_drawdown",
    "win_rate",
    "exposure",
    "turnover",
    "ic",
    "rank_ic",
    "hit_rate",
)
ROUTE_KEYS = ("symbol", "canonical", "asset_class", "model_id", "model_sha256", "reason")

DATASETS: dict[str, dict[str, Any]] = {
    "equities_daily": {
        "symbols": ["AAPL", "MSFT", "IBM", "GOOG"],
        "start": "2005-01-01",
        "end": "2012-12-31",
    },
    "crypto_daily": {"symbols": ["BTC/USD", "ETH/USD"], "start": None, "end": None},
}
# The class models each variant must use, whatever the flag says.
EXPECTED_MODELS = {
    "universal": {"equities": "universal_v1", "crypto": "universal_v1"},
    "asset_specific": {"equities": "equities_v1", "crypto": "crypto_v1"},
}
# Flag "0" first: under --update-golden it writes, flag "1" then compares with what it wrote.
CASES = [
    (dataset, variant, flag) for flag in ("0", "1") for dataset in DATASETS for variant in VARIANTS
]

_RUNS: dict[tuple[str, str], Comparison] = {}


def _run(dataset: str, flag: str, config: Path) -> Comparison:
    """One compare() per (dataset, flag) for the session; the caller has set the flag."""
    key = (dataset, flag)
    if key not in _RUNS:
        spec = DATASETS[dataset]
        _RUNS[key] = compare(
            spec["symbols"], start=spec["start"], end=spec["end"], config=load_config(config)
        )
    return _RUNS[key]


def snapshot(c: Comparison, variant: str, dataset: str) -> dict[str, Any]:
    """The golden content of one variant of a comparison (JSON types only)."""
    rows = c.table[c.table["variant"] == variant]
    stats: dict[str, dict[str, Any]] = {}
    for row in rows.to_dict(orient="records"):
        key = f"{row['level']}:{row['name']}"
        stats[key] = {k: jsonable(row[k]) for k in (*FLOATS, "n_trades", "n_bars", "model_id")}
    routes = [{k: r.get(k) for k in ROUTE_KEYS} for r in c.routes[variant]]
    return {
        "dataset": DATASETS[dataset],
        "variant": variant,
        "predictions_sha256": c.predictions_sha256[variant],
        "routes": jsonable(routes),
        "stats": stats,
    }


def _moved(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any, float]]:
    """``(row.stat, old, new, relative change)`` of every value outside its tolerance."""
    moved: list[tuple[str, Any, Any, float]] = []
    for row in list(dict.fromkeys([*old, *new])):
        a_row, b_row = old.get(row), new.get(row)
        if a_row is None or b_row is None:
            moved.append((row, "present" if a_row else None, "present" if b_row else None, 1.0))
            continue
        for stat in list(dict.fromkeys([*a_row, *b_row])):
            a, b = a_row.get(stat), b_row.get(stat)
            name = f"{row}.{stat}"
            if stat in EXACT:
                if a != b:
                    rel = abs(b - a) / max(abs(a), 1) if _numbers(a, b) else math.inf
                    moved.append((name, a, b, rel))
            elif a is None or b is None:
                if a is not b:
                    moved.append((name, a, b, math.inf))
            elif not math.isclose(a, b, rel_tol=REL, abs_tol=ABS):
                moved.append((name, a, b, abs(b - a) / max(abs(a), 1e-300)))
    return moved


def _numbers(*values: Any) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _table(moved: list[tuple[str, Any, Any, float]]) -> str:
    width = max([len("stat"), *(len(k) for k, *_ in moved)]) + 2
    lines = [f"{'stat':<{width}}{'old':>24}{'new':>24}{'rel change':>12}"]
    lines += [f"{k:<{width}}{a!r:>24}{b!r:>24}{r:>12.3g}" for k, a, b, r in moved]
    return "\n".join(lines)


def _route_changes(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    lines = []
    for a, b in zip(old, new, strict=False):
        changed = {k: (a.get(k), b.get(k)) for k in ROUTE_KEYS if a.get(k) != b.get(k)}
        if changed:
            lines.append(f"  {a.get('symbol')}: {changed}")
    if len(old) != len(new):
        lines.append(f"  {len(old)} routes before, {len(new)} now")
    return lines


def diff_report(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What moved between two snapshots, for a person; empty when nothing did."""
    parts = []
    moved = _moved(old["stats"], new["stats"])
    if moved:
        parts.append(f"stats that moved ({len(moved)}):\n" + _table(moved))
    if old["predictions_sha256"] != new["predictions_sha256"]:
        parts.append(
            "predictions sha256: "
            f"{old['predictions_sha256'][:16]}… -> {new['predictions_sha256'][:16]}…"
        )
    routes = _route_changes(old["routes"], new["routes"])
    if routes:
        parts.append("routes that changed:\n" + "\n".join(routes))
    return "\n".join(parts)


@pytest.mark.parametrize(
    ("dataset", "variant", "flag"), CASES, ids=[f"{d}-{v}-flag{f}" for d, v, f in CASES]
)
def test_golden_compare(
    dataset: str,
    variant: str,
    flag: str,
    golden_config: Path,
    update_golden: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLAG_ASSET_SPECIFIC_MODELS", flag)
    c = _run(dataset, flag, golden_config)
    assert c.variants == VARIANTS  # both, always, whatever the flag
    # The explicit variant decides the model, never the flag.
    served = {(r["asset_class"], r["model_id"]) for r in c.routes[variant]}
    assert served == {(cls, EXPECTED_MODELS[variant][cls]) for cls, _m in served}
    new = snapshot(c, variant, dataset)
    path = SNAPSHOTS / f"{dataset}_{variant}.json"
    if (update_golden and flag == "0") or not path.exists():
        SNAPSHOTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(new, indent=2, allow_nan=False) + "\n")
        if not update_golden:
            pytest.fail(f"{path.name} did not exist; written now, review and commit it")
        return
    old = json.loads(path.read_text())
    report = diff_report(old, new)
    assert not report, (
        f"{path.name} (flag {flag}) moved; rerun with --update-golden if intended\n{report}"
    )


def test_the_moved_table_names_the_stat_and_the_change() -> None:
    """A mismatch reads as a small table, not a JSON dump."""
    old = {"symbol:AAPL": {"sharpe": 1.0, "n_trades": 10, "ic": None, "model_id": "m"}}
    new = {"symbol:AAPL": {"sharpe": 1.1, "n_trades": 10, "ic": 0.5, "model_id": "m"}}
    moved = _moved(old, new)
    assert [(k, a, b) for k, a, b, _r in moved] == [
        ("symbol:AAPL.sharpe", 1.0, 1.1),
        ("symbol:AAPL.ic", None, 0.5),
    ]
    assert moved[0][3] == pytest.approx(0.1)
    text = _table(moved)
    assert text.splitlines()[0].split() == ["stat", "old", "new", "rel", "change"]
    assert "symbol:AAPL.sharpe" in text
    assert _moved(old, old) == []
    within = {"symbol:AAPL": {**old["symbol:AAPL"], "sharpe": 1.0 + 1e-9}}
    assert _moved(old, within) == []
