"""The predictions table as evaluation reads it: loading, cleaning, label order.

Must not import the metric modules (`metrics`, `scores`, `core`, `comparison`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medbatch.evaluation.bootstrap import _finite
from medbatch.evaluation.models import DuplicateSummary, LatencySummary
from medbatch.records import AnswerStatus

if TYPE_CHECKING:
    from medbatch.store import RunManifest


def _load(source: pd.DataFrame | str | Path) -> tuple[pd.DataFrame, RunManifest | None]:
    if isinstance(source, pd.DataFrame):
        return source, None
    from medbatch.store import RunStore, load_predictions

    frame = load_predictions(source)
    return frame, RunStore(source).read_manifest()


def _run_labels(
    manifest: RunManifest | None, notes: list[str]
) -> tuple[tuple[str, ...] | None, str | None]:
    """The run's label order and negative label, as its manifest recorded them.

    A run directory written before the manifest recorded labels falls back to the task
    registry's current definition of its task, and says so in `notes`.
    """
    if manifest is None:
        return None, None
    if manifest.labels is not None:
        return tuple(manifest.labels), manifest.negative_label
    from medbatch.errors import MedbatchError
    from medbatch.tasks.registry import get_task

    try:
        labels = get_task(manifest.task).labels
    except (MedbatchError, KeyError, ValueError):
        return None, None
    notes.append(
        f"This run's manifest does not record its labels (an older run directory): the label "
        f"order and negative label are today's definition of task {manifest.task!r}."
    )
    return tuple(labels.names), labels.negative


def _clean(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def _scores(value: Any) -> dict[str, float] | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        value = json.loads(value)
    if isinstance(value, Mapping) and value:
        return {str(k): float(v) for k, v in value.items()}
    return None


class _Rows:
    """The columns evaluation needs, cleaned: plain strings, None for missing."""

    def __init__(
        self,
        *,
        record_ids: list[str],
        truth: list[str | None],
        label: list[str | None],
        status: list[str],
        sha: list[str | None],
        scores: list[dict[str, float] | None],
        latency: list[float | None],
    ) -> None:
        self.record_ids = record_ids
        self.truth_raw = truth
        self.label = label
        self.status = status
        self.sha = sha
        self.scores = scores
        self.latency = latency
        self.n = len(record_ids)
        self.parsed = np.array([s == AnswerStatus.PARSED.value for s in status], dtype=bool)
        # `truth` is the non-None list only for `_Rows` built by `with_truth`.
        self.truth: list[str] = [t for t in truth if t is not None]

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> _Rows:
        n = len(frame)

        def column(name: str) -> list[Any]:
            if name not in frame.columns:
                return [None] * n
            return list(frame[name])

        status = [_clean(s) or AnswerStatus.ERROR.value for s in column("status")]
        labels = [_clean(v) for v in column("label")]
        # Only a parsed answer has a label that counts; anything else is "unparsed/error".
        labels = [
            lab if st == AnswerStatus.PARSED.value else None
            for lab, st in zip(labels, status, strict=True)
        ]
        latency = [_finite(v) if isinstance(v, (int, float)) else None for v in column("latency_s")]
        return cls(
            record_ids=[str(v) for v in column("record_id")],
            truth=[_clean(v) for v in column("truth")],
            label=labels,
            status=status,
            sha=[_clean(v) or None for v in column("image_sha256")],
            scores=[_scores(v) for v in column("label_scores")],
            latency=latency,
        )

    def _subset(self, keep: Sequence[int]) -> _Rows:
        return _Rows(
            record_ids=[self.record_ids[i] for i in keep],
            truth=[self.truth_raw[i] for i in keep],
            label=[self.label[i] for i in keep],
            status=[self.status[i] for i in keep],
            sha=[self.sha[i] for i in keep],
            scores=[self.scores[i] for i in keep],
            latency=[self.latency[i] for i in keep],
        )

    def with_truth(self) -> _Rows:
        return self._subset([i for i, t in enumerate(self.truth_raw) if t is not None])

    def first_per_content(self) -> _Rows:
        seen: set[str] = set()
        keep: list[int] = []
        for i, sha in enumerate(self.sha):
            # Records without a content hash (unreadable images) are kept: they are errors
            # that must stay visible, not copies.
            if sha is None or sha not in seen:
                keep.append(i)
            if sha is not None:
                seen.add(sha)
        return self._subset(keep)

    def duplicate_summary(self, *, dedupe: bool) -> DuplicateSummary:
        groups: dict[str, list[int]] = {}
        for i, sha in enumerate(self.sha):
            if sha is not None:
                groups.setdefault(sha, []).append(i)
        shared = [members for members in groups.values() if len(members) > 1]
        conflicts = sum(
            1
            for members in shared
            if len({self.truth_raw[i] for i in members if self.truth_raw[i] is not None}) > 1
        )
        no_hash = sum(1 for sha in self.sha if sha is None)
        return DuplicateSummary(
            records=self.n,
            distinct=len(groups) + no_hash,
            copies=sum(len(members) - 1 for members in shared),
            groups=tuple(tuple(self.record_ids[i] for i in members) for members in shared[:50]),
            conflicts=conflicts,
            deduped=dedupe and bool(shared),
        )

    def status_counts(self) -> dict[str, int]:
        counts = {status.value: 0 for status in AnswerStatus}
        for status in self.status:
            counts[status] = counts.get(status, 0) + 1
        return counts

    def latency_summary(self) -> LatencySummary:
        values = np.array([v for v in self.latency if v is not None], dtype=np.float64)
        if values.size == 0:
            return LatencySummary(n=0)
        return LatencySummary(
            n=int(values.size),
            mean=float(values.mean()),
            median=float(np.median(values)),
            p95=float(np.percentile(values, 95)),
            max=float(values.max()),
            total=float(values.sum()),
        )


def _label_order(given: Sequence[str] | None, rows: _Rows, notes: list[str]) -> tuple[str, ...]:
    seen = {t for t in rows.truth_raw if t is not None} | {lab for lab in rows.label if lab}
    if not given:
        return tuple(sorted(seen))
    order = list(dict.fromkeys(given))
    extra = sorted(seen - set(order))
    if extra:
        notes.append(
            f"Labels outside the task's label set were found and added: {', '.join(extra)}."
        )
    return (*order, *extra)
