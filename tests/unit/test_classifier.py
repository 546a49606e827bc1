"""The classifier: every symbol form users meet, and it never raises anything but ours."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.config import load_config
from modelyard.errors import InvalidSymbolError, ModelyardError
from modelyard.routing import AssetClassifier

CLASSIFIER = AssetClassifier(load_config())


@pytest.mark.parametrize(
    ("symbol", "canonical", "asset_class"),
    [
        ("BTCUSDT", "BTC/USDT", "crypto"),
        ("BTC-USD", "BTC/USD", "crypto"),
        ("BTC/USD", "BTC/USD", "crypto"),
        ("BTCUSD", "BTC/USD", "crypto"),
        ("btc_usd", "BTC/USD", "crypto"),
        (" eth/usd ", "ETH/USD", "crypto"),
        ("SOLUSD", "SOL/USD", "crypto"),
        ("SPY240119C00450000", "SPY240119C00450000", "options"),
        ("SPY   240119C00450000", "SPY240119C00450000", "options"),
        ("AAPL  250620P00150000", "AAPL250620P00150000", "options"),
        ("AAPL", "AAPL", "equities"),
        ("aapl", "AAPL", "equities"),
        ("BRK.B", "BRK.B", "equities"),
        ("XYZ123", "XYZ123", "equities"),  # unknown: default class
    ],
)
def test_symbol_forms(symbol: str, canonical: str, asset_class: str) -> None:
    result = CLASSIFIER.classify(symbol)
    assert (result.canonical, result.asset_class) == (canonical, asset_class)


def test_explicit_list_beats_patterns() -> None:
    assert CLASSIFIER.classify("BTC-USD").matched_by == "list"
    assert CLASSIFIER.classify("ETHUSDT").matched_by.startswith("pattern:")
    assert CLASSIFIER.classify("XYZ123").matched_by == "default"


def test_alpaca_forms() -> None:
    assert CLASSIFIER.alpaca_symbol("BTCUSD") == "BTC/USD"
    assert CLASSIFIER.alpaca_position_symbol("BTC-USD") == "BTCUSD"
    assert CLASSIFIER.alpaca_position_symbol("AAPL") == "AAPL"


@pytest.mark.parametrize("bad", ["", "   ", "A" * 33, "AAPL;DROP", "€€€", "..//--"])
def test_absurd_symbols_raise_our_value_error(bad: str) -> None:
    with pytest.raises(InvalidSymbolError) as info:
        CLASSIFIER.classify(bad)
    assert isinstance(info.value, ValueError)


def test_non_string_raises_our_error() -> None:
    with pytest.raises(InvalidSymbolError, match="must be a string"):
        CLASSIFIER.classify(123)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_never_raises_anything_but_ours_and_is_deterministic(text: str) -> None:
    fresh = AssetClassifier(load_config())
    try:
        first = CLASSIFIER.classify(text)
    except ModelyardError as exc:
        kind = type(exc)
        with pytest.raises(InvalidSymbolError):
            fresh.classify(text)
        assert kind is InvalidSymbolError
        return
    assert fresh.classify(text) == first
    assert first.asset_class in {"crypto", "equities", "options"}
    assert first.canonical == first.canonical.strip().upper()
