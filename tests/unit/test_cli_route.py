"""`modelyard route`: table, JSON, flag overrides, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from modelyard.cli import main


def test_route_json_lists_decision_fields(
    registry_dir: Path, capsys: pytest.CaptureFixture[str], no_flag_env: None
) -> None:
    code = main(
        [
            "route",
            "AAPL,BTC-USD",
            "SPY240119C00450000",
            "--json",
            "--asset-specific",
            "--config",
            str(registry_dir / "assets.yaml"),
        ]
    )
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [set(r) for r in rows] == [
        {"symbol", "canonical", "asset_class", "model_id", "model_sha256", "reason"}
    ] * 3
    assert [(r["symbol"], r["canonical"], r["model_id"], r["reason"]) for r in rows] == [
        ("AAPL", "AAPL", "equities_v1", "asset_specific"),
        ("BTC-USD", "BTC/USD", "crypto_v1", "asset_specific"),
        ("SPY240119C00450000", "SPY240119C00450000", "universal_v1", "missing"),
    ]


def test_universal_flag_overrides_environment(
    registry_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLAG_ASSET_SPECIFIC_MODELS", "1")
    main(["route", "AAPL", "--json", "--universal", "--config", str(registry_dir / "assets.yaml")])
    assert json.loads(capsys.readouterr().out)[0]["reason"] == "flag_off"


def test_route_reports_while_model_files_are_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], base_config_dict: dict[str, object]
) -> None:
    import yaml

    (tmp_path / "assets.yaml").write_text(yaml.safe_dump(base_config_dict))
    assert (
        main(["route", "AAPL", "--asset-specific", "--config", str(tmp_path / "assets.yaml")]) == 0
    )
    out = capsys.readouterr().out
    assert "missing" in out
    assert "universal_v1" in out


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelyard.cli", *args], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("route", "AAPL", "--bogus"), "unrecognized arguments: --bogus"),
        (("route", "AAPL", "--config", "/nonexistent/assets.yaml"), "file not found"),
        (("route", ""), "empty symbol list"),
        (("frobnicate",), "invalid choice: 'frobnicate'"),
    ],
)
def test_errors_are_one_line_without_traceback(args: tuple[str, ...], fragment: str) -> None:
    result = _run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "assets.yaml"
    bad.write_text("universal: u\nmodles: {}\n")
    result = _run("route", "AAPL", "--config", str(bad))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "did you mean 'models'" in result.stderr
