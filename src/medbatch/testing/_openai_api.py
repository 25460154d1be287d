"""What the loopback OpenAI server reads from a chat-completions body and writes back.

The API facts of `medbatch.testing.openai_server`, apart from its engine (faults, latency,
threads): the body as an `InferenceRequest` (`request_from_body`), the constraint a body
asks for (vLLM's `structured_outputs` / `guided_choice` or OpenAI's `response_format`),
how a free answer is coerced to it, prompt-token counts, `logprobs.content` items, the
JSON of an answer (`completion_json`) or of an error (`error_json`), and request bodies
with image bytes replaced by a digest for `requests_seen`.

It must not import `medbatch.testing.openai_server` or any runner.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from medbatch.records import (
    ChatMessage,
    GenerationParams,
    ImagePart,
    ImageRef,
    InferenceRequest,
    LabelConstraint,
    TextPart,
)
from medbatch.testing.answers import last_label_named

__all__ = [
    "DATA_URL",
    "LABEL_PROBABILITY",
    "TOKEN_LOGPROB",
    "BodyConstraint",
    "coerce",
    "completion_json",
    "count_prompt_tokens",
    "error_json",
    "image_ref",
    "label_constraint",
    "read_constraint",
    "redact_images",
    "request_from_body",
    "schema_constraint",
    "token_logprobs",
    "without_images",
]

DATA_URL = re.compile(r"^data:(?P<media>[^;,]+)?(?:;base64)?,(?P<data>.*)$", re.DOTALL)
# Chosen-token probability the server reports for a constrained label: the other labels
# share the rest, so label scores are predictable in tests.
LABEL_PROBABILITY = 0.7
TOKEN_LOGPROB = -0.001


def request_from_body(body: Mapping[str, Any], record_id: str = "request") -> InferenceRequest:
    """Turn a chat-completions body back into an `InferenceRequest`.

    Data-URL images become in-memory `ImageRef`s; http(s) URLs stay references. The label
    constraint is recovered from `structured_outputs` or a `response_format` json schema
    whose `label` property is an enum.

    Raises:
        ValueError: The body has no valid `messages`.
    """
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise ValueError("the body has no messages")
    messages = []
    for raw in raw_messages:
        content = raw.get("content")
        parts: list[TextPart | ImagePart] = []
        if isinstance(content, str):
            parts.append(TextPart(text=content))
        elif isinstance(content, list):
            for part in content:
                if part.get("type") == "text":
                    parts.append(TextPart(text=str(part.get("text", ""))))
                elif part.get("type") == "image_url":
                    parts.append(ImagePart(image=image_ref(str(part["image_url"]["url"]))))
        messages.append(ChatMessage(role=raw.get("role", "user"), content=tuple(parts)))
    params = GenerationParams(
        temperature=float(body.get("temperature", 0.0)),
        max_tokens=int(body.get("max_tokens") or body.get("max_completion_tokens") or 1024),
        top_p=float(body.get("top_p", 1.0)),
        seed=body.get("seed"),
        stop=tuple(body.get("stop") or ()),
        logprobs=bool(body.get("logprobs", False)),
    )
    return InferenceRequest(
        record_id=record_id,
        messages=tuple(messages),
        params=params,
        constraint=label_constraint(read_constraint(body)),
    )


class BodyConstraint:
    """What a constrained decoder is asked for: one of `labels`, bare or as a JSON object."""

    def __init__(
        self,
        labels: tuple[str, ...],
        *,
        bare: bool,
        fields: tuple[str, ...],
        response_format: bool = False,
    ) -> None:
        self.labels = labels
        self.bare = bare  # vLLM `choice`: the answer is the label itself
        self.fields = fields  # JSON answers: the object's properties, in schema order
        self.response_format = response_format


def read_constraint(body: Mapping[str, Any]) -> BodyConstraint | None:
    """The constraint in a body, the way vLLM and OpenAI read theirs.

    vLLM: `structured_outputs` with `choice` (a list of strings) or `json` (a schema).
    OpenAI: `response_format` `{"type": "json_schema", "json_schema": {"schema": ...}}`.
    Only schemas whose `label` property is a string enum are understood: the answer is then
    an object with those properties.
    """
    structured = body.get("structured_outputs")
    if isinstance(structured, dict):
        choice = structured.get("choice")
        if isinstance(choice, list) and choice and all(isinstance(c, str) for c in choice):
            return BodyConstraint(tuple(choice), bare=True, fields=())
        if isinstance(structured.get("json"), dict):
            return schema_constraint(structured["json"])
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")
        if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
            return schema_constraint(spec["schema"], response_format=True)
    return None


def schema_constraint(
    schema: Mapping[str, Any], *, response_format: bool = False
) -> BodyConstraint | None:
    properties = schema.get("properties")
    if not isinstance(properties, dict) or not isinstance(properties.get("label"), dict):
        return None
    enum = properties["label"].get("enum")
    if not isinstance(enum, list) or not enum or not all(isinstance(e, str) for e in enum):
        return None
    return BodyConstraint(
        tuple(enum), bare=False, fields=tuple(properties), response_format=response_format
    )


def label_constraint(constraint: BodyConstraint | None) -> LabelConstraint | None:
    """The `LabelConstraint` a backend runner honours, for what the body asked."""
    if constraint is None:
        return None
    if constraint.bare or (constraint.response_format and set(constraint.fields) == {"label"}):
        # OpenAI has no choice constraint: choice mode travels as a label-only JSON object.
        return LabelConstraint(labels=constraint.labels, mode="choice")
    return LabelConstraint(
        labels=constraint.labels, mode="json", reasoning="reasoning" in constraint.fields
    )


def image_ref(url: str) -> ImageRef:
    match = DATA_URL.match(url)
    if match is None:
        return ImageRef.from_url(url)
    return ImageRef.from_bytes(base64.b64decode(match["data"]), media_type=match["media"])


def coerce(text: str, constraint: BodyConstraint) -> str:
    """What a constrained decoder would have produced: the label the text names."""
    stripped = text.strip()
    if constraint.bare and stripped in constraint.labels:
        return stripped
    if not constraint.bare:
        try:
            payload = json.loads(stripped)
        except json.JSONDecodeError:
            payload = None
        if isinstance(payload, dict) and payload.get("label") in constraint.labels:
            return stripped
    label = last_label_named(text, constraint.labels) or constraint.labels[0]
    if constraint.bare:
        return label
    return json.dumps({name: label if name == "label" else "" for name in constraint.fields})


def redact_images(body: Any) -> Any:
    """A copy of `body` with each data URL replaced by its media type, size and digest."""
    if isinstance(body, dict):
        return {key: redact_images(value) for key, value in body.items()}
    if isinstance(body, list):
        return [redact_images(value) for value in body]
    if isinstance(body, str) and body.startswith("data:"):
        match = DATA_URL.match(body)
        if match is not None:
            data = match["data"]
            digest = hashlib.sha256(data.encode()).hexdigest()[:16]
            return f"data:{match['media']};base64,<{len(data)} chars sha256:{digest}>"
    return body


def without_images(body: dict[str, Any]) -> dict[str, Any]:
    messages = []
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, list):
            content = [part for part in content if part.get("type") == "text"]
        messages.append({**message, "content": content})
    return {**body, "messages": messages}


def count_prompt_tokens(body: Mapping[str, Any]) -> int:
    count = 0
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            count += len(content.split())
        elif isinstance(content, list):
            for part in content:
                if part.get("type") == "text":
                    count += len(str(part.get("text", "")).split())
                else:
                    count += 256  # Gemma 3 spends 256 tokens per image
    return count


def token_logprobs(token: str, labels: Sequence[str], top_k: int) -> dict[str, Any]:
    """One `logprobs.content` item; a label token carries every label as an alternative."""
    if token in labels:
        rest = (1.0 - LABEL_PROBABILITY) / max(1, len(labels) - 1)
        alternatives = [(token, math.log(LABEL_PROBABILITY))] + [
            (other, math.log(rest)) for other in labels if other != token
        ]
    else:
        alternatives = [(token, TOKEN_LOGPROB)]
    chosen = alternatives[0][1]
    return {
        "token": token,
        "logprob": chosen,
        "bytes": list(token.encode()),
        "top_logprobs": [
            {"token": alt, "logprob": logprob, "bytes": list(alt.encode())}
            for alt, logprob in alternatives[:top_k]
        ],
    }


def completion_json(
    body: Mapping[str, Any],
    *,
    text: str,
    finish_reason: str,
    tokens: Sequence[str],
    logprobs: bool,
    labels: Sequence[str],
    index: int,
    model: str,
) -> dict[str, Any]:
    """The JSON of a successful answer to `body` (`model` when the body names none).

    With `logprobs`, each token gets a `logprobs.content` item with the body's
    `top_logprobs` alternatives; a label token carries every one of `labels`.
    """
    content = None
    if logprobs:
        top_k = int(body.get("top_logprobs") or 0)
        content = {"content": [token_logprobs(token, labels, top_k) for token in tokens]}
    prompt_tokens = count_prompt_tokens(body)
    return {
        "id": f"chatcmpl-test-{index}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model") or model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
                "logprobs": content,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(tokens),
            "total_tokens": prompt_tokens + len(tokens),
        },
    }


def error_json(message: str, kind: str) -> dict[str, Any]:
    """An OpenAI error body (`kind`: e.g. `invalid_request_error`, `server_error`)."""
    return {"error": {"message": message, "type": kind, "code": None}}
