"""``modelyard compare``: a small bundled run end to end, the printed tables, one-line errors.

One real ``compare()`` runs (module-scoped: AAPL and BTC/USD, 2012-06 to 2015-06 with the shipped
models); the tests of the printed tables and the output folder stub ``compare`` with the
hand-made Comparison of test_report.py, so they cost no engine run.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import modelyard.cli as cli
import modelyard.strategies.compare as compare_module
from modelyard.strategies.compare import Comparison
from tests.integration.test_report import SYMBOLS as MADE_SYMBOLS
from tests.integration.test_report import hand_made_comparison

FILES = {"report.html", "comparison.csv", "comparison.json"}
SMALL = ["--symbols", "AAPL,BTC/USD", "--start", "2012-06-01", "--end", "2015-06-30"]


@pytest.fixture(scope="module")
def main() -> Callable[[list[str]], int]:
    assert "compare" in cli._build_parser().format_help()
    return cli.main


@pytest.fixture(scope="module")
def small_run(
    main: Callable[[list[str]], int], tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], Path, str]:
    """``modelyard compare --symbols AAPL,BTC/USD ... --json``, run once: (stdout JSON, out,
    stderr)."""
    out = tmp_path_factory.mktemp("compare") / "run"
    capture = io.StringIO()
    errors = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("FLAG_ASSET_SPECIFIC_MODELS", raising=False)
        mp.setattr("sys.stdout", capture)
        mp.setattr("sys.stderr", errors)
        code = main(["compare", *SMALL, "--out", str(out), "--json"])
    assert code == 0, errors.getvalue()
    return json.loads(capture.getvalue()), out, errors.getvalue()


def test_compare_writes_the_three_files_and_prints_json(
    small_run: tuple[dict[str, Any], Path, str],
) -> None:
    payload, out, _stderr = small_run
    assert payload["out"] == str(out)
    assert {p.name for p in out.iterdir()} == FILES
    saved = json.loads((out / "comparison.json").read_text())
    assert {**saved, "out": str(out)} == payload
    assert payload["variants"] == ["universal", "asset_specific"]
    assert payload["symbols"] == ["AAPL", "BTC/USD"]
    assert set(payload["predictions_sha256"]) == {"universal", "asset_specific"}
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in payload["predictions_sha256"].values())
    served = {
        v: [(r["symbol"], r["model_id"]) for r in routes] for v, routes in payload["routes"].items()
    }
    assert served == {
        "universal": [("AAPL", "universal_v1"), ("BTC/USD", "universal_v1")],
        "asset_specific": [("AAPL", "equities_v1"), ("BTC/USD", "crypto_v1")],
    }
    keys = {(r["level"], r["name"], r["variant"]) for r in payload["table"]}
    for variant in ("universal", "asset_specific"):
        assert ("symbol", "AAPL", variant) in keys
        assert ("symbol", "BTC/USD", variant) in keys
        assert ("class", "equities", variant) in keys
        assert ("class", "crypto", variant) in keys
        assert ("portfolio", "portfolio", variant) in keys


def test_the_csv_is_the_side_by_side_table(small_run: tuple[dict[str, Any], Path, str]) -> None:
    payload, out, _stderr = small_run
    rows = list(csv.DictReader(io.StringIO((out / "comparison.csv").read_text())))
    assert [(r["level"], r["name"]) for r in rows] == [
        ("symbol", "AAPL"),
        ("symbol", "BTC/USD"),
        ("class", "equities"),
        ("class", "crypto"),
        ("portfolio", "portfolio"),
    ]
    table = {(r["level"], r["name"], r["variant"]): r for r in payload["table"]}
    aapl = rows[0]
    universal = table[("symbol", "AAPL", "universal")]["total_return"]
    specific = table[("symbol", "AAPL", "asset_specific")]["total_return"]
    assert float(aapl["total_return.universal"]) == universal
    assert float(aapl["total_return.asset_specific"]) == specific
    assert float(aapl["total_return.diff"]) == pytest.approx(specific - universal, abs=1e-15)
    assert aapl["model_id.asset_specific"] == "equities_v1"


def test_the_report_is_self_contained_and_names_every_symbol(
    small_run: tuple[dict[str, Any], Path, str],
) -> None:
    _payload, out, _stderr = small_run
    text = (out / "report.html").read_text(encoding="utf-8")
    assert '<script src="http' not in text
    assert not re.search(r"<script[^>]*\bsrc\s*=\s*['\"]?(https?:)?//", text, flags=re.I)
    for symbol in ("AAPL", "BTC/USD", "equities", "crypto", "equities_v1", "crypto_v1"):
        assert symbol in text
    assert len(text.encode()) < 6_000_000


def test_compare_prints_side_by_side_tables(
    main: Callable[[list[str]], int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    made = hand_made_comparison(300)
    seen: dict[str, Any] = {}

    def fake_compare(symbols: Any = None, **kwargs: Any) -> Comparison:
        seen.update(kwargs, symbols=symbols)
        kwargs["progress"]("predict", 1, 2)
        kwargs["progress"]("predict", 2, 2)
        return made

    monkeypatch.setattr(compare_module, "compare", fake_compare)
    monkeypatch.setenv("COLUMNS", "240")
    out = tmp_path / "made"
    code = main(["compare", "--symbols", "AAPL", "MSFT,BTC/USD", "--out", str(out)])
    assert code == 0
    assert seen["symbols"] == ["AAPL", "MSFT", "BTC/USD"]
    assert seen["timeframe"] == "1d"
    printed = capsys.readouterr().out
    for text in ("per symbol", "per asset class", "portfolio", "asset-specific", "Δ"):
        assert text in printed
    for symbol in MADE_SYMBOLS:
        assert symbol in printed
    assert "+10.00 pp" in printed  # AAPL: 20% against 10%
    assert str(out / "report.html") in printed.replace("\n", "")
    assert {p.name for p in out.iterdir()} == FILES


def test_default_out_is_a_timestamped_folder_under_results(
    main: Callable[[list[str]], int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(compare_module, "compare", lambda *a, **k: hand_made_comparison(50))
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert re.fullmatch(r"results/compare-\d{8}T\d{6}Z(-\d+)?", payload["out"])
    assert {p.name for p in (tmp_path / payload["out"]).iterdir()} == FILES
    leftovers = [p.name for p in (tmp_path / "results").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_out_is_replaced_only_when_it_holds_a_previous_comparison(
    main: Callable[[list[str]], int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(compare_module, "compare", lambda *a, **k: hand_made_comparison(50))
    out = tmp_path / "out"
    assert main(["compare", "--out", str(out), "--json"]) == 0
    assert main(["compare", "--out", str(out), "--json"]) == 0  # a rerun replaces it
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["compare", "--out", str(out), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert "notes.txt" in captured.err
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--symbols", "NOT A SYMBOL!"], "NOT A SYMBOL!"),
        (["--symbols", "AAPL,TSLA"], "TSLA"),  # classified, but no bundled bars
        (["--symbols", "AAPL", "--start", "2030-01-01"], "AAPL"),  # nothing in range
        (["--symbols", "AAPL", "--start", "2012-01-01", "--end", "2011-01-01"], ""),
        (["--symbols", ","], "symbol"),
    ],
    ids=["bad-symbol", "no-bars", "empty-range", "start-after-end", "empty-list"],
)
def test_errors_are_one_line_and_exit_2_without_a_report(
    main: Callable[[list[str]], int],
    args: list[str],
    needle: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "never"
    code = main(["compare", *args, "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("modelyard: ")
    assert needle in lines[0]
    assert captured.out == ""
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_compare_flags_the_window_the_models_were_trained_on(
    small_run: tuple[dict[str, Any], Path, str],
) -> None:
    """SMALL scores 2012-06..2015-06: AAPL's models stopped training at the end of 2009
    (out of sample), BTC/USD's trained until mid-2018 (in sample)."""
    from modelyard.config import load_config
    from modelyard.models.cards import read_card

    payload, _out, stderr = small_run
    config = load_config()
    expected = []
    for model_id in ("crypto_v1", "universal_v1"):
        card = read_card(config.models[model_id].path)
        assert card is not None
        assert card.windows["BTC/USD"][1] > "2015-06-30"
        expected.append(
            f"{model_id} was trained on bars this run scores: "
            f"BTC/USD (trained to {card.windows['BTC/USD'][1][:10]})"
        )
    assert [note.split(";")[0] for note in payload["in_sample"]] == expected
    assert stderr.count("warning: ") == len(expected)


def test_compare_defaults_to_each_class_out_of_sample_window(
    main: Callable[[list[str]], int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from modelyard.config import load_config

    oos = {k: v.oos_start for k, v in load_config().asset_classes.items()}
    real = compare_module.compare
    seen: dict[str, pd.DataFrame] = {}

    def spy(*args: Any, **kwargs: Any) -> Comparison:
        seen.update(kwargs["bars"])
        return real(*args, **kwargs)

    monkeypatch.setattr(compare_module, "compare", spy)
    out = tmp_path / "oos"
    assert main(["compare", "--symbols", "MSFT,ETH/USD", "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["in_sample"] == []
    assert "warning" not in captured.err
    assert seen["MSFT"].index[0] == pd.Timestamp("2010-01-04 21:00", tz="UTC")
    assert seen["MSFT"].index[0] >= pd.Timestamp(oos["equities"], tz="UTC")
    assert seen["ETH/USD"].index[0] == pd.Timestamp(oos["crypto"], tz="UTC")
