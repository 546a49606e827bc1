"""Fault injection: what can go wrong between a client and Alpaca, on demand.

Add a fault with ``emu.faults.add(kind, *, path=None, client_order_id=None, count=1, **params)``
or ``POST /_emulator/faults`` with the same fields as JSON (``DELETE /_emulator/faults`` clears,
``GET`` lists). ``count`` is how many requests or events the fault hits (``None``: until
cleared). ``path`` restricts an HTTP fault to one path (``/v2/orders``) or a prefix
(``/v2/orders*``); ``client_order_id`` to one order. Kinds:

HTTP (applied in the server middleware)
    ``rate_limit``        429 with Alpaca's JSON body (code 42910000)
    ``server_error``      ``status`` (default 500); ``body="json"`` or ``"html"`` (a gateway page)
    ``accept_then_504``   the request is processed (the order exists) but the answer is a 504
    ``delay``             sleep ``seconds`` (default 5) before answering
    ``drop_connection``   process, then close the socket ``mode="after_headers"`` or
                          ``"partial_body"``
    ``reject``            synchronous ``status`` 422 (code 40010001) or 403 (code 40310000)
Orders and trade_updates
    ``stream_reject``       accepted (``new``), then ``rejected`` on the stream
    ``partial_then_expire`` ``new``, ``partial_fill`` of ``fraction`` (0.5), then ``expired``
    ``cancel_race``         a DELETE finds the order filled just before: 422 (code 42210000)
    ``duplicate_event``     the next ``count`` trade events are sent twice (same execution_id)
Websockets and clock (state-like: active until cleared, ``count`` ignored)
    ``ws_drop``       close the current ``stream`` connections (``trading``/``stock``/``crypto``/
                      ``all``) at once; clients reconnect, events in between are lost
    ``ws_mute``       connections stay open but nothing is sent on ``stream``; with
                      ``symbols`` (a list), only those symbols' bars are left out and the rest
                      flows (a venue that skips one symbol's messages)
    ``ws_slow_subscribe`` a bars subscription on ``stream`` takes effect (and is acknowledged)
                      ``seconds`` (default 1) after it arrives; bars published before are not
                      sent on that connection, as with a subscription still in flight
    ``market_closed`` ``GET /v2/clock`` says closed

``script(client_order_id, steps)`` plays exact trade-update sequences (``new``,
``partial_fill:0.4``, ``fill``, ``canceled``, ``expired``, ``rejected``) for one order, one step
every ``interval`` seconds after the order is accepted, at the symbol's last price.
"""

from __future__ import annotations

import difflib
import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelyard.errors import ConfigError

__all__ = ["FAULT_KINDS", "Fault", "FaultPlan"]

HTTP_KINDS = frozenset(
    {"rate_limit", "server_error", "accept_then_504", "delay", "drop_connection", "reject"}
)
ORDER_KINDS = frozenset({"stream_reject", "partial_then_expire", "cancel_race", "duplicate_event"})
STREAM_KINDS = frozenset({"ws_drop", "ws_mute", "ws_slow_subscribe"})  # take ``stream``
STATE_KINDS = STREAM_KINDS | {"market_closed"}
FAULT_KINDS = HTTP_KINDS | ORDER_KINDS | STATE_KINDS
STREAMS = ("trading", "stock", "crypto", "all")
SCRIPT_STEPS = ("new", "partial_fill", "fill", "canceled", "expired", "rejected")


@dataclass
class Fault:
    id: int
    kind: str
    path: str | None
    client_order_id: str | None
    remaining: int | None
    params: dict[str, Any] = field(default_factory=dict)

    def matches_path(self, path: str) -> bool:
        if self.path is None:
            return True
        if self.path.endswith("*"):
            return path.startswith(self.path[:-1])
        return path == self.path

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "path": self.path,
            "client_order_id": self.client_order_id,
            "count": self.remaining,
            **self.params,
        }


def _check_kind(kind: str) -> None:
    if kind in FAULT_KINDS:
        return
    close = difflib.get_close_matches(kind, sorted(FAULT_KINDS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"unknown fault kind {kind!r}.{hint} Known: {sorted(FAULT_KINDS)}", key="kind"
    )


def _check_steps(steps: Sequence[str]) -> list[str]:
    out = []
    for step in steps:
        name, _, arg = step.partition(":")
        if name not in SCRIPT_STEPS:
            close = difflib.get_close_matches(name, SCRIPT_STEPS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown script step {step!r}.{hint}", key="steps")
        if name == "partial_fill":
            try:
                fraction = float(arg)
            except ValueError as exc:
                raise ConfigError(f"{step!r}: write partial_fill:0.4", key="steps") from exc
            if not 0.0 < fraction < 1.0:
                raise ConfigError(f"{step!r}: fraction must be in (0, 1)", key="steps")
        out.append(step)
    return out


class FaultPlan:
    """The faults armed on one emulator. Thread-safe; shared by the server and Python callers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._scripts: dict[str, tuple[list[str], float]] = {}
        self._ids = itertools.count(1)
        self._on_add: Callable[[Fault], None] | None = None

    def add(
        self,
        kind: str,
        *,
        path: str | None = None,
        client_order_id: str | None = None,
        count: int | None = 1,
        **params: Any,
    ) -> Fault:
        """Arm a fault (see the module docstring for the kinds and their ``params``)."""
        _check_kind(kind)
        if count is not None and count < 1:
            raise ConfigError(f"count must be >= 1 or None, got {count}", key="count")
        stream = params.get("stream", "all")
        if kind in STREAM_KINDS and stream not in STREAMS:
            raise ConfigError(f"stream must be one of {STREAMS}, got {stream!r}", key="stream")
        if kind == "ws_mute" and "symbols" in params:
            symbols = params["symbols"]
            if (
                not isinstance(symbols, list | tuple)
                or not symbols
                or not all(isinstance(x, str) for x in symbols)
            ):
                raise ConfigError(
                    f"ws_mute symbols must be a non-empty list of symbols, got {symbols!r}",
                    key="symbols",
                )
            params = {**params, "symbols": sorted(symbols)}
        if kind in ("stream_reject", "partial_then_expire") and client_order_id is None:
            raise ConfigError(f"{kind} needs client_order_id", key="client_order_id")
        interval = float(params.get("interval", 0.02))
        if kind == "stream_reject":
            self.script(str(client_order_id), ["new", "rejected"], interval=interval)
        elif kind == "partial_then_expire":
            fraction = float(params.get("fraction", 0.5))
            steps = ["new", f"partial_fill:{fraction}", "expired"]
            self.script(str(client_order_id), steps, interval=interval)
        with self._lock:
            remaining = None if kind in STATE_KINDS else count
            fault = Fault(next(self._ids), kind, path, client_order_id, remaining, dict(params))
            if kind != "ws_drop" and kind not in ("stream_reject", "partial_then_expire"):
                self._faults.append(fault)
        if self._on_add is not None:
            self._on_add(fault)
        return fault

    def script(self, client_order_id: str, steps: Sequence[str], *, interval: float = 0.02) -> None:
        """Play ``steps`` as the trade updates of the order with this ``client_order_id``."""
        checked = _check_steps(steps)
        with self._lock:
            self._scripts[client_order_id] = (checked, interval)

    def remove(self, fault_id: int) -> None:
        with self._lock:
            self._faults = [f for f in self._faults if f.id != fault_id]

    def clear(self) -> None:
        """Disarm every fault and script."""
        with self._lock:
            self._faults.clear()
            self._scripts.clear()

    def armed(self) -> list[dict[str, Any]]:
        """The armed faults as JSON-able dicts."""
        with self._lock:
            return [f.to_json() for f in self._faults]

    # -- used by the venue -------------------------------------------------------------------
    def take(
        self,
        kinds: frozenset[str] | set[str],
        *,
        path: str | None = None,
        client_order_id: str | None = None,
    ) -> Fault | None:
        """Consume one hit of the first armed fault of ``kinds`` matching the request."""
        with self._lock:
            for fault in self._faults:
                if fault.kind not in kinds:
                    continue
                if path is not None and not fault.matches_path(path):
                    continue
                if fault.client_order_id is not None and fault.client_order_id != client_order_id:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault
        return None

    def _armed(self, kind: str, stream: str | None) -> Fault | None:
        """The first armed ``kind`` fault on ``stream`` (``None``: any stream)."""
        with self._lock:
            for f in self._faults:
                if f.kind == kind and (
                    stream is None or f.params.get("stream", "all") in (stream, "all")
                ):
                    return f
        return None

    def active(self, kind: str, stream: str | None = None) -> bool:
        return self._armed(kind, stream) is not None

    def muted(self, stream: str) -> tuple[bool, frozenset[str]]:
        """The ``ws_mute`` faults armed on ``stream``: (every data frame muted, the symbols
        whose bars are muted)."""
        whole, symbols = False, set()
        with self._lock:
            for f in self._faults:
                if f.kind == "ws_mute" and f.params.get("stream", "all") in (stream, "all"):
                    if "symbols" in f.params:
                        symbols.update(f.params["symbols"])
                    else:
                        whole = True
        return whole, frozenset(symbols)

    def param(
        self, kind: str, name: str, default: float, stream: str | None = None
    ) -> float | None:
        """``name`` of the first armed ``kind`` fault on ``stream`` (its ``default`` when the fault
        does not say), or ``None`` when no such fault is armed."""
        fault = self._armed(kind, stream)
        return None if fault is None else float(fault.params.get(name, default))

    def pop_script(self, client_order_id: str) -> tuple[list[str], float] | None:
        with self._lock:
            return self._scripts.pop(client_order_id, None)

    def set_on_add(self, callback: Callable[[Fault], None] | None) -> None:
        self._on_add = callback
