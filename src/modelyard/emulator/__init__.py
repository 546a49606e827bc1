"""A local Alpaca venue on 127.0.0.1 for the real alpaca-py client, with fault injection.

Users rehearse offline with it; the tests drive alpaca-py against it unmodified::

    from alpaca.trading.client import TradingClient
    from modelyard.emulator import Emulator

    with Emulator(bars, speed=0) as emu:
        client = TradingClient(emu.key_id, emu.secret_key, paper=True, url_override=emu.base_url)
        ...
        emu.advance(1)                       # next bar: market orders fill at its open
        emu.faults.add("rate_limit", count=4)

Built on aiohttp: one dependency gives the HTTP server, the websocket server and the client in
one asyncio loop, which runs in a daemon thread for the context manager (no uvicorn process
model). Modules: ``runtime`` (``Emulator``, ``serve``), ``server`` (REST app, middleware),
``streams`` (websockets), ``matching`` (orders), ``state`` (account), ``marketdata`` (bars and
pagination), ``clock`` (virtual clock, market hours), ``faults``.
"""

from modelyard.emulator.faults import FAULT_KINDS, Fault, FaultPlan
from modelyard.emulator.runtime import Emulator, serve

__all__ = ["FAULT_KINDS", "Emulator", "Fault", "FaultPlan", "serve"]
