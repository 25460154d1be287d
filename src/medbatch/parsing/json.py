"""Read a label from a JSON answer such as `{"reasoning": "...", "label": "POST_MI"}`.

Constrained decoding in `json` mode (`LabelConstraint(mode="json")`) produces exactly this
shape; unconstrained models produce it too when asked, often inside a markdown code fence
and surrounded by prose. `JSONLabelParser` finds every JSON object in the answer, reads the
label field of the last one that has it, and maps the value onto the `LabelSet`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from medbatch.labels import LabelSet, fold_label_text
from medbatch.parsing.base import LabelParser
from medbatch.records import AnswerStatus, ParseResult

__all__ = ["LABEL_KEYS", "JSONLabelParser"]

LABEL_KEYS: tuple[str, ...] = (
    "label",
    "final_classification",
    "classification",
    "final_label",
    "final_answer",
    "answer",
    "diagnosis",
    "category",
    "class",
    "prediction",
)
"""Keys read as the label, in order of preference (compared after case/separator folding)."""

_FOLDED_KEYS = {fold_label_text(key): rank for rank, key in enumerate(LABEL_KEYS)}

# A long answer can contain many braces (e.g. set notation, LaTeX); trying to decode at
# every one of them is quadratic, so only the last few object starts are tried.
_MAX_DECODE_ATTEMPTS = 32
_EVIDENCE_CHARS = 200


class JSONLabelParser(LabelParser):
    """Reads the label field of a JSON object anywhere in the answer.

    Tolerates code fences, prose before and after, and extra fields. When several objects
    carry a label the last one wins (models restate an example first, answer last).
    Returns status `parsed` with method `json`, or `unparseable` when no object has a label
    field whose value is a label of the set (the `evidence` then shows the raw value).

    Example:
        >>> parser = JSONLabelParser(LabelSet.from_names(["NORMAL", "POST_MI"]))
        >>> parser.parse('```json\\n{"reasoning": "Q waves", "label": "post-MI"}\\n```').label
        'POST_MI'
    """

    def __init__(self, labels: LabelSet) -> None:
        super().__init__(labels)
        self._decoder = json.JSONDecoder()

    def parse(self, text: str | None, *, finish_reason: str | None = None) -> ParseResult:
        """Find the last JSON object with a label field and map its value onto the labels."""
        if not text or not text.strip():
            return ParseResult(status=AnswerStatus.EMPTY, method="json")
        try:
            return self._parse(text)
        except Exception as exc:
            return ParseResult(method="json-internal-error", evidence=repr(exc)[:_EVIDENCE_CHARS])

    def _parse(self, text: str) -> ParseResult:
        unmapped: ParseResult | None = None
        for start, end, value in reversed(list(self._label_values(text))):
            label = self.labels.normalize(value) if isinstance(value, str) else None
            evidence = text[start:end]
            if label is not None:
                value_at = text.find(value, start, end) if isinstance(value, str) else -1
                span = (value_at, value_at + len(value)) if value_at >= 0 else (start, end)
                return ParseResult(
                    label=label,
                    status=AnswerStatus.PARSED,
                    method="json",
                    evidence=_shorten(evidence),
                    span=span,
                )
            if unmapped is None:
                unmapped = ParseResult(
                    method="json", evidence=_shorten(evidence), span=(start, end)
                )
        return unmapped or ParseResult(method="json")

    def _label_values(self, text: str) -> Iterator[tuple[int, int, Any]]:
        """Yield `(start, end, label value)` for each decoded object with a label key."""
        starts = [match.start() for match in re.finditer(r"\{", text)]
        consumed_until = -1
        for start in starts[-_MAX_DECODE_ATTEMPTS:]:
            if start < consumed_until:
                continue  # inside an object already decoded
            try:
                obj, end = self._decoder.raw_decode(text, start)
            except ValueError:
                continue
            consumed_until = end
            if isinstance(obj, Mapping):
                found = _label_field(obj)
                if found is not None:
                    yield start, end, found


def _label_field(obj: Mapping[Any, Any]) -> Any:
    """The value of the most preferred label key of `obj`, or None."""
    best: tuple[int, Any] | None = None
    for key, value in obj.items():
        if not isinstance(key, str):
            continue
        rank = _FOLDED_KEYS.get(fold_label_text(key))
        if rank is not None and (best is None or rank < best[0]):
            best = (rank, value)
    return None if best is None else best[1]


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _EVIDENCE_CHARS else text[: _EVIDENCE_CHARS - 1] + "…"
