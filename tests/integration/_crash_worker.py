"""A paper-trading process that SIGKILLs itself at a named stage (used by the crash tests).

``python _crash_worker.py JOURNAL BASE_URL DECISION_TS`` with ``CRASH_POINT`` (``intent_written``
or ``posted``) and the emulator's keys in ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY``: opens the
journal and the client, submits one AAPL buy and kills itself at that stage.
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import datetime

from modelyard.brokers import AlpacaClient, Journal, OrderExecutor, RiskConfig, RiskEngine


def main() -> None:
    journal_path, base_url, decision_ts = sys.argv[1:4]
    crash_point = os.environ["CRASH_POINT"]

    def hook(stage: str, client_order_id: str) -> None:
        if stage == crash_point:
            os.kill(os.getpid(), signal.SIGKILL)

    journal = Journal(journal_path)
    client = AlpacaClient(url_override=base_url)
    risk = RiskEngine(RiskConfig(), journal)
    executor = OrderExecutor(journal, client, risk, "crashy", stage_hook=hook)
    executor.submit(
        "AAPL", "buy", qty=3, price=380.0, decision_bar_ts=datetime.fromisoformat(decision_ts)
    )
    sys.exit(3)  # the crash point was never reached


if __name__ == "__main__":
    main()
