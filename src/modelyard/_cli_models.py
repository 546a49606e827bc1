"""``modelyard train`` and ``modelyard eval``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parsers"]


def _cmd_train(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from modelyard._cli_compare import workers_fit
    from modelyard.cli import _split_symbols
    from modelyard.config import load_config
    from modelyard.models.training import resolve_model_id, train_model

    if not workers_fit(args):
        return 2
    config = load_config(args.config)
    resolve_model_id(config, args.model)  # a bad --model fails before any progress output
    symbols = _split_symbols(args.symbols) if args.symbols else None
    console = Console(stderr=True)
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task(f"train {args.model}", total=None)
        result = train_model(
            config,
            args.model,
            symbols=symbols,
            start=args.start,
            end=args.end,
            horizon=args.horizon,
            timeframe=args.timeframe,
            out=args.out,
            progress=lambda msg: progress.update(task, description=f"train {args.model}: {msg}"),
            executor=args.executor,
            workers=args.workers,
        )
    card = result.card
    if args.json:
        sys.stdout.write(card.model_dump_json(indent=2) + "\n")
        return 0
    out = Console()
    out.print(f"[bold]{card.id}[/] → {result.onnx_path}")
    out.print(f"  card     {result.card_path}")
    out.print(f"  sha256   {card.sha256}")
    out.print(f"  rows     {card.rows} ({card.training_start} … {card.training_end})")
    out.print(f"  alpha    {card.penalty['alpha']:g}   parity {card.parity_max_abs_diff:.2e}")
    o = card.overall
    out.print(f"  OOS      IC {o.ic}  rank IC {o.rank_ic}  hit {o.hit_rate}  n {o.n}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from modelyard.config import load_config
    from modelyard.models.evaluation import evaluate_class

    config = load_config(args.config)
    classes = args.classes or [
        name for name, cls in config.asset_classes.items() if cls.model and name != "options"
    ]
    results = [evaluate_class(config, name, timeframe=args.timeframe) for name in classes]
    if args.json:
        sys.stdout.write(json.dumps([r.as_dict() for r in results], indent=2) + "\n")
        return 0
    table = Table(title="out-of-sample: universal vs asset-specific (same rows)")
    for col in ("class", "model", "IC", "rank IC", "ICIR", "hit rate", "n"):
        table.add_column(col, justify="right" if col not in ("class", "model") else "left")
    for r in results:
        for score in (r.universal, r.specific):
            table.add_row(
                r.asset_class,
                score.model_id,
                f"{score.ic:.4f}",
                f"{score.rank_ic:.4f}",
                f"{score.icir:.2f}",
                f"{score.hit_rate:.3f}",
                str(score.n),
            )
        table.add_row(
            r.asset_class,
            "[bold]difference[/]",
            f"{r.ic_diff:+.4f}",
            f"t={r.t_stat:.2f}",
            "",
            f"95% [{r.ci_low:+.4f}, {r.ci_high:+.4f}]",
            "",
            end_section=True,
        )
    Console().print(table)
    return 0


def add_parsers(sub: Any) -> None:
    """Add ``train`` and ``eval`` to the ``modelyard`` subparsers."""
    from modelyard._cli_compare import _executor, _workers
    from modelyard.cli import _common

    train = sub.add_parser("train", help="train a model and write ONNX + model card")
    train.add_argument("--model", required=True, help="universal | crypto | equities | <model id>")
    train.add_argument("--symbols", nargs="*", help="symbols (default: the bundled ones)")
    train.add_argument("--start", default=None)
    train.add_argument("--end", default=None)
    train.add_argument("--horizon", type=int, default=None, help="target horizon in bars")
    train.add_argument("--timeframe", default="1d")
    train.add_argument("--out", type=Path, default=None, help="ONNX path (default: registry's)")
    train.add_argument("--json", action="store_true", help="print the model card as JSON")
    train.add_argument(
        "--executor",
        type=_executor,
        default="serial",
        metavar="serial|threads|processes|dask|tcp://HOST:PORT",
        help="where the features (in symbol shards) and the penalty search run, as for "
        "compare; the ONNX file and the card are the same bytes on every executor",
    )
    train.add_argument(
        "--workers",
        type=_workers,
        default=None,
        metavar="N",
        help="threads, pool processes or local Dask workers (default: the number of CPUs)",
    )
    _common(train)
    train.set_defaults(handler=_cmd_train)

    ev = sub.add_parser("eval", help="universal vs asset-specific prediction quality")
    ev.add_argument("classes", nargs="*", help="asset classes (default: every class with a model)")
    ev.add_argument("--timeframe", default="1d")
    ev.add_argument("--json", action="store_true")
    _common(ev)
    ev.set_defaults(handler=_cmd_eval)
