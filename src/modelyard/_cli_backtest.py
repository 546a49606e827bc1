"""``modelyard backtest``: run the routed strategy in Backtrader, print stats and routes, save.

Wired into :mod:`modelyard.cli` with ``_cli_backtest.add_parser(sub)``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelyard.errors import ModelyardError

__all__ = ["add_parser", "cmd_backtest"]

_PROGRESS_AFTER_S = 2.0


class _LazyProgress:
    """A rich progress bar on stderr that appears only once a run has taken a few seconds."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.started = time.perf_counter()
        self._progress: Any = None
        self._task: Any = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._progress is None:
            if time.perf_counter() - self.started < _PROGRESS_AFTER_S:
                return
            from rich.console import Console
            from rich.progress import Progress

            self._progress = Progress(console=Console(stderr=True), transient=True)
            self._progress.start()
            self._task = self._progress.add_task("backtest", total=total)
        self._progress.update(self._task, completed=done, total=total)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def _stats_table(stats: dict[str, float | int]) -> Any:
    from rich.table import Table

    table = Table(title="statistics")
    table.add_column("stat")
    table.add_column("value", justify="right")
    for key, value in stats.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else f"{value:.6g}")
    return table


def _routes_table(routes: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title="routes")
    for column in ("symbol", "class", "model", "sha256", "reason"):
        table.add_column(column, overflow="fold")
    for r in routes:
        table.add_row(
            str(r["symbol"]),
            str(r["asset_class"]),
            str(r["model_id"]),
            str(r["model_sha256"] or "-")[:12],
            str(r["reason"]),
        )
    return table


def cmd_backtest(args: argparse.Namespace) -> int:
    """The handler of ``modelyard backtest``."""
    from modelyard.cli import _split_symbols
    from modelyard.strategies.backtest import run_backtest

    if args.engine != "backtrader":
        raise ModelyardError(f"engine {args.engine!r} is not available yet; use backtrader")
    symbols = _split_symbols(args.symbols) if args.symbols is not None else None
    progress = _LazyProgress(enabled=not args.json)
    try:
        result = run_backtest(
            symbols,
            start=args.start,
            end=args.end,
            timeframe=args.timeframe,
            asset_specific=args.asset_specific,
            strict=args.strict,
            cash=args.cash,
            config=args.config,
            progress=progress,
        )
    finally:
        progress.close()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out is not None else Path("results") / f"backtest-{stamp}"
    result.save(out, overwrite=args.out is not None)
    if args.json:
        payload = {"out": str(out), "stats": result.stats, "routes": result.routes}
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return 0
    from rich.console import Console

    console = Console()
    console.print(_stats_table(result.stats))
    console.print(_routes_table(result.routes))
    console.print(f"result written to {out}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``backtest`` command to ``subparsers`` (from ``add_subparsers``)."""
    from modelyard.cli import _common, _routing_flags, positive_cash

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "backtest", help="backtest the routed strategy and write a result folder"
    )
    parser.add_argument("--engine", choices=["backtrader"], default="backtrader")
    parser.add_argument(
        "--symbols",
        action="append",
        default=None,
        help="comma-separated symbols (default: AAPL,MSFT,IBM,GOOG,BTC/USD,ETH/USD)",
    )
    parser.add_argument("--start", default=None, help="first date (UTC), e.g. 2005-01-01")
    parser.add_argument("--end", default=None, help="last date (UTC, inclusive)")
    parser.add_argument("--timeframe", default="1d", help="bar timeframe (default 1d)")
    parser.add_argument("--cash", type=positive_cash, default=100_000.0, help="starting cash")
    parser.add_argument(
        "--out", default=None, help="result folder (default results/backtest-<timestamp>)"
    )
    parser.add_argument("--json", action="store_true", help="print stats and routes as JSON")
    _routing_flags(parser)
    _common(parser)
    parser.set_defaults(handler=cmd_backtest)
    return parser
