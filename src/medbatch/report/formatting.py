"""Plain-text formatting of report values: numbers, intervals, facts, redaction.

Every function here returns text, never HTML: escaping is the templates' job (Jinja2
autoescape). Must not import the page builder, the figures or the templates.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from medbatch.evaluation import HEADLINE_METRICS, Evaluation

__all__ = ["METRIC_NAMES", "headline_rows"]

METRIC_NAMES: dict[str, str] = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "macro_f1": "Macro F1",
    "weighted_f1": "Weighted F1",
    "kappa": "Cohen's kappa",
    "coverage": "Coverage",
    "accuracy_parsed": "Accuracy (parsed only)",
}
"""Display names of the headline metrics."""

_SECRET_KEY = re.compile(r"key|token|secret|password|passwd|credential|auth|cookie", re.I)


def num(value: float | None, digits: int = 3) -> str:
    """`0.812`, or `–` for an undefined value."""
    return "–" if value is None else f"{value:.{digits}f}"


def pct(value: float | None, digits: int = 1) -> str:
    """`81.2%`, or `–` for an undefined value."""
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def span(interval: Sequence[float] | None, digits: int = 3) -> str | None:
    """`0.701–0.905` for a (low, high) pair, None without one."""
    if interval is None:
        return None
    low, high = interval
    return f"{low:.{digits}f}–{high:.{digits}f}"


def headline_rows(ev: Evaluation) -> Sequence[tuple[str, str, str, str]]:
    """(metric, value, 95% CI, n) rows for terminal tables."""
    rows = []
    for name in HEADLINE_METRICS:
        estimate = ev.headline.get(name)
        if estimate is None:
            continue
        ci = estimate.interval() or "–"
        rows.append((METRIC_NAMES[name], num(estimate.value), ci, str(estimate.n)))
    if ev.binary is not None:
        for label, estimate in (
            (f"Sensitivity (any abnormal vs {ev.binary.negative_label})", ev.binary.sensitivity),
            (f"Specificity (any abnormal vs {ev.binary.negative_label})", ev.binary.specificity),
        ):
            rows.append((label, num(estimate.value), estimate.interval() or "–", str(estimate.n)))
    if ev.macro_roc_auc is not None:
        ci = span(ev.macro_roc_auc_ci) or "–"
        rows.append(("Macro ROC AUC (label scores)", num(ev.macro_roc_auc), ci, str(ev.n)))
    return rows


def redact(value: Any) -> Any:
    """Settings with secret-looking names are replaced, recursively."""
    if isinstance(value, Mapping):
        return {
            k: "[redacted]" if _SECRET_KEY.search(str(k)) else redact(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def facts(value: Any) -> list[tuple[str, str]]:
    """A manifest entry as `(key, value)` pairs, nested keys dotted, None values left out."""
    flat: list[tuple[str, Any]] = []

    def walk(prefix: str, item: Any) -> None:
        if isinstance(item, Mapping) and item:
            for key in sorted(item, key=str):
                walk(f"{prefix}.{key}" if prefix else str(key), item[key])
        else:
            flat.append((prefix, item))

    walk("", value)
    return [
        (key, json.dumps(item) if isinstance(item, list | tuple) else str(item))
        for key, item in flat
        if item is not None
    ]


def cell(value: Any) -> Any:
    """A table cell with NaN as None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def json_cell(value: Any) -> dict[str, Any]:
    """A JSON-object cell (text or mapping) as a dict; anything else as `{}`."""
    if cell(value) is None:
        return {}
    if isinstance(value, str):
        try:
            loaded = json.loads(value)
        except json.JSONDecodeError:
            return {}
        return loaded if isinstance(loaded, dict) else {}
    return dict(value) if isinstance(value, Mapping) else {}


def int_text(value: Any) -> str:
    """An integer cell as text, `–` when missing."""
    value = cell(value)
    return "–" if value is None else str(int(value))


def short_id(record_id: str) -> str:
    """The last two path parts of a path-like record id (the full id is in a tooltip)."""
    parts = record_id.split("/")
    return "/".join(parts[-2:]) if len(parts) > 2 else record_id


def snippet(text: Any, limit: int = 160) -> str:
    """Text on one line, cut at `limit` characters."""
    if not text:
        return ""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def duration(start: str | None, end: str | None) -> str:
    """` (12 s)` between two ISO times, empty when either is missing or unreadable."""
    try:
        if start and end:
            seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
            return f" ({seconds:.0f} s)"
    except ValueError:
        pass
    return ""
