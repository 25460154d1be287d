"""`OpenAICompatibleRunnerConfig`: the settings of `OpenAICompatibleRunner`.

Holds the pydantic model of the `[runner] kind = "openai"` table, nothing else; it is
re-exported by `medbatch.runners.openai`, its public home. It imports only pydantic and
`medbatch.runners.base`: never the runner, httpx, the wire format or another runner.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from medbatch.runners.base import RunnerConfig

__all__ = ["OpenAICompatibleRunnerConfig"]


class OpenAICompatibleRunnerConfig(RunnerConfig):
    """Settings of `OpenAICompatibleRunner` (`[runner] kind = "openai"`)."""

    base_url: str = Field(
        description="API root as for the OpenAI SDK, e.g. http://127.0.0.1:8000/v1."
    )
    model: str = Field(description="Model name the server knows (Azure: the deployment).")
    api_key_env: str | None = Field(
        default="OPENAI_API_KEY",
        description="Environment variable holding the API key; unset or None sends none.",
    )
    api_key_header: Literal["authorization", "api-key"] = Field(
        default="authorization",
        description="Send the key as 'Authorization: Bearer' or as 'api-key' (Azure).",
    )
    concurrency: int = Field(default=16, ge=1, le=1024, description="Requests in flight.")
    timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="Longest one attempt may take, connecting to the last byte, seconds.",
    )
    max_retries: int = Field(
        default=4, ge=0, description="Retries of a failed request (429/5xx/timeout/bad body)."
    )
    max_connection_failures: int = Field(
        default=8,
        ge=0,
        description="Attempts in a row with no HTTP answer (refused, dropped, timed out) "
        "after which the server is taken as down and the remaining records fail at once; "
        "0: never give up.",
    )
    backoff_initial_s: float = Field(
        default=0.5, ge=0, description="First backoff; doubles each retry."
    )
    backoff_max_s: float = Field(default=30.0, ge=0, description="Longest exponential backoff.")
    jitter_s: float = Field(default=0.5, ge=0, description="Random extra wait, 0..jitter_s.")
    retry_after_max_s: float = Field(
        default=120.0, ge=0, description="Cap on a server's Retry-After wait."
    )
    structured_outputs: Literal["response_format", "vllm", "none"] = Field(
        default="response_format",
        description="How a label constraint is sent: response_format json_schema (OpenAI, "
        "Azure, Ollama, LM Studio, vLLM), vLLM's structured_outputs, or not at all.",
    )
    logprobs: bool = Field(
        default=False,
        description="Always ask for token log-probabilities (label scores need them).",
    )
    top_logprobs: int = Field(
        default=5, ge=0, le=20, description="Alternatives per token when log-probs are asked."
    )
    max_image_side: int | None = Field(
        default=None,
        ge=0,
        description="Shrink images to this side; None: the model's native size if known; "
        "0: never shrink.",
    )
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = Field(
        default="max_tokens", description="Body key for the answer length (newer OpenAI models)."
    )
    extra_headers: dict[str, str] = Field(
        default_factory=dict, description="Extra HTTP headers (never put secrets here)."
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict, description="Extra body fields, e.g. {'top_k': 1} for vLLM."
    )
    extra_query: dict[str, str] = Field(
        default_factory=dict, description="Query parameters, e.g. Azure's api-version."
    )
    batch_size: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Requests read ahead of their answers (at least concurrency); None: 4 × concurrency."
        ),
    )
