"""``modelyard paper``: trade the routed strategy live on Alpaca paper (or the local emulator).

Wired into :mod:`modelyard.cli` with ``_cli_paper.add_parser(sub)``. Prints the router's
choice per symbol, then a live status line (bars, orders, fills, P&L, risk); Ctrl-C or SIGTERM
stops cleanly (open orders canceled or kept, journal flushed, result written).
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "cmd_paper", "parse_duration"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """``30s``, ``5m``, ``1h`` (a bare number is seconds) -> seconds."""
    match = _DURATION.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"--duration {text!r}: write a positive number with s, m or h, e.g. 30s, 5m, 1h"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def _status_table(status: dict[str, Any], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, show_edge=False)
    for column in ("bars", "live", "orders", "fills", "failed", "value", "P&L", "risk", "recon"):
        table.add_column(column, justify="right" if column != "risk" else "left")
    table.add_row(
        str(status["bars"]),
        f"{status['live']}/{status['datas']}",
        str(status["orders"]),
        str(status["fills"]),
        str(status["failed"]),
        f"{status['value']:,.2f}",
        f"{status['pnl']:+,.2f}",
        str(status["risk"]),
        str(status["reconcile"]),
        style="red" if status["risk"] != "ok" else None,
    )
    return table


def _routes_table(session: Any) -> Any:
    from rich.table import Table

    table = Table(title="routes")
    for column in ("symbol", "class", "model", "timeframe", "reason"):
        table.add_column(column)
    for decision in session.routes:
        table.add_row(
            decision.symbol,
            decision.asset_class,
            decision.model_id,
            session.timeframes[decision.symbol],
            decision.reason,
            style="yellow" if decision.is_fallback else None,
        )
    return table


def cmd_paper(args: argparse.Namespace) -> int:
    """The handler of ``modelyard paper``."""
    from rich.console import Console
    from rich.live import Live

    from modelyard.brokers.paper import PaperConfig, PaperSession, run_paper
    from modelyard.cli import _split_symbols

    symbols = tuple(_split_symbols(args.symbols))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else Path("results") / f"paper-{stamp}"
    journal = Path(args.journal) if args.journal else out.with_name(out.name + "-journal.db")
    journal.parent.mkdir(parents=True, exist_ok=True)
    config = PaperConfig(
        symbols=symbols,
        duration=args.duration,
        dry_run=args.dry_run,
        asset_specific=args.asset_specific,
        journal=journal,
        out=out,
        cancel_on_exit=args.cancel_on_exit,
        config=args.config,
        reconcile_every=5.0 if args.emulator else 30.0,
    )
    console = Console()
    live: list[Any] = []
    sessions: list[PaperSession] = []
    title = f"paper {'(emulator) ' if args.emulator else ''}{'DRY RUN ' if args.dry_run else ''}"

    def on_session(session: PaperSession) -> None:
        def stop(signum: int, frame: object) -> None:
            session.stop()

        # explicit handlers: a parent may have passed SIG_IGN for SIGINT on to us
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        sessions.append(session)
        console.print(_routes_table(session))
        display = Live(
            get_renderable=lambda: _status_table(session.status(), title),
            console=console,
            refresh_per_second=2,
            transient=not console.is_terminal,
        )
        display.start()
        live.append(display)

    try:
        result = run_paper(config, emulator=args.emulator, speed=args.speed, on_session=on_session)
    finally:
        for display in live:
            display.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sessions:
        console.print(_status_table(sessions[0].status(), title + "(final)"))
    run = result.config.get("run", {})
    console.print(
        f"{len(result.orders)} fills, {run.get('held_back_orders', 0)} orders held back; "
        f"total return {result.stats['total_return']:+.4%}"
    )
    console.print(f"journal: {journal}")
    console.print(f"result written to {out}")
    sys.stdout.flush()
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``paper`` command to ``subparsers`` (from ``add_subparsers``)."""
    from modelyard.cli import _common, _routing_flags

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "paper", help="paper-trade the routed strategy on Alpaca (or --emulator)"
    )
    parser.add_argument(
        "--symbols", action="append", required=True, help="comma-separated, e.g. SPY,QQQ,BTC/USD"
    )
    parser.add_argument(
        "--duration", type=parse_duration, default=None, help="stop after 30s, 5m, 1h ..."
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="journal the orders (failed: dry_run), send none"
    )
    parser.add_argument(
        "--emulator", action="store_true", help="trade a local emulator on bundled bars (no keys)"
    )
    parser.add_argument(
        "--speed", type=float, default=20.0, help="emulator bars per second (default 20)"
    )
    parser.add_argument("--journal", default=None, help="SQLite order journal path")
    parser.add_argument("--out", default=None, help="result folder (default results/paper-<ts>)")
    orders = parser.add_mutually_exclusive_group()
    orders.add_argument(
        "--cancel-on-exit",
        dest="cancel_on_exit",
        action="store_true",
        default=True,
        help="cancel open orders on exit (default)",
    )
    orders.add_argument(
        "--keep-open-orders",
        dest="cancel_on_exit",
        action="store_false",
        help="leave open orders working on exit",
    )
    _routing_flags(parser)
    _common(parser)
    parser.set_defaults(handler=cmd_paper)
    return parser
