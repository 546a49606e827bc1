"""Comparison tables and the self-contained HTML report of ``modelyard compare``."""

from modelyard.reports.folder import comparison_csv, comparison_document, write_comparison
from modelyard.reports.html import (
    class_figure,
    difference_figure,
    equity_figure,
    figures,
    render_html,
    symbol_difference_figure,
    write_report,
)
from modelyard.reports.tables import (
    METRICS,
    differences,
    flat_side_by_side,
    format_diff,
    format_value,
    side_by_side,
)

__all__ = [
    "METRICS",
    "class_figure",
    "comparison_csv",
    "comparison_document",
    "difference_figure",
    "differences",
    "equity_figure",
    "figures",
    "flat_side_by_side",
    "format_diff",
    "format_value",
    "render_html",
    "side_by_side",
    "symbol_difference_figure",
    "write_comparison",
    "write_report",
]
