"""The comparison tables and the HTML report, on a hand-made Comparison and on a real one.

The hand-made Comparison (:func:`hand_made_comparison`) has known numbers, so the tables can
be checked value by value without running an engine; the real one (``small_comparison``,
session-scoped, in tests/golden/conftest.py's style) proves the report takes what
``compare()`` returns.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelyard.errors import ModelyardError
from modelyard.reports import html as report_html
from modelyard.reports.folder import FILES, write_comparison
from modelyard.reports.tables import (
    DIFF,
    METRICS,
    differences,
    flat_side_by_side,
    format_diff,
    format_value,
    side_by_side,
)
from modelyard.strategies.compare import Comparison

SYMBOLS = ("AAPL", "MSFT", "BTC/USD")
CLASSES = {"AAPL": "equities", "MSFT": "equities", "BTC/USD": "crypto"}
VARIANTS = ("universal", "asset_specific")
MODELS = {
    ("universal", "AAPL"): "universal_v1",
    ("universal", "MSFT"): "universal_v1",
    ("universal", "BTC/USD"): "universal_v1",
    ("asset_specific", "AAPL"): "equities_v1",
    ("asset_specific", "MSFT"): "equities_v1",
    ("asset_specific", "BTC/USD"): "crypto_v1",
}


def _curve(n: int, seed: int, *, freq: str = "h") -> pd.Series:
    rng = np.random.default_rng(seed)
    index = pd.date_range("2018-01-01", periods=n, freq=freq, tz="UTC")
    return pd.Series(100_000.0 * np.exp(np.cumsum(rng.normal(0, 0.002, n))), index=index)


def _row(level: str, name: str, variant: str, k: float, model: str) -> dict[str, object]:
    return {
        "level": level,
        "name": name,
        "variant": variant,
        "total_return": 0.10 * k,
        "sharpe": 0.5 * k,
        "sortino": 0.7 * k,
        "max_drawdown": -0.2 / k,
        "n_trades": int(10 * k),
        "win_rate": 0.5,
        "exposure": 0.4,
        "turnover": 3.0,
        "ic": 0.01 * k,
        "rank_ic": math.nan if name == "MSFT" else 0.02 * k,
        "hit_rate": 0.51,
        "model_id": model,
        "n_bars": 5000,
    }


def hand_made_comparison(n: int = 5000) -> Comparison:
    """Two variants over three symbols; asset-specific is ``k=2`` against universal's ``k=1``
    everywhere except BTC/USD, where it is worse (``k=0.5``)."""
    rows = []
    for variant in VARIANTS:
        for symbol in SYMBOLS:
            k = 1.0 if variant == "universal" else (0.5 if symbol == "BTC/USD" else 2.0)
            rows.append(_row("symbol", symbol, variant, k, MODELS[(variant, symbol)]))
        for cls in ("equities", "crypto"):
            k = 1.0 if variant == "universal" else (0.5 if cls == "crypto" else 2.0)
            model = "universal_v1" if variant == "universal" else f"{cls}_v1"
            rows.append(_row("class", cls, variant, k, model))
        k = 1.0 if variant == "universal" else 1.5
        model = "universal_v1" if variant == "universal" else "mixed"
        rows.append(_row("portfolio", "portfolio", variant, k, model))
    table = pd.DataFrame(rows)
    routes = {
        v: [
            {
                "symbol": s,
                "canonical": s,
                "asset_class": CLASSES[s],
                "model_id": MODELS[(v, s)],
                "model_sha256": f"{i:02d}" * 32,
                "reason": "flag_off" if v == "universal" else "asset_specific",
                "detail": "",
            }
            for i, s in enumerate(SYMBOLS)
        ]
        for v in VARIANTS
    }
    return Comparison(
        variants=VARIANTS,
        symbols=SYMBOLS,
        asset_classes=dict(CLASSES),
        table=table,
        equity={v: _curve(n, i) for i, v in enumerate(VARIANTS)},
        symbol_equity={(v, s): _curve(n, 10 + i) for i, (v, s) in enumerate(MODELS)},
        class_equity={
            (v, c): _curve(n, 20 + 2 * i + j)
            for i, v in enumerate(VARIANTS)
            for j, c in enumerate(("equities", "crypto"))
        },
        routes=routes,  # type: ignore[arg-type]
        predictions_sha256={"universal": "a" * 64, "asset_specific": "b" * 64},
        results={},
        config={"run": {"timeframe": "1h", "cash": 100_000.0}},
    )


@pytest.fixture(scope="module")
def made() -> Comparison:
    return hand_made_comparison()


# --- tables ---------------------------------------------------------------------------------
def test_side_by_side_puts_variants_next_to_each_other_with_the_difference(
    made: Comparison,
) -> None:
    wide = side_by_side(made.table, made.variants)
    assert wide.index.to_list() == [
        ("symbol", "AAPL"),
        ("symbol", "MSFT"),
        ("symbol", "BTC/USD"),
        ("class", "equities"),
        ("class", "crypto"),
        ("portfolio", "portfolio"),
    ]
    aapl = wide.loc[("symbol", "AAPL")]
    assert aapl[("total_return", "universal")] == pytest.approx(0.10)
    assert aapl[("total_return", "asset_specific")] == pytest.approx(0.20)
    assert aapl[("total_return", DIFF)] == pytest.approx(0.10)
    assert aapl[("model_id", "universal")] == "universal_v1"
    assert aapl[("model_id", "asset_specific")] == "equities_v1"
    assert wide.loc[("symbol", "BTC/USD"), ("sharpe", DIFF)] == pytest.approx(-0.25)
    assert math.isnan(wide.loc[("symbol", "MSFT"), ("rank_ic", DIFF)])


def test_differences_has_one_column_per_metric(made: Comparison) -> None:
    diff = differences(made.table)
    assert list(diff.columns) == list(METRICS)
    assert diff.loc[("portfolio", "portfolio"), "n_trades"] == pytest.approx(5.0)


def test_flat_side_by_side_is_the_csv_layout(made: Comparison) -> None:
    flat = flat_side_by_side(made.table, made.variants, made.asset_classes)
    assert list(flat.columns[:5]) == [
        "level",
        "name",
        "asset_class",
        "model_id.universal",
        "model_id.asset_specific",
    ]
    assert "total_return.diff" in flat.columns
    assert flat["asset_class"].tolist() == [
        "equities",
        "equities",
        "crypto",
        "equities",
        "crypto",
        "",
    ]


@pytest.mark.parametrize(
    ("metric", "value", "text", "diff_text"),
    [
        ("total_return", 0.1234, "12.34%", "+12.34 pp"),
        ("max_drawdown", -0.05, "-5.00%", "-5.00 pp"),
        ("sharpe", 1.234, "1.23", "+1.23"),
        ("ic", 0.01234, "0.0123", "+0.0123"),
        ("n_trades", 12, "12", "+12"),
        ("ic", math.nan, "-", "-"),
        ("ic", None, "-", "-"),
    ],
)
def test_format(metric: str, value: object, text: str, diff_text: str) -> None:
    assert format_value(metric, value) == text
    assert format_diff(metric, value) == diff_text


# --- the report -----------------------------------------------------------------------------
def test_downsample_keeps_the_ends_the_extremes_and_caps_the_points() -> None:
    curve = _curve(10_001, 0)
    thin = report_html.downsample(curve, 2000)
    assert 1900 <= len(thin) <= 2000
    assert thin.index.is_monotonic_increasing
    assert thin.index[0] == curve.index[0]
    assert thin.index[-1] == curve.index[-1]
    assert thin.min() == curve.min()
    assert thin.max() == curve.max()
    drawdown = curve / curve.cummax() - 1
    assert (thin / thin.cummax() - 1).min() == pytest.approx(drawdown.min(), rel=1e-12)
    assert report_html.downsample(curve.iloc[:50], 2000).equals(curve.iloc[:50])


def _scripts_from_network(text: str) -> list[str]:
    return re.findall(r"<script[^>]*\bsrc\s*=\s*['\"]?(?:https?:)?//", text, flags=re.I)


def test_report_is_self_contained_and_names_every_symbol(made: Comparison, tmp_path: Path) -> None:
    path = report_html.write_report(made, tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert '<script src="http' not in text
    assert _scripts_from_network(text) == []
    assert not re.search(r"<link[^>]+href=['\"]?https?:", text)
    assert text.count("Plotly.newPlot") == len(report_html.figures(made))
    # plotly.js is inline exactly once
    assert text.count("plotly.js v") <= 2
    for symbol in SYMBOLS:
        assert symbol in text
    for model in ("universal_v1", "equities_v1", "crypto_v1"):
        assert model in text
    assert "00" * 6 in text  # sha256 prefix of AAPL's model in the route table
    assert "b" * 64 in text  # prediction hash in the run details
    assert len(text.encode()) < 6_000_000


def test_each_trace_has_at_most_max_points(made: Comparison) -> None:
    for name, fig in report_html.figures(made).items():
        for trace in fig.data:
            x = trace.x
            if x is not None:
                assert len(x) <= report_html.MAX_POINTS, name


def test_difference_bars_are_green_where_asset_specific_is_better(made: Comparison) -> None:
    fig = report_html.difference_figure(made)
    total_return = fig.data[0]
    assert list(total_return.x) == ["equities", "crypto", "portfolio"]
    assert list(total_return.y) == pytest.approx([10.0, -5.0, 5.0])
    good, bad = "#2e7d32", "#c62828"
    assert list(total_return.marker.color) == [good, bad, good]


# --- the output folder ----------------------------------------------------------------------
def test_write_comparison_writes_three_files_at_once(made: Comparison, tmp_path: Path) -> None:
    out = write_comparison(made, tmp_path / "cmp")
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert [p.name for p in tmp_path.iterdir()] == ["cmp"]  # no temp folder left behind
    doc = json.loads((out / "comparison.json").read_text())  # strict JSON: NaN became null
    msft = [r for r in doc["table"] if r["name"] == "MSFT"]
    assert [r["rank_ic"] for r in msft] == [None, None]
    assert doc["predictions_sha256"] == made.predictions_sha256
    assert doc["routes"]["asset_specific"][2]["model_id"] == "crypto_v1"
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((out / "report.html").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask


def test_write_comparison_never_clobbers_a_foreign_folder(made: Comparison, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(ModelyardError, match=r"thesis\.tex"):
        write_comparison(made, out, overwrite=True)
    with pytest.raises(ModelyardError, match="not empty"):
        write_comparison(made, out)
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]
