"""Turn a runner's response into a `ParseResult`, checking constraints on the way.

The parser reads free text; this layer decides what the text *is* first: an error, an
empty answer, a constrained answer that must be exactly a label, or free text for the
parser. A constrained request whose answer is not a valid label means the back-end ignored
the constraint: the row is flagged (`constraint_not_applied`) and read by the parser as a
fallback, never silently trusted. The exception is an answer cut off by `max_tokens`
(`finish_reason="length"`, e.g. JSON mode with reasoning): the constraint held but the label
was never completed, so the row is `truncated` and not flagged.
"""

from __future__ import annotations

import json

from medbatch.parsing.base import LabelParser
from medbatch.records import AnswerStatus, InferenceResponse, LabelConstraint, ParseResult

__all__ = ["interpret_response", "read_constrained_answer"]


def read_constrained_answer(text: str, constraint: LabelConstraint) -> str | None:
    """The label of a constrained answer, or None if the answer breaks the constraint.

    `choice` answers must be exactly one label (surrounding whitespace allowed); `json`
    answers must be a JSON object whose `label` is one of the labels.
    """
    stripped = text.strip()
    if constraint.mode in ("choice", "score"):  # score mode answers one label name too
        return stripped if stripped in constraint.labels else None
    try:
        payload = json.loads(stripped)
    except json.JSONDecodeError:
        return None
    if isinstance(payload, dict):
        label = payload.get("label")
        if isinstance(label, str) and label in constraint.labels:
            return label
    return None


def interpret_response(
    response: InferenceResponse,
    parser: LabelParser,
    constraint: LabelConstraint | None = None,
) -> tuple[ParseResult, bool]:
    """Read the label of one response.

    Returns:
        The parse result, and whether a constraint was requested but not honoured by the
        back-end (the caller counts and flags those rows). A constrained answer that is not
        a label and stopped at `max_tokens` is `truncated`, not a constraint failure.
    """
    if response.error is not None:
        return ParseResult(status=AnswerStatus.ERROR, method="error"), False
    text = response.text or ""
    if not text.strip():
        return ParseResult(status=AnswerStatus.EMPTY, method="empty"), False
    if constraint is None:
        return parser.parse(text, finish_reason=response.finish_reason), False
    return _interpret_constrained(text, response.finish_reason, parser, constraint)


def _interpret_constrained(
    text: str, finish_reason: str | None, parser: LabelParser, constraint: LabelConstraint
) -> tuple[ParseResult, bool]:
    label = read_constrained_answer(text, constraint)
    if label is not None:
        start = text.find(label)
        span = (start, start + len(label)) if start >= 0 else None
        return (
            ParseResult(
                label=label,
                status=AnswerStatus.PARSED,
                method="constrained",
                evidence=label,
                span=span,
            ),
            False,
        )
    if finish_reason == "length" and _is_constrained_prefix(text, constraint):
        # Cut off before the label was complete: what was written is still a valid start of a
        # constrained answer, so nothing says the back-end ignored the constraint, and reading
        # a label out of half an answer would be a guess.
        return ParseResult(status=AnswerStatus.TRUNCATED, method="truncated"), False
    fallback = parser.parse(text, finish_reason=finish_reason)
    if fallback.status is AnswerStatus.PARSED:
        return fallback.model_copy(update={"method": f"fallback:{fallback.method}"}), True
    return (
        fallback.model_copy(update={"status": AnswerStatus.CONSTRAINT_NOT_APPLIED, "label": None}),
        True,
    )


def _is_constrained_prefix(text: str, constraint: LabelConstraint) -> bool:
    """Whether `text` could be the start of an answer that obeys `constraint`.

    A JSON answer (json mode, or choice mode sent as a JSON-schema `response_format`) starts
    with `{`; a bare choice answer is the start of a label name. Free text cut off at
    `max_tokens` is neither: there the back-end ignored the constraint.
    """
    stripped = text.strip()
    if not stripped or stripped.startswith("{"):
        return True
    return constraint.mode in ("choice", "score") and any(
        label.startswith(stripped) for label in constraint.labels
    )
