"""Golden statistics (LEAN's regression idea): bundled runs pin every stat.

``pytest --update-golden`` rewrites ``tests/golden/stats/*.json``. Bar and trade counts must
match exactly, other stats to a relative 1e-6; a mismatch prints the stats that moved.
Models: the shipped registry and models, in both routing states.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from modelyard.config import load_config
from modelyard.strategies.backtest import run_backtest
from modelyard.strategies.results import STAT_KEYS

STATS_DIR = Path(__file__).parent / "stats"
EXACT = ("n_bars", "n_trades", "n_orders")
REL = 1e-6

DATASETS: dict[str, dict[str, Any]] = {
    "equities_aapl_msft_2005_2012": {
        "symbols": ["AAPL", "MSFT"],
        "start": "2005-01-01",
        "end": "2012-12-31",
    },
    "crypto_btc_daily": {"symbols": ["BTC/USD"]},
}
# Every bundled run in both routing states: universal, and asset-specific models.
RUNS: dict[str, dict[str, Any]] = {
    f"{name}_{variant}": {**spec, "asset_specific": variant == "specific"}
    for name, spec in DATASETS.items()
    for variant in ("universal", "specific")
}


def _moved(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any, float]]:
    moved = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a is None or b is None:
            moved.append((key, a, b, math.inf))
            continue
        if key in EXACT:
            if a != b:
                moved.append((key, a, b, abs(b - a) / max(abs(a), 1)))
        elif not math.isclose(a, b, rel_tol=REL, abs_tol=1e-12):
            moved.append((key, a, b, abs(b - a) / max(abs(a), 1e-300)))
    return moved


def _table(moved: list[tuple[str, Any, Any, float]]) -> str:
    lines = [f"{'stat':<16}{'old':>24}{'new':>24}{'rel change':>14}"]
    lines += [f"{k:<16}{a!r:>24}{b!r:>24}{r:>14.3g}" for k, a, b, r in moved]
    return "\n".join(lines)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_golden_stats(
    name: str, golden_config: Path, update_golden: bool, no_flag_env: None
) -> None:
    spec = RUNS[name]
    result = run_backtest(
        spec["symbols"],
        start=spec.get("start"),
        end=spec.get("end"),
        asset_specific=spec["asset_specific"],
        config=load_config(golden_config),
    )
    new: dict[str, Any] = {k: result.stats[k] for k in STAT_KEYS}
    new["n_orders"] = len(result.orders)
    path = STATS_DIR / f"{name}.json"
    if update_golden or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(new, indent=2) + "\n")
        if not update_golden:
            pytest.fail(f"{path.name} did not exist; written now, review and commit it")
        return
    old = json.loads(path.read_text())
    moved = _moved(old, new)
    assert not moved, f"{name}: stats moved (rerun with --update-golden if intended)\n" + _table(
        moved
    )
