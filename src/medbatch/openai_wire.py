"""The OpenAI chat-completions wire format: request bodies, response mapping, HTTP facts.

What holds here is what the OpenAI API (and every server that copies it) defines, shared by
the live runner (`medbatch.runners.openai`), the Batch API files (`medbatch.batch_jsonl`)
and the loopback test server (`medbatch.testing.openai_server`):

- `render_messages` / `chat_completion_body`: the JSON of `POST /v1/chat/completions`;
- `completion_to_response`: a chat-completion body as an `InferenceResponse`;
- `retry_after`, `RETRY_STATUSES`, `status_may_pass_later`: what a status and its headers
  say about sending again;
- `chat_url`, `public_url`: the endpoint from a `base_url`, and a URL fit for messages.

It must not import `medbatch.runners` (the runners import it), the event loop or a client:
this is data in, data out.
"""

from __future__ import annotations

import email.utils
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx

from medbatch.constraints import (
    to_openai_response_format,
    to_vllm_server_extra_body,
    unwrap_json_choice,
)
from medbatch.errors import ConfigError
from medbatch.images import native_size, to_data_url
from medbatch.records import (
    ChatMessage,
    ImageRef,
    InferenceRequest,
    InferenceResponse,
    LabelConstraint,
    Usage,
)
from medbatch.scoring import label_scores_from_top_logprobs

__all__ = [
    "RETRY_STATUSES",
    "WireSettings",
    "chat_completion_body",
    "chat_url",
    "completion_to_response",
    "has_logprobs",
    "has_message",
    "public_url",
    "render_messages",
    "retry_after",
    "status_may_pass_later",
]

logger = logging.getLogger(__name__)

# 408/409/425/429 and every 5xx may succeed if sent again now; other 4xx fail the same way.
RETRY_STATUSES = frozenset({408, 409, 425, 429})

# The request itself is wrong (malformed, too large, unprocessable): a later run would send
# the same body and get the same answer, so such a failure is not worth `retry_failed`.
_REQUEST_IS_WRONG = frozenset({400, 413, 422})


def status_may_pass_later(status: int | None) -> bool:
    """Whether a request that failed with HTTP `status` may pass in a later run.

    Everything but 400, 413 and 422 may (auth fixed, quota refilled, server back), so the
    record's `RecordError.retryable` is set from this, by the live runner and by Batch API
    output alike.

    Example:
        >>> status_may_pass_later(429), status_may_pass_later(413)
        (True, False)
    """
    return status not in _REQUEST_IS_WRONG


class WireSettings(Protocol):
    """The settings a chat-completions body depends on (`OpenAICompatibleRunnerConfig` has
    them all)."""

    @property
    def model(self) -> str: ...
    @property
    def max_image_side(self) -> int | None: ...
    @property
    def max_tokens_field(self) -> str: ...
    @property
    def logprobs(self) -> bool: ...
    @property
    def top_logprobs(self) -> int: ...
    @property
    def structured_outputs(self) -> Literal["response_format", "vllm", "none"]: ...
    @property
    def extra_body(self) -> Mapping[str, Any]: ...


def render_messages(
    messages: Sequence[ChatMessage], *, max_side: int | None = None
) -> list[dict[str, Any]]:
    """OpenAI chat messages with every image as a base64 data URL (http URLs pass through).

    Raises:
        ImageLoadError: An image cannot be read or decoded.
    """

    def image_url(ref: ImageRef) -> str:
        return to_data_url(ref, max_side=max_side)

    return [message.to_openai(image_url=image_url) for message in messages]


def chat_completion_body(
    request: InferenceRequest,
    config: WireSettings,
    *,
    messages: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The JSON body of `POST /v1/chat/completions` for one request.

    Args:
        request: The request.
        config: Model, constraint style, log-prob and extra-body settings.
        messages: Already rendered messages; None renders them here (images encoded with
            the config's `max_image_side`, or the model's native size).

    Raises:
        ImageLoadError: An image cannot be read (only when `messages` is None).
    """
    if messages is None:
        side = config.max_image_side
        max_side = native_size(config.model) if side is None else (side or None)
        messages = render_messages(request.messages, max_side=max_side)
    params = request.params
    body: dict[str, Any] = {
        "model": config.model,
        "messages": messages,
        "temperature": params.temperature,
        "top_p": params.top_p,
        config.max_tokens_field: params.max_tokens,
    }
    if params.seed is not None:
        body["seed"] = params.seed
    if params.stop:
        body["stop"] = list(params.stop)
    if params.logprobs or config.logprobs:
        body["logprobs"] = True
        if config.top_logprobs:
            body["top_logprobs"] = config.top_logprobs
    if request.constraint is not None:
        if config.structured_outputs == "response_format":
            body["response_format"] = to_openai_response_format(request.constraint)
        elif config.structured_outputs == "vllm":
            body.update(to_vllm_server_extra_body(request.constraint))
    body.update(config.extra_body)
    return body


def completion_to_response(
    record_id: str,
    payload: Any,
    *,
    constraint: LabelConstraint | None = None,
    structured_outputs: Literal["response_format", "vllm", "none"] = "response_format",
    latency_s: float | None = None,
    metadata: dict[str, Any] | None = None,
) -> InferenceResponse:
    """Map a chat-completion JSON body onto an `InferenceResponse`.

    Text, finish reason and usage are copied; a refusal becomes the text (flagged in
    metadata); in choice mode over `response_format`, `{"label": "X"}` becomes `X` (the raw
    JSON is kept in metadata); label scores come from `logprobs` when a constraint names the
    labels. A body without `choices[0].message` becomes a `request_failed` error.
    """
    metadata = dict(metadata or {})
    if not has_message(payload):
        return InferenceResponse.failure(
            record_id,
            "request_failed",
            "the answer has no choices[0].message",
            latency_s=latency_s,
            metadata=metadata,
        )
    choice = payload["choices"][0]
    message = choice["message"]
    text = _message_text(message.get("content"))
    if isinstance(payload.get("model"), str):
        metadata["served_model"] = payload["model"]
    if text is None and message.get("refusal"):
        text = str(message["refusal"])
        metadata["refusal"] = True
    if (
        isinstance(text, str)
        and constraint is not None
        and constraint.mode == "choice"
        and structured_outputs == "response_format"
    ):
        text = _unwrap_choice(text, constraint, metadata)
    label_scores = None
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if constraint is not None and isinstance(content, list) and content:
        try:
            label_scores = label_scores_from_top_logprobs(content, constraint.labels)
        except (KeyError, TypeError, ValueError) as exc:
            logger.debug("record %s: unusable logprobs (%s)", record_id, exc)
    finish_reason = choice.get("finish_reason")
    return InferenceResponse(
        record_id=record_id,
        text=text if isinstance(text, str) else None,
        finish_reason=finish_reason if isinstance(finish_reason, str) else None,
        usage=_usage(payload.get("usage")),
        label_scores=label_scores,
        latency_s=latency_s,
        metadata=metadata,
    )


def _message_text(content: Any) -> Any:
    """The answer text; a list of content parts (some servers send one) has its text joined."""
    if not isinstance(content, list):
        return content
    texts = [
        part["text"]
        for part in content
        if isinstance(part, dict)
        and part.get("type") == "text"
        and isinstance(part.get("text"), str)
    ]
    return "".join(texts) if texts else None


def has_logprobs(payload: dict[str, Any]) -> bool:
    logprobs = payload["choices"][0].get("logprobs")
    return isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list)


def chat_url(base_url: str) -> str:
    """`…/v1` → `…/v1/chat/completions`; a bare host gets `/v1/chat/completions`."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"base_url {public_url(base_url)!r} is not an http(s) URL; use e.g. "
            "http://127.0.0.1:8000/v1"
        )
    try:
        parts.port  # noqa: B018 - urllib checks the port's range only when it is read
    except ValueError as exc:
        raise ConfigError(
            f"base_url {parts.hostname}: {exc}; use e.g. http://127.0.0.1:8000/v1"
        ) from None
    path = parts.path.rstrip("/")
    if path.endswith("/chat/completions"):
        pass
    elif not path:
        path = "/v1/chat/completions"
    else:
        path += "/chat/completions"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def public_url(url: str) -> str:
    """The URL without user info or query string (either may carry a key)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port: int | str | None
    try:
        port = parts.port
    except ValueError:  # out of range: shown as written, it is not a secret
        port = parts.netloc.rpartition(":")[2]
    if port is not None:
        host = f"{host}:{port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from `retry-after-ms` (OpenAI) or `Retry-After` (seconds or HTTP date)."""
    milliseconds = response.headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return float(milliseconds) / 1000.0
        except ValueError:
            pass
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def has_message(payload: Any) -> bool:
    if not isinstance(payload, dict):
        return False
    choices = payload.get("choices")
    return (
        isinstance(choices, list)
        and bool(choices)
        and isinstance(choices[0], dict)
        and isinstance(choices[0].get("message"), dict)
    )


def _unwrap_choice(text: str, constraint: LabelConstraint, metadata: dict[str, Any]) -> str:
    # One copy of the unwrapping, shared with the Snowflake runner.
    return unwrap_json_choice(text, constraint, metadata)


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt = raw.get("prompt_tokens")
    completion = raw.get("completion_tokens")
    return Usage(
        prompt_tokens=prompt if isinstance(prompt, int) else None,
        completion_tokens=completion if isinstance(completion, int) else None,
    )
