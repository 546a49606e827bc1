"""`modelyard backtest`: a bundled run end to end, and one-line errors with a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import modelyard.cli as cli
from modelyard.strategies.results import Result
from tests.integration.conftest_backtest import calibrated_registry


@pytest.fixture
def with_backtest() -> None:
    """``backtest`` is registered in cli.py; kept as a fixture so the tests read the same."""
    assert "backtest" in cli._build_parser().format_help()


@pytest.fixture
def config_path(tmp_path: Path, base_config_dict: dict[str, Any]) -> Path:
    return calibrated_registry(tmp_path / "registry", base_config_dict)


def test_backtest_writes_a_result_folder_and_prints_json(
    with_backtest: None,
    config_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_flag_env: None,
) -> None:
    out = tmp_path / "run"
    code = cli.main(
        [
            "backtest",
            "--symbols",
            "AAPL,BTC/USD",
            "--start",
            "2012-06-01",
            "--end",
            "2015-06-30",
            "--asset-specific",
            "--config",
            str(config_path),
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["out"] == str(out)
    assert [(r["symbol"], r["model_id"]) for r in payload["routes"]] == [
        ("AAPL", "equities_v1"),
        ("BTC/USD", "crypto_v1"),
    ]
    saved = Result.load(out)
    assert saved.stats == payload["stats"]
    assert saved.stats["n_trades"] > 0
    assert saved.config["run"]["symbols"] == ["AAPL", "BTC/USD"]


def test_backtest_prints_tables(
    with_backtest: None,
    config_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_flag_env: None,
) -> None:
    args = ["backtest", "--symbols", "MSFT", "--start", "2010-01-01", "--end", "2010-12-31"]
    code = cli.main([*args, "--config", str(config_path), "--out", str(tmp_path / "r")])
    assert code == 0
    out = capsys.readouterr().out
    assert "statistics" in out
    assert "sharpe" in out
    assert "routes" in out
    assert "universal_v1" in out
    assert "flag_off" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--symbols", "NOPE_XX"], "not bundled"),
        (["--symbols", "AAPL", "--start", "2030-01-01"], "no bars between"),
        (["--symbols", "AAPL", "--start", "2012-01-01", "--end", "2011-01-01"], "after end"),
        (["--symbols", "AAPL", "--timeframe", "1h"], "no bundled '1h' bars"),
        (["--symbols", ","], "empty symbol list"),
    ],
)
def test_backtest_errors_are_one_line_and_exit_2(
    with_backtest: None,
    config_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    code = cli.main(["backtest", *argv, "--config", str(config_path), "--out", str(tmp_path / "x")])
    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("modelyard: ")
    assert message in lines[0]
    assert not (tmp_path / "x").exists()
