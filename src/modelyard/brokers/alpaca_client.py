"""``AlpacaClient``: the one place that talks to alpaca-py's ``TradingClient``.

* Keys come from the arguments or from ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY``; they never
  reach a log line or ``repr``. Paper is the default; live needs ``live=True``.
* alpaca-py sets no HTTP timeout: every request gets ``(connect, read)`` timeouts through an
  adapter mounted on its session. alpaca-py's own retry (3 x 3 s on 429/504, POST included) is
  switched off; ours is a jittered exponential backoff on 429, 5xx, timeouts and connection
  errors, bounded in attempts and in total time.
* ``POST /v2/orders`` is never blindly retried: after a timeout, a dropped connection or a 5xx
  the order may exist, so :class:`OutcomeUnknown` is raised and the caller resolves it with
  ``GET /v2/orders:by_client_order_id``. A 429 (refused before processing) and a connect
  timeout (nothing sent) are retried.
* alpaca-py's ``requests`` session reads its environment settings (proxies, CA bundle,
  ``.netrc``) once, at construction (:func:`freeze_environment`), not on every request.
* Vendor exceptions are mapped with ``raise ... from exc``: 4xx -> :class:`OrderRejected`
  (never retried), 429/5xx/timeouts -> :class:`BrokerUnavailable` after the retries.
  ``APIError.status_code`` is read before ``.code``/``.message`` (an HTML body makes those
  raise ``JSONDecodeError``).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import GetOrdersRequest, LimitOrderRequest, MarketOrderRequest

from modelyard._http import TimeoutAdapter
from modelyard.errors import BrokerUnavailable, ConfigError, OrderRejected

__all__ = [
    "AccountInfo",
    "AlpacaClient",
    "AssetInfo",
    "BrokerOrder",
    "ClockInfo",
    "OutcomeUnknown",
    "RetryPolicy",
    "freeze_environment",
    "resolve_keys",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")
KEY_ENV = "APCA_API_KEY_ID"
SECRET_ENV = "APCA_API_SECRET_KEY"


def resolve_keys(key_id: str | None, secret_key: str | None) -> tuple[str, str]:
    """Explicit keys, else ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY`` (alpaca-py reads
    neither); ``ConfigError`` naming the variables when either is missing."""
    key = key_id if key_id is not None else os.environ.get(KEY_ENV)
    secret = secret_key if secret_key is not None else os.environ.get(SECRET_ENV)
    if not key or not secret:
        raise ConfigError(f"Alpaca keys missing: set {KEY_ENV} and {SECRET_ENV}", key=KEY_ENV)
    return key, secret


_TRANSPORT_ERRORS = (
    requests.exceptions.Timeout,
    requests.exceptions.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
)


class OutcomeUnknown(BrokerUnavailable):
    """A POST whose outcome is unknown (timeout, 5xx, dropped connection): the order may exist.

    Resolve it with ``get_order_by_client_id``; never resend blindly.
    """


@dataclass(frozen=True)
class RetryPolicy:
    """Timeouts and the backoff of retried calls (seconds)."""

    connect_timeout: float = 3.05
    read_timeout: float = 10.0
    max_attempts: int = 6
    base_delay: float = 0.25
    max_delay: float = 4.0
    total_time: float = 30.0


@dataclass(frozen=True)
class BrokerOrder:
    """The fields of an Alpaca order the journal needs, parsed from its JSON."""

    id: str
    client_order_id: str
    symbol: str
    side: str
    status: str
    qty: float | None
    notional: float | None
    filled_qty: float
    filled_avg_price: float | None
    order_type: str
    time_in_force: str
    limit_price: float | None

    @classmethod
    def from_json(cls, raw: Any) -> BrokerOrder:
        def get(name: str) -> Any:
            return raw.get(name) if isinstance(raw, dict) else getattr(raw, name, None)

        return cls(
            id=str(get("id")),
            client_order_id=str(get("client_order_id")),
            symbol=str(get("symbol")),
            side=_enum_text(get("side")),
            status=_enum_text(get("status")),
            qty=_float(get("qty")),
            notional=_float(get("notional")),
            filled_qty=_float(get("filled_qty")) or 0.0,
            filled_avg_price=_float(get("filled_avg_price")),
            order_type=_enum_text(get("type") or get("order_type")),
            time_in_force=_enum_text(get("time_in_force")),
            limit_price=_float(get("limit_price")),
        )


@dataclass(frozen=True)
class AccountInfo:
    equity: float
    last_equity: float
    cash: float
    buying_power: float


@dataclass(frozen=True)
class ClockInfo:
    timestamp: datetime
    is_open: bool


@dataclass(frozen=True)
class AssetInfo:
    symbol: str
    asset_class: str
    tradable: bool
    fractionable: bool
    min_order_size: float | None
    min_trade_increment: float | None


def _enum_text(value: Any) -> str:
    return str(getattr(value, "value", value) or "")


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    return float(value)


def _parse_time(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def freeze_environment(session: requests.Session, url: str) -> None:
    """Read once what ``requests`` reads from the environment on every request of ``session``
    to ``url``'s host (proxies and ``NO_PROXY``, the CA bundle, ``.netrc`` credentials), then
    stop reading it (``trust_env=False``). Same settings, as long as the environment does not
    change while the process runs; a request costs about a quarter less CPU (two scans of
    ``os.environ`` per request): interpreter time the bar -> POST path shares."""
    if not session.trust_env:
        return
    settings = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies = {k: v for k, v in settings["proxies"].items() if v is not None}
    session.verify = settings["verify"]
    if session.auth is None:
        session.auth = requests.utils.get_netrc_auth(url)
    session.trust_env = False


def _api_error_details(exc: APIError) -> tuple[int | None, int | None, str]:
    """``(status, code, message)``; status first: an HTML body breaks ``.code``/``.message``."""
    status = exc.status_code
    try:
        code: int | None = int(exc.code)
        message = str(exc.message)
    except (ValueError, KeyError, TypeError):  # JSONDecodeError is a ValueError
        code = None
        message = " ".join(str(exc).split())[:200]
    return status, code, message


class AlpacaClient:
    """Typed, timed, retried access to Alpaca's trading REST API (or the emulator's)."""

    def __init__(
        self,
        key_id: str | None = None,
        secret_key: str | None = None,
        *,
        live: bool = False,
        url_override: str | None = None,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        key, secret = resolve_keys(key_id, secret_key)
        self.live = live
        self.url_override = url_override
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._rng = random.Random()
        try:
            self._client = TradingClient(
                key, secret, paper=not live, raw_data=True, url_override=url_override
            )
        except ValueError as exc:  # alpaca-py's credential check; its message holds no keys
            raise ConfigError(f"Alpaca client: {exc}", key=KEY_ENV) from exc
        self._client._retry = 0
        self._client._retry_wait = 0
        adapter = TimeoutAdapter((self.policy.connect_timeout, self.policy.read_timeout))
        self._client._session.mount("http://", adapter)
        self._client._session.mount("https://", adapter)
        freeze_environment(self._client._session, str(self._client._base_url))
        # attempts per endpoint, e.g. request_counts["POST /v2/orders"]
        self.request_counts: Counter[str] = Counter()
        where = url_override or ("live" if live else "paper")
        logger.info("Alpaca trading client for %s", where)

    def __repr__(self) -> str:
        mode = "live" if self.live else "paper"
        return f"AlpacaClient({mode}, url_override={self.url_override!r})"

    def close(self) -> None:
        self._client._session.close()

    def __enter__(self) -> AlpacaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the retry loop ----------------------------------------------------------------------
    def _call(self, what: str, func: Callable[[], T], *, post: bool = False) -> T:
        policy = self.policy
        deadline = time.monotonic() + policy.total_time
        attempt = 0
        while True:
            attempt += 1
            self.request_counts[" ".join(what.split(" ")[:2]).split("?")[0]] += 1
            try:
                return func()
            except APIError as exc:
                status, code, message = _api_error_details(exc)
                if status is not None and status != 429 and status < 500:
                    raise OrderRejected(
                        f"{what}: HTTP {status} (code {code}): {message}", status=status, code=code
                    ) from exc
                if post and status != 429:
                    raise OutcomeUnknown(
                        f"{what}: HTTP {status}: {message}", status=status
                    ) from exc
                failure: Exception = exc
                last = f"HTTP {status}: {message}"
            except _TRANSPORT_ERRORS as exc:
                never_sent = isinstance(exc, requests.exceptions.ConnectTimeout)
                if post and not never_sent:
                    raise OutcomeUnknown(f"{what}: {type(exc).__name__}") from exc
                failure, status, last = exc, None, type(exc).__name__
            except ValueError as exc:  # a 2xx answer whose body is not JSON
                if post:
                    raise OutcomeUnknown(f"{what}: unreadable answer") from exc
                failure, status, last = exc, None, "unreadable answer"
            delay = self._rng.uniform(0.5, 1.0) * min(
                policy.max_delay, policy.base_delay * 2 ** (attempt - 1)
            )
            if attempt >= policy.max_attempts or time.monotonic() + delay > deadline:
                raise BrokerUnavailable(
                    f"{what}: gave up after {attempt} attempts ({last})", status=status
                ) from failure
            logger.warning("%s: %s; retry %d in %.2fs", what, last, attempt, delay)
            self._sleep(delay)

    # -- reads -------------------------------------------------------------------------------
    def get_account(self) -> AccountInfo:
        raw = self._call("GET /v2/account", self._client.get_account)
        assert isinstance(raw, dict)
        return AccountInfo(
            equity=float(raw["equity"]),
            last_equity=float(raw.get("last_equity") or raw["equity"]),
            cash=float(raw["cash"]),
            buying_power=float(raw["buying_power"]),
        )

    def get_clock(self) -> ClockInfo:
        raw = self._call("GET /v2/clock", self._client.get_clock)
        assert isinstance(raw, dict)
        return ClockInfo(timestamp=_parse_time(raw["timestamp"]), is_open=bool(raw["is_open"]))

    def get_asset(self, symbol: str) -> AssetInfo:
        raw = self._call(f"GET /v2/assets/{symbol}", lambda: self._client.get_asset(symbol))
        assert isinstance(raw, dict)
        return AssetInfo(
            symbol=str(raw["symbol"]),
            asset_class=str(raw.get("class", "")),
            tradable=bool(raw.get("tradable", True)),
            fractionable=bool(raw.get("fractionable", False)),
            min_order_size=_float(raw.get("min_order_size")),
            min_trade_increment=_float(raw.get("min_trade_increment")),
        )

    def get_positions(self) -> dict[str, float]:
        """Quantity by Alpaca position symbol (``AAPL``, ``BTCUSD``). Raises, never returns {}
        for a failed call."""
        return {symbol: qty for symbol, (qty, _) in self.get_position_details().items()}

    def get_position_details(self) -> dict[str, tuple[float, float]]:
        """``(quantity, average entry price)`` by Alpaca position symbol (the price 0.0 when
        the venue gives none). Raises, never returns {} for a failed call."""
        raw: Any = self._call("GET /v2/positions", self._client.get_all_positions)
        if not isinstance(raw, list):
            raise BrokerUnavailable(f"GET /v2/positions: unexpected answer {type(raw).__name__}")
        return {
            str(p["symbol"]): (float(p["qty"]), _float(p.get("avg_entry_price")) or 0.0)
            for p in raw
        }

    def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        """The order with this ``client_order_id``, or ``None`` when the venue says 404."""
        what = f"GET /v2/orders:by_client_order_id {client_order_id}"
        try:
            raw = self._call(what, lambda: self._client.get_order_by_client_id(client_order_id))
        except OrderRejected as exc:
            if exc.status == 404:
                return None
            raise
        return BrokerOrder.from_json(raw)

    def list_orders(
        self, status: Literal["open", "closed", "all"] = "open", *, limit: int = 500
    ) -> list[BrokerOrder]:
        query = GetOrdersRequest(status=QueryOrderStatus(status), limit=limit)
        raw = self._call(f"GET /v2/orders?status={status}", lambda: self._client.get_orders(query))
        if not isinstance(raw, list):
            raise BrokerUnavailable(f"GET /v2/orders: unexpected answer {type(raw).__name__}")
        return [BrokerOrder.from_json(o) for o in raw]

    # -- writes ------------------------------------------------------------------------------
    def submit_order(
        self,
        symbol: str,
        side: Literal["buy", "sell"],
        *,
        client_order_id: str,
        qty: float | None = None,
        notional: float | None = None,
        order_type: Literal["market", "limit"] = "market",
        limit_price: float | None = None,
        time_in_force: str = "day",
    ) -> BrokerOrder:
        """POST /v2/orders once. Raises :class:`OutcomeUnknown` when the order may exist."""
        fields: dict[str, Any] = {
            "symbol": symbol,
            "side": OrderSide(side),
            "time_in_force": TimeInForce(time_in_force),
            "client_order_id": client_order_id,
        }
        if qty is not None:
            fields["qty"] = qty
        if notional is not None:
            fields["notional"] = notional
        request: MarketOrderRequest | LimitOrderRequest
        if order_type == "limit":
            request = LimitOrderRequest(limit_price=limit_price, **fields)
        else:
            request = MarketOrderRequest(**fields)
        what = f"POST /v2/orders {client_order_id}"
        raw = self._call(what, lambda: self._client.submit_order(request), post=True)
        return BrokerOrder.from_json(raw)

    def cancel_order(self, order_id: str) -> None:
        """DELETE /v2/orders/{id}; a 422 (already filled/canceled) raises ``OrderRejected``."""
        self._call(
            f"DELETE /v2/orders/{order_id}", lambda: self._client.cancel_order_by_id(order_id)
        )
