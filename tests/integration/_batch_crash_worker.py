"""A paper-trading process that SIGKILLs itself in the middle of a batch (the batch crash test).

``python _batch_crash_worker.py JOURNAL BASE_URL DECISION_TS N`` with ``CRASH_AFTER_POSTS`` (k)
and the emulator's keys in ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY``: submits one batch of
N one-share buys (AAPL and MSFT alternately) on 3 POST workers and kills itself when the k-th
POST has been answered: some orders are at the venue, some in flight, the rest never sent.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from datetime import datetime

from modelyard.brokers import AlpacaClient, Journal, OrderExecutor, RiskConfig, RiskEngine
from modelyard.brokers.executor import OrderRequest


def main() -> None:
    journal_path, base_url, decision_ts, count = sys.argv[1:5]
    crash_after = int(os.environ["CRASH_AFTER_POSTS"])
    posted: list[str] = []
    lock = threading.Lock()

    def hook(stage: str, client_order_id: str) -> None:
        if stage == "posted":
            with lock:
                posted.append(client_order_id)
                if len(posted) == crash_after:
                    os.kill(os.getpid(), signal.SIGKILL)

    journal = Journal(journal_path)
    client = AlpacaClient(url_override=base_url)
    risk = RiskEngine(RiskConfig(), journal)
    executor = OrderExecutor(
        journal, client, risk, "crashy", stage_hook=hook, post_workers=3,
        client_factory=lambda: AlpacaClient(url_override=base_url),
    )  # fmt: skip
    bar = datetime.fromisoformat(decision_ts)
    executor.submit_many(
        [
            OrderRequest(("AAPL", "MSFT")[i % 2], "buy", bar, qty=1, price=380.0)
            for i in range(int(count))
        ]
    )
    sys.exit(3)  # the crash point was never reached


if __name__ == "__main__":
    main()
