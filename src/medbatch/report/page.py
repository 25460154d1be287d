"""The page builder: what the report template shows, as plain values.

`page_context` turns an `Evaluation`, the predictions table and the manifest into the
variables of `templates/report.html.j2`. Everything it returns is text or numbers: the
template escapes it (autoescape), so nothing here writes HTML. Reads only public names of
`medbatch.evaluation`; must not import matplotlib (that is `figures`) or Jinja2 (`build`).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from medbatch.evaluation import HEADLINE_METRICS, UNPARSED, Evaluation
from medbatch.records import AnswerStatus
from medbatch.report.figures import Figure
from medbatch.report.formatting import (
    METRIC_NAMES,
    cell,
    duration,
    facts,
    int_text,
    json_cell,
    pct,
    redact,
    short_id,
    snippet,
)
from medbatch.report.run_kind import is_illustrative, is_random_model
from medbatch.store import RunManifest

__all__ = ["page_context"]

_IMAGE_KEYS = ("image_path", "path", "source_path", "file")
# Longest side of an embedded example image: an ECG page's leads stay legible at this size
# (~150 kB a page as JPEG), and the report stays one file.
_FULL_SIDE = 1400
_FAILED_SHOWN = 50


@dataclass(frozen=True)
class Card:
    """One headline metric card."""

    name: str
    value: float | None
    interval: str | None
    n: int
    warn: bool = False


@dataclass(frozen=True)
class Example:
    """One record of the gallery: its image, verdict and answer split around the evidence."""

    record_id: str
    short_id: str
    right: bool
    truth: Any
    label: str | None
    status: str
    image: str | None
    evidence: str | None
    error: str | None
    answer: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True)
class Block:
    """The examples of one ground-truth class, per predicted column."""

    label: str
    counts: tuple[tuple[str, bool, int], ...]
    examples: tuple[Example, ...] = field(default=())


def page_context(
    *,
    evaluation: Evaluation,
    frame: pd.DataFrame,
    manifest: RunManifest | None,
    figures: Mapping[str, Figure],
    images_root: Path | None,
    examples_per_cell: int,
    run_name: str,
) -> dict[str, Any]:
    """The template's variables for one run."""
    ev = evaluation
    model = manifest.model_id if manifest else _first(frame, "model_id")
    task = manifest.task if manifest else "run"
    when = (manifest.finished_at or manifest.started_at) if manifest else None
    return {
        "title": f"medbatch report: {task} · {model or 'unknown model'}",
        "run_name": run_name,
        "when": when or "unknown",
        "ev": ev,
        "random_model": is_random_model(manifest),
        "illustrative": is_illustrative(manifest),
        "cards": _cards(ev),
        "coverage": _coverage(ev),
        "guardrails": _guardrails(ev),
        "figures": figures,
        "gallery": _gallery(ev, frame, images_root, examples_per_cell),
        "examples_per_cell": examples_per_cell,
        "slowest": _slowest(frame),
        "failed": _failed(frame),
        "failed_shown": _FAILED_SHOWN,
        "manifest_items": _manifest_items(manifest, ev),
        "prompt_text": _prompt_text(manifest),
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "unparsed": UNPARSED,
    }


def _first(frame: pd.DataFrame, column: str) -> str | None:
    if column not in frame.columns or frame.empty:
        return None
    value = cell(frame[column].iloc[0])
    return None if value is None else str(value)


def _cards(ev: Evaluation) -> list[Card]:
    cards = [
        Card(
            METRIC_NAMES[name],
            estimate.value,
            estimate.interval(),
            estimate.n,
            warn=name == "coverage" and (estimate.value or 0.0) < 0.95,
        )
        for name in HEADLINE_METRICS
        if (estimate := ev.headline.get(name)) is not None
    ]
    if ev.binary is not None:
        for name, estimate in (
            ("Screening sensitivity", ev.binary.sensitivity),
            ("Screening specificity", ev.binary.specificity),
        ):
            cards.append(Card(name, estimate.value, estimate.interval(), estimate.n))
    return cards


def _coverage(ev: Evaluation) -> list[tuple[str, int, float, str]]:
    """(status, count, share, row class) per status."""
    total = max(1, ev.n)
    rows = []
    for status, count in ev.status_counts.items():
        bad = status != AnswerStatus.PARSED.value and count > 0
        rows.append((status, count, count / total, "bad" if bad else ("zero" if not count else "")))
    return rows


def _guardrails(ev: Evaluation) -> list[tuple[str, str, bool]]:
    """(check, finding, bad) rows; the three checks always have a row, run or not."""
    g = ev.guardrails
    rows: list[tuple[str, str, bool]] = []
    if g.constrained:
        validity = pct(g.constraint_validity)
        finding = f"{validity} ({g.constraint_valid} valid, {g.constraint_ignored} ignored)"
        rows.append(("constraint validity", finding, g.constraint_ignored > 0))
    else:
        rows.append(("constraint validity", "not applicable: answers were not constrained", False))
    if g.image_not_seen:
        rows.append(("images not seen by the model", str(g.image_not_seen), True))
    else:
        seen = (g.canary or {}).get("image_seen")
        if seen:
            finding = "yes (the canary's image probe)"
        elif seen is None:
            finding = "no record was reported unseen; not probed (no canary)"
        else:
            finding = "no: the canary's probe found the image did not reach the model"
        rows.append(("images seen by the model", finding, seen is False))
    if g.reprompted:
        rows.append(("verdicts from the follow-up re-prompt", str(g.reprompted), False))
    canary = g.canary
    if canary:
        failures = canary.get("failures") or []
        seen = canary.get("image_seen")
        verdict = "failed: " + "; ".join(failures) if failures else "passed"
        detail = (
            f"{verdict} · n {canary.get('n')} · coverage {pct(canary.get('coverage'))}"
            f" · errors {pct(canary.get('error_rate'))}"
            + (f" · image seen: {'yes' if seen else 'no'}" if seen is not None else "")
        )
        rows.append(("canary", detail, bool(failures)))
    else:
        rows.append(
            (
                "canary",
                "not run (only runners marked expensive run one, on more than 64 records;"
                " --skip-canary turns it off)",
                False,
            )
        )
    return rows


def _gallery(
    ev: Evaluation, frame: pd.DataFrame, images_root: Path | None, per_cell: int
) -> list[Block] | None:
    """The examples per confusion-matrix cell; None (no section) for an empty run."""
    if frame.empty:
        return None
    truth = frame["truth"].map(cell)
    status = frame["status"].astype(str)
    predicted = frame["label"].map(cell).where(status == AnswerStatus.PARSED.value, None)
    blocks: list[Block] = []
    for label in ev.labels:
        counts: list[tuple[str, bool, int]] = []
        examples: list[Example] = []
        for column in ev.confusion.columns:
            if column == UNPARSED:
                mask = (truth == label) & predicted.isna()
            else:
                mask = (truth == label) & (predicted == column)
            chosen = frame[mask]
            if chosen.empty:
                continue
            counts.append((column, column == label, len(chosen)))
            examples += [_example(row, images_root) for _, row in chosen.head(per_cell).iterrows()]
        if examples:
            blocks.append(Block(label, tuple(counts), tuple(examples)))
    return blocks


def _example(row: pd.Series[Any], images_root: Path | None) -> Example:
    truth = cell(row.get("truth"))
    status = str(row.get("status"))
    label = cell(row.get("label")) if status == AnswerStatus.PARSED.value else None
    record_id = str(row.get("record_id"))
    text = cell(row.get("text"))
    evidence = cell(row.get("evidence"))
    answer = (
        highlight(str(text), str(evidence) if evidence else None, _span_of(row)) if text else ()
    )
    error = cell(row.get("error_message"))
    return Example(
        record_id=record_id,
        short_id=short_id(record_id),
        right=label is not None and label == truth,
        truth=truth,
        label=None if label is None else str(label),
        status=status,
        image=_thumbnail(record_id, row.get("metadata"), images_root),
        evidence=None if evidence is None else str(evidence),
        error=None if error is None else str(error),
        answer=answer,
    )


def _span_of(row: pd.Series[Any]) -> tuple[int, int] | None:
    """The parser's evidence offsets (`evidence_start`, `evidence_end`), when both are known."""
    start, end = cell(row.get("evidence_start")), cell(row.get("evidence_end"))
    if start is None or end is None or pd.isna(start) or pd.isna(end):
        return None
    return int(start), int(end)


def highlight(
    text: str, evidence: str | None, span: tuple[int, int] | None = None
) -> tuple[tuple[str, bool], ...]:
    """The answer as `(text, is_evidence)` pieces, the evidence marked once.

    With the parser's exact offsets (`span`) that span is marked; otherwise (offsets unknown
    or outside the text) the last occurrence of the evidence text, where a verdict usually
    stands and the parser reads it.

    Example:
        >>> highlight("NORMAL? No: POST_MI", "POST_MI")
        (('NORMAL? No: ', False), ('POST_MI', True), ('', False))
        >>> highlight("NORMAL? No: POST_MI", "NORMAL", (0, 6))
        (('', False), ('NORMAL', True), ('? No: POST_MI', False))
    """
    if span is not None and 0 <= span[0] < span[1] <= len(text):
        at, end = span
    else:
        at = text.rfind(evidence) if evidence else -1
        if at < 0:
            return ((text, False),)
        end = at + len(evidence or "")
    return ((text[:at], False), (text[at:end], True), (text[end:], False))


def image_path(record_id: str, metadata: Mapping[str, Any], root: Path | None) -> Path | None:
    """A local image for a record: a path in its metadata, else `root / record_id`."""
    candidates: list[Path] = []
    for key in _IMAGE_KEYS:
        value = metadata.get(key)
        if isinstance(value, str) and value:
            candidates.append(Path(value))
    if root is not None:
        base = root.resolve()
        candidate = (base / record_id).resolve()
        # A record id like "../../etc/x" must not read outside the images folder.
        if candidate.is_relative_to(base):
            candidates.append(candidate)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def _thumbnail(record_id: str, metadata: Any, root: Path | None) -> str | None:
    """The record's image as base64 JPEG, at most `_FULL_SIDE` pixels a side."""
    path = image_path(record_id, json_cell(metadata), root)
    if path is None:
        return None
    from medbatch.errors import ImageLoadError
    from medbatch.images import thumbnail
    from medbatch.records import ImageRef

    try:
        # Refuses images over the pixel limit; shrinks before converting to RGB.
        picture = thumbnail(ImageRef.from_path(path), _FULL_SIDE)
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=78)
    except (ImageLoadError, OSError, ValueError):
        return None
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _slowest(frame: pd.DataFrame) -> list[tuple[str, float, str, str]]:
    if "latency_s" not in frame.columns or not frame["latency_s"].notna().any():
        return []
    slow = frame[frame["latency_s"].notna()].nlargest(5, "latency_s")
    latencies: list[float] = [float(v) for v in slow["latency_s"].astype(float)]
    return [
        (str(r.record_id), latency, str(r.status), int_text(r.completion_tokens))
        for r, latency in zip(slow.itertuples(), latencies, strict=True)
    ]


def _failed(frame: pd.DataFrame) -> tuple[int, list[tuple[str, str, str, str]]]:
    """How many records failed, and the first rows: (record, status, error kind, detail)."""
    if frame.empty:
        return 0, []
    failed = frame[frame["status"].astype(str) != AnswerStatus.PARSED.value]
    rows = [
        (
            str(r.record_id),
            str(r.status),
            str(cell(r.error_kind) or ""),
            str(cell(r.error_message) or snippet(cell(r.text))),
        )
        for r in failed.head(_FAILED_SHOWN).itertuples()
    ]
    return len(failed), rows


def _manifest_items(manifest: RunManifest | None, ev: Evaluation) -> list[tuple[str, str, Any]]:
    """(name, kind, value) rows; kind is `code`, `facts` (a list of pairs) or `text`."""
    items: list[tuple[str, str, Any]] = []
    m = manifest
    if m is not None:
        items += [
            ("model", "code", m.model_id),
            ("runner", "facts", facts(redact(m.runner))),
            ("task / prompt", "prompt", (m.task, m.prompt_version, m.prompt_fingerprint)),
            ("constrained decoding", "text", "yes" if m.constrained else "no"),
            ("generation parameters", "facts", facts(m.params)),
            ("dataset", "facts", facts(redact(m.dataset))),
        ]
        recorded = {"sampling": m.sampling, "demo": m.demo, "images_root": m.images_root}
        for key, raw in recorded.items():
            if raw is not None:
                value = redact(raw)
                if isinstance(value, Mapping):
                    items.append((key, "facts", facts(value)))
                else:
                    items.append((key, "code", value))
        versions = ", ".join(f"{k} {v}" for k, v in m.versions.items())
        items += [
            ("status", "text", m.status),
            (
                "started / finished",
                "text",
                f"{m.started_at} → {m.finished_at or '–'}" + duration(m.started_at, m.finished_at),
            ),
            ("medbatch", "text", m.medbatch_version),
            ("versions", "code", versions),
        ]
    dup = ev.duplicates
    dup_text = (
        f"{dup.copies} records repeat another record's image ({dup.records} records, "
        f"{dup.distinct} distinct; {dup.conflicts} groups with conflicting truths); "
        + ("counted once each (dedupe)." if dup.deduped else "counted as they are.")
        if dup.copies
        else f"none ({dup.records} records, {dup.distinct} distinct images)"
    )
    support = ", ".join(f"{c.label}: {c.support}" for c in ev.per_class)
    items += [
        ("records", "text", f"{ev.n} ({ev.n_with_truth} with ground truth)"),
        ("ground truth per class", "text", support),
        ("duplicates", "text", dup_text),
    ]
    return items


def _prompt_text(manifest: RunManifest | None) -> str | None:
    if manifest is None or not manifest.prompt_text:
        return None
    return "\n\n".join(
        f"[{key}]\n{value}" for key, value in manifest.prompt_text.items() if isinstance(value, str)
    )
