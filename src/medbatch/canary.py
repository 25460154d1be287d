"""Canary runs and the "did the model see the image" probe.

Before a large job, a few stratified records go through the same runner. If answers do not
parse, requests fail, constraints are ignored, or the image never reached the model, the run
stops with a report instead of spending the whole budget on garbage. Canary answers are kept:
the main run resumes from them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from medbatch.datasets.base import Dataset, ListDataset
from medbatch.errors import RunnerError
from medbatch.records import (
    AnswerStatus,
    ChatMessage,
    InferenceRequest,
    InferenceResponse,
    TextPart,
)
from medbatch.runners.base import BatchRunner

__all__ = [
    "CanaryFailedError",
    "CanaryReport",
    "CanaryThresholds",
    "ImageNotSeenError",
    "canary_subset",
    "evaluate_canary",
    "probe_image_seen",
    "text_only_twin",
]

# Fewer extra prompt tokens than this for an image means the image did not reach the model:
# the smallest real vision encoders cost dozens of tokens per image (Gemma 3: 256).
MIN_IMAGE_TOKENS = 8


class CanaryFailedError(RunnerError):
    """The canary subset fell below a threshold; the main run was not started."""

    def __init__(self, report: CanaryReport) -> None:
        self.report = report
        super().__init__(
            "canary run failed, main run not started: "
            + "; ".join(report.failures)
            + " (use --skip-canary / canary=0 to run anyway)"
        )


class ImageNotSeenError(CanaryFailedError):
    """Prompts with and without the image cost the same tokens: the model never saw it."""


class CanaryThresholds(BaseModel):
    """When a canary run stops the job."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_coverage: float = Field(default=0.5, ge=0, le=1, description="Parsed share needed.")
    max_error_rate: float = Field(default=0.25, ge=0, le=1, description="Failed share allowed.")
    min_constraint_validity: float = Field(
        default=0.9, ge=0, le=1, description="Share of constrained answers that are labels."
    )


class CanaryReport(BaseModel):
    """What the canary subset showed."""

    model_config = ConfigDict(extra="forbid")

    n: int
    coverage: float
    error_rate: float
    constraint_validity: float | None = None
    image_seen: bool | None = None
    prompt_tokens_with_image: int | None = None
    prompt_tokens_text_only: int | None = None
    failures: list[str] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when no threshold was crossed."""
        return not self.failures


def canary_subset(dataset: Dataset, size: int, *, seed: int = 0) -> ListDataset:
    """A stratified subset of about `size` records (every label represented if possible)."""
    labels = {record.label for record in dataset}
    per_class = max(1, math.ceil(size / max(1, len(labels))))
    records = list(dataset.sample(per_class, seed=seed))[:size]
    return ListDataset(records, labels=dataset.labels)


def text_only_twin(request: InferenceRequest) -> InferenceRequest:
    """The same request with every image part removed (for token accounting)."""
    messages = []
    for message in request.messages:
        parts = tuple(part for part in message.content if isinstance(part, TextPart))
        messages.append(ChatMessage(role=message.role, content=parts or (TextPart(text=""),)))
    params = request.params.model_copy(update={"max_tokens": 1})
    return request.model_copy(
        update={
            "record_id": f"{request.record_id}#text-only",
            "messages": tuple(messages),
            "params": params,
            "constraint": None,
        }
    )


def probe_image_seen(
    runner: BatchRunner, request: InferenceRequest, response: InferenceResponse
) -> tuple[bool | None, int | None, int | None]:
    """Compare prompt tokens with and without the image.

    Returns:
        `(seen, with_image, text_only)`; `seen` is None when the back-end reports no usage.
    """
    with_image = response.usage.prompt_tokens if response.usage else None
    if with_image is None or not request.images:
        return None, with_image, None
    twin = next(iter(runner.run([text_only_twin(request)])))
    text_only = twin.usage.prompt_tokens if twin.usage else None
    if text_only is None:
        return None, with_image, None
    return with_image - text_only >= MIN_IMAGE_TOKENS, with_image, text_only


def evaluate_canary(
    frame: pd.DataFrame,
    *,
    thresholds: CanaryThresholds,
    constrained: bool,
    image_probe: tuple[bool | None, int | None, int | None] = (None, None, None),
) -> CanaryReport:
    """Judge the canary predictions against the thresholds."""
    n = len(frame)
    status = frame["status"].astype(str)
    coverage = float((status == AnswerStatus.PARSED.value).mean()) if n else 0.0
    error_rate = float((status == AnswerStatus.ERROR.value).mean()) if n else 0.0
    truncated = float((status == AnswerStatus.TRUNCATED.value).mean()) if n else 0.0
    validity: float | None = None
    if constrained and n:
        # Answers cut off by max_tokens kept to the constraint as far as they went: they say
        # nothing about whether the back-end enforces it.
        answered = frame[~status.isin([AnswerStatus.ERROR.value, AnswerStatus.TRUNCATED.value])]
        if len(answered):
            valid = answered["method"].astype(str) == "constrained"
            validity = float(valid.mean())
    seen, with_image, text_only = image_probe
    failures: list[str] = []
    if n == 0:
        failures.append("no canary records")
    if coverage < thresholds.min_coverage:
        hint = (
            f": {truncated:.0%} of answers were cut off by max_tokens (finish_reason=length); "
            "raise max_tokens"
            if truncated
            else ""
        )
        failures.append(f"coverage {coverage:.0%} < {thresholds.min_coverage:.0%}{hint}")
    if error_rate > thresholds.max_error_rate:
        examples = _error_examples(frame)
        failures.append(f"error rate {error_rate:.0%} > {thresholds.max_error_rate:.0%}{examples}")
    if validity is not None and validity < thresholds.min_constraint_validity:
        failures.append(
            f"only {validity:.0%} of constrained answers were valid labels: the back-end "
            "ignores the constraint"
        )
    if seen is False:
        failures.append(
            f"the image did not reach the model: the prompt cost {with_image} tokens with "
            f"the image and {text_only} without it"
        )
    return CanaryReport(
        n=n,
        coverage=coverage,
        error_rate=error_rate,
        constraint_validity=validity,
        image_seen=seen,
        prompt_tokens_with_image=with_image,
        prompt_tokens_text_only=text_only,
        failures=failures,
    )


def _error_examples(frame: pd.DataFrame, limit: int = 2) -> str:
    messages: Sequence[str] = [
        str(message) for message in frame["error_message"].dropna().unique()[:limit]
    ]
    return f" (e.g. {' | '.join(m[:120] for m in messages)})" if messages else ""
