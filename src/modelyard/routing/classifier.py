"""Map any symbol a user writes to its asset class and one canonical form.

Forms understood: ``BTCUSDT``, ``BTC-USD``, ``BTC/USD``, ``BTCUSD``, ``btc_usd``; OCC option
symbols (``SPY240119C00450000``, with or without padding spaces); plain tickers
(``AAPL``, ``BRK.B``). Explicit symbol lists win, then the regex patterns in the order
written, then ``default_class``.

Canonical forms: crypto ``BASE/QUOTE`` (what Alpaca wants for orders and data; positions use
``BASEQUOTE``, see :meth:`AssetClassifier.alpaca_position_symbol`), options the unpadded OCC
symbol, equities the upper-case ticker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelyard.config.schema import AssetsConfig
from modelyard.errors import InvalidSymbolError

__all__ = ["AssetClassifier", "Classification"]

MAX_SYMBOL_LENGTH = 32
_CACHE_LIMIT = 100_000
# Quote currencies tried, longest first, when a crypto pair is written without a separator.
CRYPTO_QUOTES: tuple[str, ...] = ("USDT", "USDC", "BUSD", "USD", "EUR", "GBP", "BTC", "ETH")
_ALLOWED = re.compile(r"^[A-Z0-9./\-_ ]+$")
_SEPARATED = re.compile(r"^([A-Z0-9]+)\s*[/\-_]\s*([A-Z0-9]+)$")
_OCC = re.compile(r"^([A-Z0-9.]{1,6})\s*(\d{6})([CP])(\d{8})$")


@dataclass(frozen=True, slots=True)
class Classification:
    """What the classifier decided for one symbol."""

    symbol: str
    canonical: str
    asset_class: str
    matched_by: str  # "list", "pattern:<regex>" or "default"


def _key(symbol: str) -> str:
    return "".join(ch for ch in symbol if ch.isalnum())


class AssetClassifier:
    """Deterministic symbol → (asset class, canonical form). Raises only ``InvalidSymbolError``."""

    def __init__(self, config: AssetsConfig) -> None:
        self._default = config.default_class
        self._explicit: dict[str, str] = {}
        for name, cls in config.asset_classes.items():
            for symbol in cls.symbols:
                self._explicit[_key(symbol.upper())] = name
        self._patterns: list[tuple[str, re.Pattern[str]]] = [
            (name, re.compile(pattern))
            for name, cls in config.asset_classes.items()
            for pattern in cls.patterns
        ]
        self._cache: dict[str, Classification] = {}

    def classify(self, symbol: str) -> Classification:
        """Classify ``symbol``; results are memoised per exact input string."""
        if isinstance(symbol, str):
            hit = self._cache.get(symbol)
            if hit is not None:
                return hit
        result = self._classify(symbol)
        if len(self._cache) < _CACHE_LIMIT:
            self._cache[symbol] = result
        return result

    def _classify(self, symbol: str) -> Classification:
        text = self._normalise(symbol)
        name = self._explicit.get(_key(text))
        matched_by = "list"
        if name is None:
            for cls_name, regex in self._patterns:
                if regex.search(text):
                    name, matched_by = cls_name, f"pattern:{regex.pattern}"
                    break
        if name is None:
            name, matched_by = self._default, "default"
        return Classification(symbol, self._canonical(text, name), name, matched_by)

    @staticmethod
    def _normalise(symbol: object) -> str:
        if not isinstance(symbol, str):
            raise InvalidSymbolError(f"a symbol must be a string, got {type(symbol).__name__}")
        text = symbol.strip().upper()
        if not text:
            raise InvalidSymbolError("empty symbol; pass a ticker such as AAPL or BTC/USD")
        if len(text) > MAX_SYMBOL_LENGTH:
            raise InvalidSymbolError(
                f"symbol {symbol[:40]!r}… is {len(text)} characters long; "
                f"symbols have at most {MAX_SYMBOL_LENGTH}"
            )
        if not _ALLOWED.match(text) or not any(ch.isalnum() for ch in text):
            raise InvalidSymbolError(
                f"symbol {symbol!r} has characters no venue uses; "
                "use letters, digits and one of . / - _"
            )
        return text

    @staticmethod
    def _canonical(text: str, asset_class: str) -> str:
        if asset_class == "crypto":
            return _crypto_pair(text)
        if asset_class == "options":
            match = _OCC.match(text)
            if match:
                return "".join(match.groups())
            return text.replace(" ", "")
        return text.replace(" ", "")

    # --- Alpaca's forms -------------------------------------------------------------
    def alpaca_symbol(self, symbol: str) -> str:
        """The form Alpaca wants for orders and market data (``BTC/USD``, ``AAPL``)."""
        return self.classify(symbol).canonical

    def alpaca_position_symbol(self, symbol: str) -> str:
        """The form Alpaca reports positions in (``BTCUSD`` for crypto)."""
        result = self.classify(symbol)
        if result.asset_class == "crypto":
            return result.canonical.replace("/", "")
        return result.canonical


def _crypto_pair(text: str) -> str:
    match = _SEPARATED.match(text)
    if match:
        return f"{match.group(1)}/{match.group(2)}"
    compact = _key(text)
    for quote in CRYPTO_QUOTES:
        if compact.endswith(quote) and len(compact) > len(quote):
            return f"{compact[: -len(quote)]}/{quote}"
    return compact
