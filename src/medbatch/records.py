"""Typed records that flow between the stages of a run.

```
Dataset ──Record──▶ PromptTemplate ──InferenceRequest──▶ BatchRunner ──InferenceResponse──▶
    LabelParser ──ParseResult──▶ Prediction (one row of results)
```

Every value here is a frozen pydantic model. Failures of single records are values
(`RecordError` inside an `InferenceResponse` or `Prediction`), never exceptions, so one broken
image or one failed request cannot stop a batch.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from medbatch.image_ref import _FROZEN, ImageRef, _sha256
from medbatch.redaction import redact

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # Python 3.10
    from enum import Enum

    class StrEnum(str, Enum):
        """3.11's `enum.StrEnum`: members are strings, and str() and format() give the value."""

        def __str__(self) -> str:
            return str(self.value)


# `json.dumps(value, sort_keys=True)` builds a new encoder per call (most of its cost for a
# small dict); this one gives the same text.
_SORTED_JSON = json.JSONEncoder(sort_keys=True)

__all__ = [
    "AnswerStatus",
    "ChatMessage",
    "GenerationParams",
    "ImagePart",
    "ImageRef",
    "InferenceRequest",
    "InferenceResponse",
    "LabelConstraint",
    "ParseResult",
    "Prediction",
    "Record",
    "RecordError",
    "TextPart",
    "Usage",
]


class Record(BaseModel):
    """One image to classify, with its ground truth when known.

    Attributes:
        id: Unique within a dataset; results are joined back on it.
        image: Where the image is.
        label: The ground-truth label name, or None when unknown.
        metadata: Free-form, JSON-serialisable facts (source folder, split, ...). Never put
            patient identifiers here.
    """

    model_config = _FROZEN

    id: str = Field(min_length=1)
    image: ImageRef
    label: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class RecordError(BaseModel):
    """Why one record has no answer. A value, carried in responses and predictions.

    Attributes:
        record_id: The record this is about, when known outside a response.
        kind: A short machine-readable reason, e.g. `image_error`, `request_failed`,
            `missing_response`, `runner_error`, `job_failed`, `timeout`.
        message: A human-readable explanation naming the record and what to do.
        retryable: Whether trying again may succeed (used by `retry_failed`).
    """

    model_config = _FROZEN

    kind: str
    message: str
    retryable: bool = True
    record_id: str | None = None

    @field_validator("message")
    @classmethod
    def _redact_message(cls, message: str) -> str:
        # Servers echo URLs, query keys and auth headers in error bodies; every error
        # message passes here before it can reach a file, a log or a report.
        return redact(message)

    def __str__(self) -> str:
        where = f"record {self.record_id}: " if self.record_id else ""
        return f"{where}{self.kind}: {self.message}"


class TextPart(BaseModel):
    """A text part of a chat message."""

    model_config = _FROZEN

    type: Literal["text"] = "text"
    text: str


class ImagePart(BaseModel):
    """An image part of a chat message; each runner encodes it the way its back-end wants."""

    model_config = _FROZEN

    type: Literal["image"] = "image"
    image: ImageRef


class ChatMessage(BaseModel):
    """One chat turn in OpenAI's message shape, with images kept as references."""

    model_config = _FROZEN

    role: Literal["system", "user", "assistant"]
    content: tuple[TextPart | ImagePart, ...]

    @classmethod
    def text(cls, role: Literal["system", "user", "assistant"], text: str) -> ChatMessage:
        """A message with one text part."""
        return cls(role=role, content=(TextPart(text=text),))

    @property
    def images(self) -> tuple[ImageRef, ...]:
        """The images this message carries, in order."""
        return tuple(part.image for part in self.content if isinstance(part, ImagePart))

    @property
    def text_content(self) -> str:
        """All text parts joined by blank lines."""
        return "\n\n".join(part.text for part in self.content if isinstance(part, TextPart))

    def to_openai(self, image_url: Any) -> dict[str, Any]:
        """Render as an OpenAI chat message dict.

        Args:
            image_url: A callable `ImageRef -> str` giving the URL to send for each image
                (a data URL, an http URL or a stage path, depending on the back-end).
        """
        parts: list[dict[str, Any]] = []
        for part in self.content:
            if isinstance(part, TextPart):
                parts.append({"type": "text", "text": part.text})
            else:
                parts.append({"type": "image_url", "image_url": {"url": image_url(part.image)}})
        return {"role": self.role, "content": parts}


class GenerationParams(BaseModel):
    """How to decode. Defaults are deterministic: greedy, seeded.

    The seed's notebook sampled at temperature 0.2 without a seed, so two runs of the same
    images disagreed; classification wants greedy decoding by default.
    """

    model_config = _FROZEN

    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0 means greedy.")
    max_tokens: int = Field(default=1024, gt=0, description="Most new tokens per answer.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    seed: int | None = Field(default=0, description="Sampling seed; None for unseeded.")
    stop: tuple[str, ...] = Field(default=(), description="Extra stop strings.")
    logprobs: bool = Field(
        default=False, description="Ask the back-end for token log-probabilities."
    )

    def fingerprint(self) -> str:
        """A short stable hash of these parameters (part of the resume key)."""
        return _sha256(self.model_dump_json().encode())[:16]


class LabelConstraint(BaseModel):
    """Restrict the answer to the task's labels (constrained decoding).

    Attributes:
        labels: The allowed label names, from the task's `LabelSet`.
        mode: `choice` makes the whole answer one label name; `json` makes it a JSON object
            `{"reasoning": ..., "label": ...}` (reasoning first, so the model still thinks
            before it commits, when `reasoning` is true). `score` classifies by likelihood,
            without generating: the answer is the label whose tokens (then the end of the
            answer) the model finds most probable after the prompt, and `label_scores` holds
            every label's probability, from one prefill plus the label continuations. Only
            runners with `RunnerCapabilities.likelihood_scoring` take it (TransformersRunner,
            VLLMRunner); it ignores temperature and sampling, as there is nothing to sample.
        reasoning: Include a free-text `reasoning` field before `label` in `json` mode.
    """

    model_config = _FROZEN

    labels: tuple[str, ...] = Field(min_length=1)
    mode: Literal["choice", "json", "score"] = "choice"
    reasoning: bool = False

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of a constrained answer in `json` mode."""
        properties: dict[str, Any] = {}
        if self.reasoning:
            properties["reasoning"] = {"type": "string"}
        properties["label"] = {"type": "string", "enum": list(self.labels)}
        return {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        }


class InferenceRequest(BaseModel):
    """What a runner is asked for one record."""

    model_config = _FROZEN

    record_id: str
    messages: tuple[ChatMessage, ...]
    params: GenerationParams = Field(default_factory=GenerationParams)
    constraint: LabelConstraint | None = None

    @property
    def images(self) -> tuple[ImageRef, ...]:
        """Every image in the conversation, in order."""
        return tuple(image for message in self.messages for image in message.images)


class Usage(BaseModel):
    """Token counts reported by a back-end (None where it does not say)."""

    model_config = _FROZEN

    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class InferenceResponse(BaseModel):
    """A runner's answer for one request. A failure is a value (`error`), not an exception."""

    model_config = _FROZEN

    record_id: str
    text: str | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    label_scores: dict[str, float] | None = None
    error: RecordError | None = None
    latency_s: float | None = None
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Provenance from the back-end (job name, revision)."
    )

    @field_validator("text")
    @classmethod
    def _utf8_text(cls, value: str | None) -> str | None:
        # JSON allows lone-surrogate escapes ("\ud83d" from a token split mid-emoji), so a
        # server can hand us text that no UTF-8 file (JSONL, parquet, HTML) can hold.
        if value is None or value.isascii():
            return value
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        return value

    @classmethod
    def failure(
        cls, record_id: str, kind: str, message: str, *, retryable: bool = True, **extra: Any
    ) -> InferenceResponse:
        """A response that records why `record_id` has no answer."""
        return cls(
            record_id=record_id,
            error=RecordError(kind=kind, message=message, retryable=retryable),
            **extra,
        )

    @property
    def ok(self) -> bool:
        """True when the back-end produced an answer."""
        return self.error is None


class AnswerStatus(StrEnum):
    """What became of one record's answer; every record has exactly one status."""

    PARSED = "parsed"
    """A single label was found and asserted."""
    AMBIGUOUS = "ambiguous"
    """Two or more labels were asserted as the final answer."""
    UNPARSEABLE = "unparseable"
    """An answer exists but no verdict could be read from it."""
    EMPTY = "empty"
    """The model returned no text."""
    TRUNCATED = "truncated"
    """The answer hit `max_tokens` before any verdict."""
    REFUSAL = "refusal"
    """The model declined to answer."""
    CONSTRAINT_NOT_APPLIED = "constraint_not_applied"
    """A constrained request came back outside the label set: the back-end ignored it."""
    ERROR = "error"
    """No answer: the image, the request or the back-end failed (see the error)."""


class ParseResult(BaseModel):
    """What a `LabelParser` read from one answer.

    Attributes:
        label: The label name, or None when `status` is not `parsed`.
        status: See `AnswerStatus`.
        method: Which rule decided (e.g. `json`, `final-heading`, `exact`), for the report.
        evidence: The text span that decided, to show a reader why.
        span: `(start, end)` character offsets of the evidence in the answer.
    """

    model_config = _FROZEN

    label: str | None = None
    status: AnswerStatus = AnswerStatus.UNPARSEABLE
    method: str = "none"
    evidence: str | None = None
    span: tuple[int, int] | None = None


class Prediction(BaseModel):
    """One row of results: a record joined with its answer, label and provenance.

    `evidence_start`/`evidence_end` are the parser's `ParseResult.span`: character offsets
    into `text` (the whole answer, also when the parser read only its last 32 KiB), so a
    reader can mark the exact evidence; None when the parser gave no span, and in rows
    stored before these fields existed.
    """

    model_config = _FROZEN

    record_id: str
    image_sha256: str
    truth: str | None = None
    label: str | None = None
    status: AnswerStatus
    method: str | None = None
    evidence: str | None = None
    evidence_start: int | None = None
    evidence_end: int | None = None
    text: str | None = None
    finish_reason: str | None = None
    label_scores: dict[str, float] | None = None
    error_kind: str | None = None
    error_message: str | None = None
    retryable: bool | None = None
    latency_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    model_id: str
    runner: str
    prompt_fingerprint: str
    params_fingerprint: str
    created_at: str
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("error_message")
    @classmethod
    def _redact_error(cls, message: str | None) -> str | None:
        # Also for predictions built without a RecordError (replayed or hand-made rows).
        return redact(message) if message else message

    @property
    def is_error(self) -> bool:
        """True when no answer was produced (the record may be retried)."""
        return self.status is AnswerStatus.ERROR

    @property
    def correct(self) -> bool | None:
        """Whether the label equals the truth; None when the truth is unknown."""
        if self.truth is None:
            return None
        return self.label == self.truth

    def to_row(self) -> dict[str, Any]:
        """A flat dict for a DataFrame: `label_scores` and `metadata` as JSON strings."""
        row = self.model_dump(mode="json")
        row["label_scores"] = json.dumps(self.label_scores) if self.label_scores else None
        row["metadata"] = _SORTED_JSON.encode(self.metadata) if self.metadata else None
        return row
