"""Rich tables shared by the commands."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.table import Table

__all__ = ["metrics_table"]


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def metrics_table(metrics: Mapping[str, Any], title: str = "Metrics") -> Table:
    """Headline metrics and counts per status as a table."""
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("n", "n_with_truth", "coverage", "accuracy", "accuracy_parsed"):
        if key in metrics:
            table.add_row(key, _fmt(metrics[key]))
    for status, count in (metrics.get("status_counts") or {}).items():
        if count:
            table.add_row(f"status: {status}", str(count))
    return table
