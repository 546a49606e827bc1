"""The comparison report: one self-contained HTML file that opens offline.

plotly.js is embedded once, inline (``include_plotlyjs=True`` on the first figure, ``False`` on
the others), and the page loads nothing from the network. Long curves are thinned to at most
:data:`MAX_POINTS` points per trace, keeping each stretch's low and high (:func:`downsample`),
so the default run stays near plotly.js's own size (~4.8 MB) and the charts still show the
true peaks and troughs.

The figure builders (:func:`equity_figure`, :func:`class_figure`, :func:`difference_figure`,
:func:`symbol_difference_figure`, :func:`figures`) are public so that notebooks show the same
pictures as the report.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime
from html import escape
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from modelyard._atomic import write_text_atomic
from modelyard.reports.tables import (
    DIFF,
    HIGHER_IS_BETTER,
    LABELS,
    METRICS,
    format_diff,
    format_value,
    side_by_side,
    variant_label,
)

if TYPE_CHECKING:
    from modelyard.strategies.compare import Comparison

__all__ = [
    "MAX_POINTS",
    "class_figure",
    "difference_figure",
    "downsample",
    "equity_figure",
    "figures",
    "render_html",
    "symbol_difference_figure",
    "write_report",
]

log = logging.getLogger(__name__)

MAX_POINTS = 2000
_COLORS = {"universal": "#4c72b0", "asset_specific": "#dd8452"}
_EXTRA_COLORS = ("#55a868", "#c44e52", "#8172b3", "#937860")
_GOOD, _BAD, _NEUTRAL = "#2e7d32", "#c62828", "#757575"
_FALLBACK_REASONS = frozenset({"missing", "load_error", "feature_mismatch", "contract_violation"})
_LAYOUT: dict[str, Any] = {
    "template": "plotly_white",
    "margin": {"l": 60, "r": 20, "t": 50, "b": 40},
    # Top right, clear of the title at the top left.
    "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "right", "x": 1},
    "hovermode": "x unified",
    "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12},
}
_PLOT_CONFIG: dict[str, Any] = {"displaylogo": False, "responsive": True}


# --- series helpers -------------------------------------------------------------------------
def downsample(series: pd.Series, max_points: int = MAX_POINTS) -> pd.Series:
    """At most ``max_points`` points of ``series`` that keep its shape: the first and last
    point, and the lowest and highest point of each of ``(max_points - 2) // 2`` equal buckets
    (min-max decimation), so peaks and troughs (the max drawdown) survive thinning."""
    if max_points < 4:
        raise ValueError(f"max_points must be >= 4, got {max_points}")
    n = len(series)
    if n <= max_points:
        return series
    values = series.to_numpy(dtype=np.float64)
    finite = np.isfinite(values)
    low = np.where(finite, values, np.inf)
    high = np.where(finite, values, -np.inf)
    edges = np.linspace(1, n - 1, (max_points - 2) // 2 + 1).astype(np.int64)
    keep = [0, n - 1]
    for lo, hi in pairwise(edges.tolist()):
        if hi > lo:
            keep += [lo + int(np.argmin(low[lo:hi])), lo + int(np.argmax(high[lo:hi]))]
    return series.iloc[np.unique(np.asarray(keep, dtype=np.int64))]


def _x(series: pd.Series) -> npt.NDArray[np.float64]:
    """UTC timestamps as epoch milliseconds (a compact typed array in the page; the axes are
    ``type="date"`` and read them as UTC)."""
    index = pd.DatetimeIndex(series.index)
    if index.tz is not None:
        index = index.tz_convert("UTC")
    return index.as_unit("ns").asi8.astype(np.float64) / 1e6


def _drawdown(equity: pd.Series) -> pd.Series:
    values = equity.to_numpy(dtype=np.float64)
    if len(values) == 0:
        return equity.astype("float64")
    peak = np.maximum.accumulate(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, values / peak - 1.0, 0.0)
    return pd.Series(dd, index=equity.index)


def _color(variant: str, i: int) -> str:
    return _COLORS.get(variant, _EXTRA_COLORS[i % len(_EXTRA_COLORS)])


def _line(series: pd.Series, variant: str, i: int, *, show: bool, scale: float = 1.0) -> Any:
    thin = downsample(series.astype("float64"))
    label = variant_label(variant)
    return go.Scatter(
        x=_x(thin),
        y=(thin.to_numpy(dtype=np.float64) * scale).astype(np.float32),
        mode="lines",
        name=label,
        legendgroup=variant,
        showlegend=show,
        line={"color": _color(variant, i), "width": 1.6},
    )


def _classes(c: Comparison) -> list[str]:
    seen = [c.asset_classes[s] for s in c.symbols if s in c.asset_classes]
    seen += [cls for _variant, cls in c.class_equity]
    return list(dict.fromkeys(seen))


# --- figures --------------------------------------------------------------------------------
def equity_figure(c: Comparison) -> go.Figure:
    """Portfolio equity per variant (top) and its drawdown (bottom), on one time axis."""
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.7, 0.3],
        vertical_spacing=0.04,
    )
    for i, variant in enumerate(c.variants):
        equity = c.equity.get(variant)
        if equity is None or len(equity) == 0:
            continue
        fig.add_trace(_line(equity, variant, i, show=True), row=1, col=1)
        fig.add_trace(_line(_drawdown(equity), variant, i, show=False, scale=100.0), row=2, col=1)
    fig.update_yaxes(title_text="equity", tickformat=",.0f", row=1, col=1)
    fig.update_yaxes(title_text="drawdown %", ticksuffix="%", row=2, col=1)
    fig.update_xaxes(type="date")
    fig.update_xaxes(title_text="UTC", row=2, col=1)
    fig.update_layout(title="Portfolio: equity and drawdown", height=520, **_LAYOUT)
    return fig


def class_figure(c: Comparison) -> go.Figure:
    """One row per asset class: the class portfolio's equity (left) and drawdown (right)."""
    classes = _classes(c) or ["(none)"]
    titles = [t for cls in classes for t in (f"{cls}: equity", f"{cls}: drawdown")]
    fig = make_subplots(
        rows=len(classes),
        cols=2,
        column_widths=[0.6, 0.4],
        subplot_titles=titles,
        vertical_spacing=min(0.12, 0.3 / max(len(classes), 1)),
        horizontal_spacing=0.08,
    )
    for row, cls in enumerate(classes, start=1):
        for i, variant in enumerate(c.variants):
            equity = c.class_equity.get((variant, cls))
            if equity is None or len(equity) == 0:
                continue
            show = row == 1
            fig.add_trace(_line(equity, variant, i, show=show), row=row, col=1)
            drawdown = _drawdown(equity)
            fig.add_trace(_line(drawdown, variant, i, show=False, scale=100.0), row=row, col=2)
        fig.update_yaxes(tickformat=",.0f", row=row, col=1)
        fig.update_yaxes(ticksuffix="%", row=row, col=2)
    fig.update_xaxes(type="date")
    fig.update_layout(
        title="Asset classes: equity and drawdown", height=max(320, 280 * len(classes)), **_LAYOUT
    )
    return fig


def _diff_bar(names: list[str], values: pd.Series, metric: str) -> Any:
    scale = 100.0 if metric == "total_return" else 1.0
    y = values.to_numpy(dtype=np.float64) * scale
    better = HIGHER_IS_BETTER.get(metric)
    colors = [
        _NEUTRAL
        if not np.isfinite(v) or v == 0 or better is None
        else (_GOOD if (v > 0) == better else _BAD)
        for v in y
    ]
    text = [format_diff(metric, v) for v in values]
    return go.Bar(
        x=names,
        y=np.where(np.isfinite(y), y, 0.0),
        marker={"color": colors},
        text=text,
        textposition="outside",
        cliponaxis=False,
        hovertext=[f"{n}: {t}" for n, t in zip(names, text, strict=True)],
        hoverinfo="text",
        showlegend=False,
    )


_DIFF_METRICS = ("total_return", "sharpe", "ic")


def difference_figure(c: Comparison) -> go.Figure:
    """Per asset class and the portfolio: asset-specific minus universal in total return (pp),
    Sharpe and IC. Green where the asset-specific models did better."""
    wide = side_by_side(c.table, c.variants)
    keep = wide.index.get_level_values("level").isin(["class", "portfolio"])
    part = wide[keep]
    names = [
        "portfolio" if level == "portfolio" else str(name) for level, name in part.index.to_list()
    ]
    titles = [f"Δ {LABELS[m]}" + (" (pp)" if m == "total_return" else "") for m in _DIFF_METRICS]
    fig = make_subplots(rows=1, cols=len(_DIFF_METRICS), subplot_titles=titles)
    for col, metric in enumerate(_DIFF_METRICS, start=1):
        if (metric, DIFF) in part.columns:
            fig.add_trace(_diff_bar(names, part[(metric, DIFF)], metric), row=1, col=col)
        fig.add_hline(y=0, line={"color": "#999", "width": 1}, row=1, col=col)
    labels = [variant_label(v) for v in c.variants]
    fig.update_layout(title=f"Per class: {labels[-1]} minus {labels[0]}", height=380, **_LAYOUT)
    fig.update_layout(hovermode="closest")
    return fig


def symbol_difference_figure(c: Comparison) -> go.Figure:
    """Per symbol: asset-specific minus universal in total return (pp), Sharpe and IC."""
    wide = side_by_side(c.table, c.variants)
    part = wide[wide.index.get_level_values("level") == "symbol"]
    names = [str(name) for _level, name in part.index.to_list()]
    titles = [f"Δ {LABELS[m]}" + (" (pp)" if m == "total_return" else "") for m in _DIFF_METRICS]
    fig = make_subplots(rows=1, cols=len(_DIFF_METRICS), subplot_titles=titles)
    for col, metric in enumerate(_DIFF_METRICS, start=1):
        if (metric, DIFF) in part.columns:
            fig.add_trace(_diff_bar(names, part[(metric, DIFF)], metric), row=1, col=col)
    labels = [variant_label(v) for v in c.variants]
    fig.update_layout(title=f"Per symbol: {labels[-1]} minus {labels[0]}", height=380, **_LAYOUT)
    fig.update_layout(hovermode="closest")
    return fig


def figures(c: Comparison) -> dict[str, go.Figure]:
    """Every figure of the report, by name, in report order."""
    out = {"equity": equity_figure(c), "classes": class_figure(c)}
    if len(c.variants) >= 2:
        out["class_differences"] = difference_figure(c)
        out["symbol_differences"] = symbol_difference_figure(c)
    return out


# --- HTML pieces ----------------------------------------------------------------------------
def _cell_class(metric: str, diff: object) -> str:
    try:
        value = float(diff)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "na"
    better = HIGHER_IS_BETTER.get(metric)
    if not math.isfinite(value) or value == 0 or better is None:
        return "na"
    return "good" if (value > 0) == better else "bad"


def _comparison_table(c: Comparison) -> str:
    wide = side_by_side(c.table, c.variants)
    variants = list(c.variants)
    has_diff = len(variants) >= 2
    sub = [variant_label(v) for v in variants] + (["Δ"] if has_diff else [])
    head1 = "<th rowspan=2>level</th><th rowspan=2>name</th><th rowspan=2>class</th>"
    head1 += f"<th colspan={len(variants)}>model</th>"
    head1 += "".join(f"<th colspan={len(sub)}>{escape(LABELS[m])}</th>" for m in METRICS)
    head2 = "".join(f"<th>{escape(variant_label(v))}</th>" for v in variants)
    head2 += "".join(f"<th>{escape(s)}</th>" for _m in METRICS for s in sub)
    rows = []
    keys = cast(list[tuple[str, str]], wide.index.to_list())
    for position, (level, name) in enumerate(keys):
        row = wide.iloc[position]
        cls = c.asset_classes.get(str(name), "") if level == "symbol" else ""
        if level == "class":
            cls = str(name)
        cells = [
            f"<td>{escape(str(level))}</td>",
            f"<th scope=row>{escape(str(name))}</th>",
            f"<td>{escape(cls)}</td>",
        ]
        for v in variants:
            model = row.get(("model_id", v))
            text = (
                "-" if model is None or (isinstance(model, float) and math.isnan(model)) else model
            )
            cells.append(f"<td class=model>{escape(str(text))}</td>")
        for metric in METRICS:
            for v in variants:
                cells.append(f"<td>{escape(format_value(metric, row.get((metric, v))))}</td>")
            if has_diff:
                diff = row.get((metric, DIFF))
                klass = _cell_class(metric, diff)
                cells.append(f"<td class='diff {klass}'>{escape(format_diff(metric, diff))}</td>")
        rows.append(f"<tr class='lvl-{escape(str(level))}'>{''.join(cells)}</tr>")
    return (
        "<div class=scroll><table class=grid>"
        f"<thead><tr>{head1}</tr><tr>{head2}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _route_table(c: Comparison) -> str:
    variants = list(c.variants)
    by_variant: dict[str, dict[str, dict[str, object]]] = {}
    for v in variants:
        by_variant[v] = {}
        for r in c.routes.get(v, []):
            key = str(r.get("canonical") or r.get("symbol"))
            by_variant[v][key] = r
            by_variant[v].setdefault(str(r.get("symbol")), r)
    head = "<th rowspan=2>symbol</th><th rowspan=2>class</th>"
    head += "".join(f"<th colspan=3>{escape(variant_label(v))}</th>" for v in variants)
    head2 = "".join("<th>model</th><th>reason</th><th>sha256</th>" for _v in variants)
    rows = []
    for symbol in c.symbols:
        cls = c.asset_classes.get(symbol, "")
        cells = [f"<th scope=row>{escape(symbol)}</th>", f"<td>{escape(cls)}</td>"]
        for v in variants:
            route = by_variant[v].get(symbol)
            if route is None:
                cells.append("<td colspan=3 class=na>no route</td>")
                continue
            reason = str(route.get("reason", ""))
            klass = "bad" if reason in _FALLBACK_REASONS else ""
            detail = str(route.get("detail") or "")
            title = f" title='{escape(detail, quote=True)}'" if detail else ""
            sha = str(route.get("model_sha256") or "-")[:12]
            cells.append(f"<td class=model>{escape(str(route.get('model_id', '')))}</td>")
            attrs = (f" class='{klass}'" if klass else "") + title
            cells.append(f"<td{attrs}>{escape(reason)}</td>")
            cells.append(f"<td class=mono>{escape(sha)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        "<div class=scroll><table class=grid>"
        f"<thead><tr>{head}</tr><tr>{head2}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _portfolio_row(c: Comparison, variant: str) -> dict[str, object]:
    t = c.table
    rows = t[(t["level"] == "portfolio") & (t["variant"] == variant)]
    return {} if rows.empty else dict(rows.iloc[0])


def _cards(c: Comparison) -> str:
    shown = ("total_return", "sharpe", "max_drawdown", "ic")
    cards = []
    for metric in shown:
        parts = []
        values = []
        for v in c.variants:
            value = _portfolio_row(c, v).get(metric)
            values.append(value)
            parts.append(
                f"<div class=cv><span class=dot style='background:{_color(v, 0)}'></span>"
                f"{escape(variant_label(v))}<b>{escape(format_value(metric, value))}</b></div>"
            )
        diff_html = ""
        if len(values) >= 2:
            try:
                diff: object = float(values[-1]) - float(values[0])  # type: ignore[arg-type]
            except (TypeError, ValueError):
                diff = None
            diff_html = (
                f"<div class='cd {_cell_class(metric, diff)}'>Δ "
                f"{escape(format_diff(metric, diff))}</div>"
            )
        cards.append(
            f"<div class=card><div class=ct>{escape(LABELS[metric])}</div>"
            f"{''.join(parts)}{diff_html}</div>"
        )
    return f"<div class=cards>{''.join(cards)}</div>"


def _verdict(c: Comparison) -> str:
    if len(c.variants) < 2:
        return ""
    wide = side_by_side(c.table, c.variants)
    symbols = wide[wide.index.get_level_values("level") == "symbol"]
    if ("total_return", DIFF) not in symbols.columns or symbols.empty:
        return ""
    diffs = symbols[("total_return", DIFF)].to_numpy(dtype=np.float64)
    wins = int(np.sum(diffs > 0))
    labels = [variant_label(v) for v in c.variants]
    text = (
        f"The {labels[-1]} models returned more than the {labels[0]} model on "
        f"{wins} of {len(diffs)} symbols"
    )
    portfolio = _portfolio_row(c, c.variants[-1]), _portfolio_row(c, c.variants[0])
    try:
        delta = float(portfolio[0]["total_return"]) - float(portfolio[1]["total_return"])  # type: ignore[arg-type]
        text += f"; on the portfolio, {format_diff('total_return', delta)} of total return."
    except (KeyError, TypeError, ValueError):
        text += "."
    return f"<p class=verdict>{escape(text)}</p>"


def _run_details(c: Comparison) -> str:
    run = c.config.get("run") if isinstance(c.config.get("run"), dict) else None
    items: dict[str, object] = {}
    source: dict[Any, Any] = run if isinstance(run, dict) else c.config
    for key, value in source.items():
        if isinstance(value, str | int | float | bool) or value is None:
            items[str(key)] = value
    rows = "".join(
        f"<tr><th scope=row>{escape(k)}</th><td class=mono>{escape(str(v))}</td></tr>"
        for k, v in items.items()
    )
    hashes = "".join(
        f"<tr><th scope=row>predictions sha256 ({escape(variant_label(v))})</th>"
        f"<td class=mono>{escape(h)}</td></tr>"
        for v, h in c.predictions_sha256.items()
    )
    config_json = json.dumps(c.config, indent=2, default=str, sort_keys=False)
    return (
        f"<table class=kv>{rows}{hashes}</table>"
        f"<details><summary>full configuration</summary><pre>{escape(config_json)}</pre></details>"
    )


_CSS = """
:root { --fg:#1f2328; --muted:#656d76; --line:#d8dee4; --bg:#ffffff; --soft:#f6f8fa;
        --good:#2e7d32; --bad:#c62828; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
       color:var(--fg); background:var(--bg); }
header { padding:24px 32px 12px; border-bottom:1px solid var(--line); background:var(--soft); }
header h1 { margin:0 0 4px; font-size:22px; }
header .meta { color:var(--muted); }
main { padding:8px 32px 48px; max-width:1400px; }
section { margin-top:28px; }
h2 { font-size:17px; margin:0 0 8px; border-bottom:1px solid var(--line); padding-bottom:4px; }
.symbols span { display:inline-block; margin:2px 6px 2px 0; padding:1px 8px;
                border:1px solid var(--line); border-radius:10px; background:#fff; }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin-top:16px; }
.card { border:1px solid var(--line); border-radius:8px; padding:10px 14px; min-width:200px; }
.card .ct { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card .cv { display:flex; justify-content:space-between; gap:12px; }
.card .cv b { font-variant-numeric:tabular-nums; }
.card .cd { margin-top:4px; font-weight:600; }
.dot { display:inline-block; width:9px; height:9px; border-radius:50%; margin-right:6px; }
.verdict { font-size:15px; margin:14px 0 0; }
.scroll { overflow-x:auto; }
table.grid { border-collapse:collapse; font-size:12.5px; font-variant-numeric:tabular-nums; }
table.grid th, table.grid td { border:1px solid var(--line); padding:3px 7px;
                               text-align:right; white-space:nowrap; }
table.grid thead th { background:var(--soft); text-align:center; position:sticky; top:0; }
table.grid th[scope=row], table.grid td.model { text-align:left; }
table.grid tr.lvl-class td, table.grid tr.lvl-class th { background:#fbfbf4; }
table.grid tr.lvl-portfolio td, table.grid tr.lvl-portfolio th { background:#f3f6fb;
                                                                 font-weight:600; }
.good { color:var(--good); } .bad { color:var(--bad); } .na { color:var(--muted); }
td.diff { font-weight:600; }
.mono, pre { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:12px; }
table.kv th { text-align:left; padding-right:16px; color:var(--muted); font-weight:normal; }
pre { background:var(--soft); padding:12px; overflow:auto; max-height:480px; }
footer { color:var(--muted); padding:16px 32px; border-top:1px solid var(--line); }
"""


def _figure_html(fig: go.Figure, *, first: bool, div_id: str) -> str:
    html: str = pio.to_html(
        fig,
        full_html=False,
        include_plotlyjs=first,
        include_mathjax=False,
        config=_PLOT_CONFIG,
        div_id=div_id,
        validate=True,
    )
    return html


def _period(c: Comparison) -> str:
    starts = [s.index[0] for s in c.equity.values() if len(s)]
    ends = [s.index[-1] for s in c.equity.values() if len(s)]
    if not starts:
        return "no bars"
    fmt = "%Y-%m-%d %H:%M UTC"
    return f"{min(starts).strftime(fmt)} → {max(ends).strftime(fmt)}"


def render_html(c: Comparison, *, title: str | None = None) -> str:
    """The whole report as one HTML string (plotly.js inline, nothing from the network)."""
    labels = [variant_label(v) for v in c.variants]
    heading = title or f"modelyard: {' vs '.join(labels)} models"
    figs = figures(c)
    blocks = {
        name: _figure_html(fig, first=i == 0, div_id=f"fig-{name}")
        for i, (name, fig) in enumerate(figs.items())
    }
    timeframe = c.config.get("timeframe")
    run = c.config.get("run")
    if timeframe is None and isinstance(run, dict):
        timeframe = run.get("timeframe")
    symbols = "".join(
        f"<span title='{escape(c.asset_classes.get(s, ''), quote=True)}'>{escape(s)}</span>"
        for s in c.symbols
    )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    meta = f"{escape(_period(c))}"
    if timeframe is not None:
        meta += f" · timeframe {escape(str(timeframe))}"
    meta += f" · {len(c.symbols)} symbols · generated {escape(generated)}"
    sections = [
        "<section><h2>Portfolio</h2>" + blocks["equity"] + "</section>",
        "<section><h2>Asset classes</h2>" + blocks["classes"],
    ]
    if "class_differences" in blocks:
        sections[-1] += blocks["class_differences"]
    sections[-1] += "</section>"
    if "symbol_differences" in blocks:
        sections.append("<section><h2>Symbols</h2>" + blocks["symbol_differences"] + "</section>")
    sections.append(
        "<section><h2>Comparison table</h2>"
        "<p class=na>Δ = "
        + escape(f"{labels[-1]} minus {labels[0]}")
        + "; green where that is better. Percent metrics differ in percentage points (pp).</p>"
        + _comparison_table(c)
        + "</section>"
    )
    sections.append("<section><h2>Routes</h2>" + _route_table(c) + "</section>")
    sections.append("<section><h2>Run</h2>" + _run_details(c) + "</section>")
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        f"<title>{escape(heading)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{escape(heading)}</h1><div class=meta>{meta}</div>"
        f"<div class=symbols>{symbols}</div>{_cards(c)}{_verdict(c)}</header>"
        f"<main>{''.join(sections)}</main>"
        "<footer>modelyard · self-contained report: opens offline</footer>"
        "</body></html>\n"
    )


def write_report(c: Comparison, path: str | Path, *, title: str | None = None) -> Path:
    """Render :func:`render_html` and write it atomically to ``path``."""
    text = render_html(c, title=title)
    target = write_text_atomic(path, text)
    log.info("report written to %s (%.1f MB)", target, len(text.encode("utf-8")) / 1e6)
    return target
