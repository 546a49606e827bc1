"""Bars: the schema, bundled real data, file loaders, resampling, quality reports, Alpaca history.

A bars frame has a ``datetime64[ns, UTC]`` index named ``timestamp`` (strictly increasing) and
the float64 columns ``open high low close volume``. Every loader returns one and runs the
data-quality report on it (``quality="warn" | "drop" | "raise"``).
"""

from modelyard.feeds.alpaca_history import AlpacaHistory
from modelyard.feeds.bundled import bundled, load_bars
from modelyard.feeds.files import read_bars
from modelyard.feeds.quality import QualityReport, quality_report
from modelyard.feeds.resample import resample
from modelyard.feeds.schema import BARS_COLUMNS, validate_bars

__all__ = [
    "BARS_COLUMNS",
    "AlpacaHistory",
    "QualityReport",
    "bundled",
    "load_bars",
    "quality_report",
    "read_bars",
    "resample",
    "validate_bars",
]
