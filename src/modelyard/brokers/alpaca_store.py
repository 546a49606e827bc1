"""``AlpacaStore``: Backtrader's store pattern on top of :class:`AlpacaClient`.

One store per account and strategy holds the connections and the order machinery::

    store = AlpacaStore(journal="paper.db")                  # keys from APCA_* , paper
    cerebro.setbroker(store.getbroker())
    cerebro.adddata(store.getdata("AAPL", "1min", backfill_bars=200), name="AAPL")
    cerebro.run()                                            # ... store.stop() ends it

* Keys come from ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY`` (or explicit arguments, e.g.
  the emulator's) and never reach a log line or ``repr``. Paper is the default; ``live=True``
  must be asked for.
* ``url_override`` (REST origin) and the three websocket URLs are overridable:
  :meth:`AlpacaStore.for_emulator` points everything at a local
  :class:`~modelyard.emulator.Emulator`.
* Bars of one kind (stocks, crypto) share one websocket (:class:`StreamSource`); REST history
  (:class:`AlpacaHistory`) backfills and fills gaps. Orders go through :class:`OrderExecutor`
  (risk -> journal -> POST; a bar's orders as one batch, POSTed concurrently, each POST worker
  with its own client and HTTP session from the store's keys); ``trade_updates`` arrive on a
  :class:`TradingStream` thread. A live bar starts the venue clock read its orders need and
  holds the trade updates until the broker's step is done (``TradeUpdateGate``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from modelyard.brokers.alpaca_client import AlpacaClient, RetryPolicy, resolve_keys
from modelyard.brokers.executor import OrderExecutor
from modelyard.brokers.journal import Journal
from modelyard.brokers.risk import RiskConfig, RiskEngine
from modelyard.errors import ConfigError
from modelyard.feeds.alpaca_history import AlpacaHistory
from modelyard.feeds.live import (
    AlpacaLiveData,
    BarChannel,
    BarHub,
    LiveBar,
    StreamSource,
    acknowledging,
    bars_from_frame,
    stop_stream,
)
from modelyard.feeds.resample import parse_timeframe
from modelyard.routing.classifier import AssetClassifier

if TYPE_CHECKING:
    from modelyard.brokers.bt_broker import AlpacaBroker
    from modelyard.emulator import Emulator

__all__ = ["AlpacaStore"]

logger = logging.getLogger(__name__)
_LIVE_STOCK_URL = "wss://stream.data.alpaca.markets/v2/iex"
_LIVE_CRYPTO_URL = "wss://stream.data.alpaca.markets/v1beta3/crypto/us"
# calendar days of history asked for per bar wanted (weekends, holidays, closed hours)
_SPAN = {"crypto": 1.2, "daily_equities": 1.6, "intraday_equities": 6.0}
#: channels whose REST starts lie within this many bars of each other share one bars request
BATCH_SPAN_BARS = 1_000


class _RedactKeys(logging.Filter):
    """Masks the keys in records of a logger that prints websocket frames (``websockets``
    logs the trading stream's authentication frame at DEBUG)."""

    def __init__(self, *secrets: str) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if any(s in text for s in self._secrets):
            for secret in self._secrets:
                text = text.replace(secret, "***")
            record.msg, record.args = text, ()
        return True


_FRAME_LOGGERS = ("websockets.client", "websockets.protocol", "websockets")


class AlpacaStore:
    """Connections, journal, risk and executor of one strategy on one Alpaca account."""

    def __init__(
        self,
        key_id: str | None = None,
        secret_key: str | None = None,
        *,
        journal: Journal | str | Path,
        live: bool = False,
        url_override: str | None = None,
        stock_stream_url: str | None = None,
        crypto_stream_url: str | None = None,
        trading_stream_url: str | None = None,
        strategy_id: str = "paper",
        risk: RiskConfig | None = None,
        policy: RetryPolicy | None = None,
        classifier: AssetClassifier | None = None,
        silence_timeout: float | None = None,
        reconnect_backoff: tuple[float, float] = (0.25, 10.0),
        dry_run: bool = False,
    ) -> None:
        key, secret = resolve_keys(key_id, secret_key)
        self._key_id, self._secret_key = key, secret
        self._redact = _RedactKeys(key, secret)
        for name in _FRAME_LOGGERS:
            logging.getLogger(name).addFilter(self._redact)
        self.live = live
        self.url_override = url_override
        self.stock_stream_url = stock_stream_url
        self.crypto_stream_url = crypto_stream_url
        self.trading_stream_url = trading_stream_url
        self.dry_run = dry_run
        self.silence_timeout = silence_timeout
        self.reconnect_backoff = reconnect_backoff
        self._owns_journal = not isinstance(journal, Journal)
        self.journal = journal if isinstance(journal, Journal) else Journal(journal)
        self.client = AlpacaClient(key, secret, live=live, url_override=url_override, policy=policy)
        self.history = AlpacaHistory(key, secret, url_override=url_override)
        self.risk = RiskEngine(risk or RiskConfig(), self.journal)
        self.executor = OrderExecutor(
            self.journal, self.client, self.risk, strategy_id, classifier=classifier,
            client_factory=lambda: AlpacaClient(
                key, secret, live=live, url_override=url_override, policy=policy
            ),
        )  # fmt: skip
        self.classifier = self.executor.classifier
        self.hub = BarHub()
        self.sources: dict[str, StreamSource] = {}
        self.datas: dict[str, AlpacaLiveData] = {}
        self.backfill: dict[str, int] = {}
        self._broker: AlpacaBroker | None = None
        self._trading: tuple[Any, threading.Thread] | None = None
        self._stopped = False
        logger.info("Alpaca store (%s, %s)", "live" if live else "paper", url_override or "alpaca")

    @classmethod
    def for_emulator(cls, emu: Emulator, **kwargs: Any) -> AlpacaStore:
        """A store whose REST and websockets all point at ``emu``."""
        return cls(
            emu.key_id,
            emu.secret_key,
            url_override=emu.base_url,
            stock_stream_url=emu.stock_stream_url,
            crypto_stream_url=emu.crypto_stream_url,
            trading_stream_url=emu.trading_stream_url,
            **kwargs,
        )

    def __repr__(self) -> str:
        mode = "live" if self.live else "paper"
        return (
            f"AlpacaStore({mode}, url_override={self.url_override!r}, "
            f"strategy_id={self.executor.strategy_id!r}, dry_run={self.dry_run})"
        )

    # -- Backtrader's store interface --------------------------------------------------------
    def getbroker(self, **kwargs: Any) -> AlpacaBroker:
        """The Backtrader broker of this store (one per store)."""
        if self._broker is None:
            from modelyard.brokers.bt_broker import AlpacaBroker

            self._broker = AlpacaBroker(store=self, **kwargs)  # type: ignore[call-arg]
        return self._broker

    def getdata(
        self, symbol: str, timeframe: str = "1min", *, backfill_bars: int = 200
    ) -> AlpacaLiveData:
        """A live Backtrader data of ``symbol``: ``backfill_bars`` REST bars, then the stream."""
        if symbol in self.datas:
            raise ConfigError(f"{symbol}: already has a data in this store", key="symbol")
        if backfill_bars < 0:
            raise ValueError("backfill_bars must be >= 0")
        info = self.classifier.classify(symbol)
        crypto = info.asset_class == "crypto"
        kind = "crypto" if crypto else "stock"
        source = self.sources.get(kind)
        if source is None:
            source = StreamSource(
                kind,
                self._stream_factory(kind),
                self._fetch_history,
                silence_timeout=self.silence_timeout,
                backoff=self.reconnect_backoff,
            )
            source.on_live_bar = self._on_live_bar
            self.sources[kind] = source
        channel = BarChannel(symbol, info.canonical, info.asset_class, timeframe, self.hub)
        source.add(channel)
        self.backfill[symbol] = backfill_bars
        data = AlpacaLiveData(channel=channel, source=source, name=symbol)
        self.datas[symbol] = data
        return data

    # -- streams -----------------------------------------------------------------------------
    def _on_live_bar(self) -> None:
        """A live bar arrived (stream thread): hold trade updates until the step's orders are
        out, and start reading the venue clock those orders' risk checks need. Only with this
        store's broker: its steps release the hold (without it there is no trade-update
        stream to hold, and the hold pauses the garbage collector, see ``TradeUpdateGate``)."""
        if self._broker is None:
            return
        self.executor.trade_update_gate.hold()
        if not self.dry_run:
            self.executor.prefetch_clock()

    def _stream_factory(self, kind: str) -> Callable[[], Any]:
        key, secret = self._key_id, self._secret_key

        def make() -> Any:
            from alpaca.data.live import CryptoDataStream, StockDataStream

            if kind == "crypto":
                return acknowledging(CryptoDataStream)(
                    key, secret, raw_data=True, url_override=self.crypto_stream_url
                )
            return acknowledging(StockDataStream)(
                key, secret, raw_data=True, url_override=self.stock_stream_url
            )

        return make

    def start_trade_updates(self, handler: Callable[[Any], Any]) -> None:
        """Run a ``TradingStream`` in a thread, ``handler`` (a coroutine function) per event."""
        if self._trading is not None:
            return
        from alpaca.trading.stream import TradingStream

        # raw_data: the executor reads the event's JSON; alpaca-py's pydantic TradeUpdate
        # costs the GIL time the bar -> POST path needs when a whole bar's fills arrive
        stream = TradingStream(
            self._key_id, self._secret_key, paper=not self.live, raw_data=True,
            url_override=self.trading_stream_url,  # type: ignore[arg-type]
        )  # fmt: skip
        stream.subscribe_trade_updates(handler)
        thread = threading.Thread(target=stream.run, name="modelyard-trade-updates", daemon=True)
        thread.start()
        self._trading = (stream, thread)

    def start(self) -> None:
        """Start every bar stream (the datas also do it from ``start()``)."""
        for source in self.sources.values():
            source.start()

    def stop(self) -> None:
        """Stop the streams: the live datas end, so ``cerebro.run()`` returns."""
        if self._stopped:
            return
        self._stopped = True
        for source in self.sources.values():
            source.stop()
        self.executor.trade_update_gate.release()
        if self._trading is not None:
            stream, thread = self._trading
            self._trading = None
            stop_stream(stream, thread)

    def close(self) -> None:
        """:meth:`stop`, then close the HTTP sessions (and the journal when the store opened it)."""
        self.stop()
        self.executor.close()
        self.client.close()
        self.history.close()
        if self._owns_journal:
            self.journal.close()
        for name in _FRAME_LOGGERS:
            logging.getLogger(name).removeFilter(self._redact)

    def __enter__(self) -> AlpacaStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- history -----------------------------------------------------------------------------
    def _fetch_history(
        self, wants: Sequence[tuple[BarChannel, int | None]]
    ) -> dict[BarChannel, list[LiveBar]]:
        """REST bars of each channel after its timestamp (``None``: its last ``backfill_bars``):
        one clock request, then one bars request per batch of channels (:func:`history_batches`)
        and asset class (:meth:`AlpacaHistory.fetch_many`). A channel without bars is left out."""
        if not wants:
            return {}
        now = pd.Timestamp(self.client.get_clock().timestamp)
        starts: list[tuple[BarChannel, int | None, pd.Timestamp]] = []
        for channel, after_ns in wants:
            start = self._history_start(channel, after_ns, now)
            if start is not None and start < now:
                starts.append((channel, after_ns, start))
        out: dict[BarChannel, list[LiveBar]] = {}
        for batch in history_batches(starts):
            timeframe = batch[0][0].timeframe
            lo = min(start for _, _, start in batch)
            end = now + parse_timeframe(timeframe)
            symbols = [channel.symbol for channel, _, _ in batch]
            frames = self.history.fetch_many(symbols, timeframe, lo, end)
            for channel, after_ns, _ in batch:
                frame = frames.get(channel.symbol)
                if frame is None:
                    continue
                bars = bars_from_frame(frame, channel, after_ns)
                out[channel] = (
                    bars if after_ns is not None else bars[-self.backfill[channel.symbol] :]
                )
        return out

    def _history_start(
        self, channel: BarChannel, after_ns: int | None, now: pd.Timestamp
    ) -> pd.Timestamp | None:
        """Where ``channel``'s REST bars start: after ``after_ns``, or far enough back for its
        backfill (None: no backfill wanted)."""
        if after_ns is not None:
            return pd.Timestamp(after_ns, unit="ns", tz="UTC")
        wanted = self.backfill.get(channel.symbol, 0)
        if wanted == 0:
            return None
        step = parse_timeframe(channel.timeframe)
        if channel.asset_class == "crypto":
            span = _SPAN["crypto"]
        else:
            daily = step >= pd.Timedelta(days=1)
            span = _SPAN["daily_equities" if daily else "intraday_equities"]
        return now - step * wanted * span - step


def history_batches(
    starts: Sequence[tuple[BarChannel, int | None, pd.Timestamp]],
) -> list[list[tuple[BarChannel, int | None, pd.Timestamp]]]:
    """Channels that can share one bars request: one timeframe, and starts no more than
    ``BATCH_SPAN_BARS`` bars after the batch's earliest (so one channel far behind does not
    make every other channel of its batch fetch that far back)."""
    batches: list[list[tuple[BarChannel, int | None, pd.Timestamp]]] = []
    by_timeframe: dict[str, list[tuple[BarChannel, int | None, pd.Timestamp]]] = {}
    for item in starts:
        by_timeframe.setdefault(item[0].timeframe, []).append(item)
    for timeframe, items in by_timeframe.items():
        span = parse_timeframe(timeframe) * BATCH_SPAN_BARS
        for item in sorted(items, key=lambda i: i[2]):
            if (
                batches
                and batches[-1][0][0].timeframe == timeframe
                and (item[2] - batches[-1][0][2] <= span)
            ):
                batches[-1].append(item)
            else:
                batches.append([item])
    return batches
