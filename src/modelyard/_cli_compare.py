"""``modelyard compare``: universal against asset-specific models, side by side, with a report.

Both variants are always computed explicitly (the routing flag does not apply). The command
prints per symbol, per asset class and for the portfolio both variants and their difference,
and writes ``report.html``, ``comparison.csv`` and ``comparison.json`` into one folder, all at
once. Wired into :mod:`modelyard.cli` with ``_cli_compare.add_parser(sub)``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID
    from rich.table import Table

    from modelyard.strategies.compare import Comparison

__all__ = ["add_parser", "cmd_compare", "workers_fit"]

_TITLES = {"symbol": "per symbol", "class": "per asset class", "portfolio": "portfolio"}


class _StageProgress:
    """A rich progress bar on stderr, one line per stage of ``compare`` (transient)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._progress is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description:<28}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.start()
        task = self._tasks.get(stage)
        if task is None:
            task = self._progress.add_task(stage, total=max(total, 1))
            self._tasks[stage] = task
        self._progress.update(task, completed=done, total=max(total, 1))

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _style(metric: str, diff: float) -> str | None:
    from modelyard.reports.tables import HIGHER_IS_BETTER

    better = HIGHER_IS_BETTER.get(metric)
    if better is None or math.isnan(diff) or diff == 0:
        return "dim"
    return "green" if (diff > 0) == better else "red"


def _level_table(c: Comparison, level: str) -> Table | None:
    from rich.table import Table

    from modelyard.reports.tables import (
        DIFF,
        LABELS,
        METRICS,
        format_diff,
        format_value,
        side_by_side,
        variant_label,
    )

    wide = side_by_side(c.table, c.variants)
    part = wide[wide.index.get_level_values("level") == level]
    if part.empty:
        return None
    table = Table(title=_TITLES.get(level, level), title_justify="left", header_style="bold")
    table.add_column(level if level != "portfolio" else "", overflow="fold")
    if level == "symbol":
        table.add_column("class")
    table.add_column("variant")
    table.add_column("model", overflow="fold")
    for metric in METRICS:
        table.add_column(LABELS[metric], justify="right")
    names = [str(name) for _level, name in part.index.to_list()]
    for position, name in enumerate(names):
        row = part.iloc[position]
        lead = [name] + ([c.asset_classes.get(name, "")] if level == "symbol" else [])
        blank = [""] * len(lead)
        for i, variant in enumerate(c.variants):
            model = row.get(("model_id", variant))
            cells = [
                *(lead if i == 0 else blank),
                variant_label(variant),
                "-" if model is None or model != model else str(model),
                *(format_value(m, row.get((m, variant))) for m in METRICS),
            ]
            table.add_row(*cells)
        if len(c.variants) >= 2:
            diffs = []
            for metric in METRICS:
                value = float(row.get((metric, DIFF), float("nan")))
                style = _style(metric, value)
                text = format_diff(metric, value)
                diffs.append(f"[{style}]{text}[/]" if style else text)
            table.add_row(*blank, "[italic]Δ[/]", "", *diffs, end_section=True)
    return table


def _print_tables(c: Comparison, out: Path) -> None:
    from modelyard.cli import stdout_console
    from modelyard.reports.tables import variant_label

    console = stdout_console()
    labels = [variant_label(v) for v in c.variants]
    console.print(f"[bold]{' vs '.join(labels)}[/] over {len(c.symbols)} symbols")
    for level in ("symbol", "class", "portfolio"):
        table = _level_table(c, level)
        if table is not None:
            console.print(table)
    console.print(f"Δ = {labels[-1]} minus {labels[0]}; green where that is better.")
    for name in ("report.html", "comparison.csv", "comparison.json"):
        console.print(f"wrote {out / name}")


def _default_out() -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path("results") / f"compare-{stamp}"
    n = 1
    while out.exists():
        n += 1
        out = Path("results") / f"compare-{stamp}-{n}"
    return out


def cmd_compare(args: argparse.Namespace) -> int:
    """The handler of ``modelyard compare``."""
    from modelyard.cli import _split_symbols
    from modelyard.errors import DataError
    from modelyard.reports.folder import comparison_document, write_comparison
    from modelyard.strategies.compare import compare

    symbols = _split_symbols(args.symbols) if args.symbols is not None else None
    if not workers_fit(args):
        return 2
    bars = None
    if args.start is None and not args.in_sample:
        bars = _oos_bars(symbols, args.config, args.timeframe, args.end)
        symbols = list(bars)
    progress = _StageProgress(enabled=not args.json)
    try:
        comparison = compare(
            symbols,
            bars=bars,
            start=args.start,
            end=args.end,
            timeframe=args.timeframe,
            cash=args.cash,
            config=args.config,
            executor=args.executor,
            workers=args.workers,
            progress=progress,
        )
    finally:
        progress.close()
    if comparison.table.empty or not any(len(e) for e in comparison.equity.values()):
        raise DataError("the comparison produced no rows; check --symbols, --start and --end")
    out = Path(args.out) if args.out is not None else _default_out()
    document = comparison_document(comparison)
    document["in_sample"] = notes = _in_sample(comparison, args.config)
    write_comparison(comparison, out, overwrite=args.out is not None, document=document)
    for note in notes:
        sys.stderr.write(f"modelyard: warning: {note}\n")
    if args.json:
        sys.stdout.write(json.dumps({"out": str(out), **document}, indent=2) + "\n")
    else:
        _print_tables(comparison, out)
    return _report_failures(comparison)


def _in_sample(comparison: Comparison, config_path: Path | None) -> list[str]:
    """Say which symbols' runs overlap the bars their serving model was trained on (from the
    model card's per-symbol windows): P&L and IC there are in-sample."""
    from modelyard.config import load_config
    from modelyard.models.cards import read_card

    config = load_config(config_path)
    overlap: dict[str, list[str]] = {}
    for variant, routes in comparison.routes.items():
        for route in routes:
            symbol, model_id = str(route["symbol"]), str(route["model_id"])
            curve = comparison.symbol_equity.get((variant, symbol))
            spec = config.models.get(model_id)
            if curve is None or not len(curve) or spec is None or not spec.path.is_file():
                continue
            card = read_card(spec.path)
            window = card.windows.get(symbol) if card is not None else None
            if window is not None and curve.index[0] <= datetime.fromisoformat(window[1]):
                trained_to = window[1][:10]
                overlap.setdefault(model_id, []).append(f"{symbol} (trained to {trained_to})")
    return [
        f"{model_id} was trained on bars this run scores: {', '.join(sorted(set(items)))}; "
        "those results are in-sample (drop --in-sample / --start, or see `modelyard eval`)"
        for model_id, items in sorted(overlap.items())
    ]


def _oos_bars(
    symbols: list[str] | None, config_path: Path | None, timeframe: str, end: str | None
) -> dict[str, Any]:
    """Each symbol's bars from its asset class's ``oos_start`` on: the window the shipped
    models never saw. The first bars of it go to the features' warm-up."""
    from modelyard.config import load_config
    from modelyard.feeds import load_bars
    from modelyard.routing.classifier import AssetClassifier
    from modelyard.strategies.backtest import DEFAULT_SYMBOLS

    config = load_config(config_path)
    classifier = AssetClassifier(config)
    names = symbols if symbols is not None else list(DEFAULT_SYMBOLS)
    bars = {}
    for symbol in names:
        oos = config.class_config(classifier.classify(symbol).asset_class).oos_start
        bars[symbol] = load_bars(symbol, timeframe, start=oos, end=end)
    return bars


def _report_failures(comparison: Comparison) -> int:
    """Failed shards on stderr, one line each; exit code 1 when there are any."""
    for failure in comparison.failures:
        sys.stderr.write(f"modelyard: {failure.describe()}\n")
    if comparison.failures:
        missing = sum(len(f.symbols) for f in comparison.failures)
        sys.stderr.write(
            f"modelyard: {len(comparison.failures)} shard(s) failed; the report leaves out or "
            f"lacks the per-symbol rows of {missing} symbol(s)\n"
        )
        return 1
    return 0


def _executor(text: str) -> str:
    from modelyard.scale.executors import EXECUTOR_NAMES

    if text in EXECUTOR_NAMES or "://" in text:
        return text
    raise argparse.ArgumentTypeError(
        f"--executor {text!r}: use {', '.join(EXECUTOR_NAMES)} or a scheduler address such as "
        "tcp://HEAD:8786"
    )


def workers_fit(args: argparse.Namespace) -> bool:
    """``--workers`` sizes only an executor this process starts; else one line on stderr."""
    if args.workers is not None and args.executor not in ("threads", "processes", "dask"):
        sys.stderr.write(
            "modelyard: error: --workers sizes --executor threads, processes or dask; "
            f"not {args.executor}\n"
        )
        return False
    return True


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--workers {text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--workers must be >= 1, got {text}")
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``compare`` command to ``subparsers`` (from ``add_subparsers``)."""
    from modelyard.cli import _common, positive_cash

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "compare",
        help="compare the universal and the asset-specific models; write an HTML report",
        description=(
            "Run the strategy with the universal model and with the asset-specific models on "
            "the same bars, print both side by side per symbol, asset class and portfolio, "
            "and write report.html, comparison.csv and comparison.json."
        ),
    )
    parser.add_argument(
        "--symbols",
        nargs="+",
        action="extend",
        default=None,
        metavar="SYMBOL",
        help="symbols, space- or comma-separated (default: AAPL,MSFT,IBM,GOOG,BTC/USD,ETH/USD)",
    )
    parser.add_argument(
        "--start",
        default=None,
        help="first date (UTC), e.g. 2005-01-01 (default: each asset class's oos_start, the "
        "first bar the shipped models never saw)",
    )
    parser.add_argument(
        "--in-sample",
        action="store_true",
        help="score each symbol's whole history, including the bars the models trained on",
    )
    parser.add_argument("--end", default=None, help="last date (UTC, inclusive)")
    parser.add_argument("--timeframe", default="1d", help="bar timeframe (default 1d)")
    parser.add_argument("--cash", type=positive_cash, default=100_000.0, help="starting cash")
    parser.add_argument(
        "--out", default=None, help="output folder (default results/compare-<UTC timestamp>)"
    )
    parser.add_argument("--json", action="store_true", help="print the comparison JSON to stdout")
    parser.add_argument(
        "--executor",
        type=_executor,
        default="serial",
        metavar="serial|threads|processes|dask|tcp://HOST:PORT",
        help="where the per-symbol shards run: here (serial, the default), on threads of this "
        "process, a local process pool, a local Dask cluster, or the Dask scheduler at that "
        "address; the results are the same to the last bit",
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        default=None,
        metavar="N",
        help="threads, processes of the pool, or workers of the local cluster (default: the "
        "number of CPUs)",
    )
    _common(parser)
    parser.set_defaults(handler=cmd_compare)
    return parser
