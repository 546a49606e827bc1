"""The ``modelyard`` command line: ``route`` (and the other jobs as they land).

Every failure the package expects (bad config, bad symbol, bad data) exits non-zero with one
line on stderr, never a traceback. ``-v`` shows log lines; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from modelyard.errors import ModelyardError

__all__ = ["main"]

log = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"modelyard: error: {message} (see `{self.prog} --help`)\n")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=None, help="registry file (default: config/assets.yaml)"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def _routing_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--asset-specific",
        dest="asset_specific",
        action="store_true",
        default=None,
        help="route to asset-specific models (overrides FLAG_ASSET_SPECIFIC_MODELS)",
    )
    group.add_argument(
        "--universal",
        dest="asset_specific",
        action="store_false",
        help="route every symbol to the universal model",
    )
    parser.add_argument(
        "--strict", action="store_true", default=None, help="raise instead of falling back"
    )


def stdout_console() -> Any:
    """A rich console for tables on stdout: terminal width on a terminal; 200 columns when
    piped or redirected, so wide comparison tables stay readable in files and CI logs."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


def positive_cash(text: str) -> float:
    """argparse type of ``--cash``: a number above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--cash {text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--cash must be > 0, got {text}")
    return value


def _split_symbols(values: Sequence[str]) -> list[str]:
    from modelyard.errors import InvalidSymbolError

    symbols = [part.strip() for value in values for part in value.split(",") if part.strip()]
    if not symbols:
        raise InvalidSymbolError("empty symbol list; pass symbols such as AAPL,BTC/USD")
    return symbols


# --- route ------------------------------------------------------------------------------
def _cmd_route(args: argparse.Namespace) -> int:
    from modelyard.config import load_config
    from modelyard.routing import AssetSpecificModelRouter

    config = load_config(args.config)
    router = AssetSpecificModelRouter(
        config, asset_specific=args.asset_specific, strict=args.strict
    )
    symbols = _split_symbols(args.symbols)
    decisions = [router.route(symbol) for symbol in symbols]
    if args.json:
        rows = [
            {key: value for key, value in d.as_dict().items() if key != "detail"} for d in decisions
        ]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"routing ({'asset-specific' if router.asset_specific else 'universal'})")
    for column in ("symbol", "canonical", "class", "model", "sha256", "reason"):
        table.add_column(column, overflow="fold")
    for d in decisions:
        style = "yellow" if d.is_fallback else None
        table.add_row(
            d.symbol,
            d.canonical,
            d.asset_class,
            d.model_id,
            (d.model_sha256 or "-")[:12],
            d.reason,
            style=style,
        )
    Console().print(table)
    return 0


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM stop a foreground job, even when started with SIGINT ignored
    (a parent such as a pytest-xdist worker or ``nohup`` passes SIG_IGN on)."""
    import signal

    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


def _cmd_emulator_serve(args: argparse.Namespace) -> int:
    import time

    from modelyard.emulator import Emulator

    symbols = _split_symbols(args.symbols) if args.symbols else None
    _stop_on_signals()
    with Emulator(port=args.port, symbols=symbols, speed=args.speed) as emu:
        lines = [
            f"REST (url_override)  {emu.base_url}",
            f"trading stream       {emu.trading_stream_url}",
            f"stock data stream    {emu.stock_stream_url}",
            f"crypto data stream   {emu.crypto_stream_url}",
            f"keys (emulator only) APCA_API_KEY_ID={emu.key_id} "
            f"APCA_API_SECRET_KEY={emu.secret_key}",
            "Ctrl-C stops the emulator.",
        ]
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        try:
            while True:
                time.sleep(0.5)
        except KeyboardInterrupt:
            sys.stdout.write("emulator stopped\n")
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="modelyard", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    route = sub.add_parser("route", help="show which model serves each symbol, and why")
    route.add_argument("symbols", nargs="+", help="symbols, space- or comma-separated")
    route.add_argument("--json", action="store_true", help="print a JSON list of decisions")
    _routing_flags(route)
    _common(route)
    route.set_defaults(handler=_cmd_route)

    from modelyard._cli_models import add_parsers as add_model_parsers

    add_model_parsers(sub)

    from modelyard._cli_backtest import add_parser as add_backtest_parser

    add_backtest_parser(sub)

    from modelyard._cli_compare import add_parser as add_compare_parser

    add_compare_parser(sub)

    from modelyard._cli_paper import add_parser as add_paper_parser

    add_paper_parser(sub)

    emulator = sub.add_parser("emulator", help="the local Alpaca emulator")
    emulator_sub = emulator.add_subparsers(dest="emulator_command", required=True)
    serve = emulator_sub.add_parser("serve", help="serve a local Alpaca venue on 127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    serve.add_argument("--symbols", nargs="*", help="symbols to serve (default: bundled)")
    serve.add_argument("--speed", type=float, default=60.0, help="replayed bars per second")
    _common(serve)
    serve.set_defaults(handler=_cmd_emulator_serve)
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * min(verbosity, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    _configure_logging(getattr(args, "verbose", 0))
    handler: Handler = args.handler
    try:
        return handler(args)
    except ModelyardError as exc:
        if getattr(args, "debug", False):
            raise
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        sys.stderr.write(f"modelyard: {type(exc).__name__}: {first}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("modelyard: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
