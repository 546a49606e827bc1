"""`modelyard emulator serve`: a venue the real alpaca-py client can use; Ctrl-C stops it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from alpaca.trading.client import TradingClient


def test_emulator_serve_from_the_cli() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelyard.cli",
            "emulator",
            "serve",
            "--symbols",
            "AAPL,BTC/USD",
            "--speed",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("REST (url_override)"), first
        base_url = first.split()[-1]
        lines = [proc.stdout.readline() for _ in range(4)]
        keys = dict(part.split("=", 1) for part in lines[3].split() if "=" in part)
        client = TradingClient(
            keys["APCA_API_KEY_ID"], keys["APCA_API_SECRET_KEY"], paper=True, url_override=base_url
        )
        account = client.get_account()
        assert float(account.cash) == 100_000.0
        asset = client.get_asset("BTC/USD")
        assert asset.symbol == "BTC/USD"
    finally:
        proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
    out, err = proc.communicate(timeout=5)
    assert proc.returncode == 0, err
    assert "emulator stopped" in out
