"""``modelyard paper`` as a subprocess against its own emulator (``--emulator``)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from modelyard.strategies.results import Result


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a parent such as nohup passes on


def _start(tmp_path: Path, *args: str, ignore_sigint: bool = False) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APCA_")}
    cmd = [sys.executable, "-m", "modelyard.cli", "paper", "--emulator"]
    cmd += ["--out", str(tmp_path / "out")]
    cmd += ["--journal", str(tmp_path / "journal.db"), *args]
    return subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_ignore_sigint if ignore_sigint else None,
    )  # fmt: skip


def _journal(tmp_path: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(tmp_path / "journal.db") as db:
        return db.execute("SELECT state, reason FROM orders").fetchall()


def _run(tmp_path: Path, *args: str) -> tuple[str, dict[str, object]]:
    proc = _start(tmp_path, *args)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err[-3000:]
    run = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())["run"]
    return out, run


@pytest.mark.slow
def test_paper_emulator_session_end_to_end(tmp_path: Path) -> None:
    out, run = _run(tmp_path, "--duration", "15s", "--symbols", "AAPL,BTC/USD")
    assert "routes" in out
    assert "result written to" in out
    result = Result.load(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(Result.FILES)
    assert [r["symbol"] for r in result.routes] == ["AAPL", "BTC/USD"]
    rows = _journal(tmp_path)
    assert len(rows) > 0
    assert len(result.orders) > 0
    assert run["posts"] == run["emulator_orders"] == sum(1 for s, _ in rows if s != "failed")
    assert all(r for s, r in rows if s == "failed")


@pytest.mark.slow
def test_dry_run_sends_nothing(tmp_path: Path) -> None:
    _, run = _run(tmp_path, "--dry-run", "--duration", "6s", "--symbols", "BTC/USD")
    rows = _journal(tmp_path)
    assert rows, "a dry run journals what it would send"
    assert set(rows) == {("failed", "dry_run")}
    assert run["posts"] == 0
    assert run["emulator_orders"] == 0


@pytest.mark.slow
def test_sigint_stops_cleanly_even_when_the_parent_ignored_it(tmp_path: Path) -> None:
    proc = _start(tmp_path, "--duration", "5m", "--symbols", "BTC/USD", ignore_sigint=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (tmp_path / "journal.db").exists():
        time.sleep(0.1)
    time.sleep(3.0)  # streams up, a few bars traded
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-3000:]
    assert (tmp_path / "out" / "equity.csv").exists()
    rows = _journal(tmp_path)
    assert all(s in ("filled", "canceled", "failed") for s, _ in rows), rows


def test_duration_parsing() -> None:
    import argparse

    from modelyard._cli_paper import parse_duration

    assert [parse_duration(t) for t in ("30s", "5m", "1h", "2.5m", "12")] == [
        30.0, 300.0, 3600.0, 150.0, 12.0,
    ]  # fmt: skip
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration("5 minutes")
