"""API facts of the fake `vllm` package: what the real wheel defines, not how the engine
behaves.

The keyword sets and the vLLM version are read from `vllm_api.json` (written from the real
wheel by `tests/unit/runners/vllm_probe.py --snapshot`); the exception tree, the parameter
classes and the output records copy vLLM's own names and fields. The engine that uses them
(`FakeLLM`, `FakeVLLM`, `fake_vllm`) is `medbatch.testing.fake_vllm`, which re-exports all
of this.

It must not import `medbatch.testing.fake_vllm` or any runner.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = [
    "CHAT_KEYWORDS",
    "FAKE_EXCEPTIONS",
    "LLM_INIT_KEYWORDS",
    "SAMPLING_PARAMS_KEYWORDS",
    "STRUCTURED_OUTPUTS_CONSTRAINTS",
    "STRUCTURED_OUTPUTS_OPTIONS",
    "VLLM_VERSION",
    "CompletionOutput",
    "EngineDeadError",
    "Logprob",
    "RequestOutput",
    "SamplingParams",
    "StructuredOutputsParams",
    "VLLMClientError",
    "VLLMError",
    "VLLMServerError",
    "VLLMValidationError",
]


_API: dict[str, Any] = json.loads(
    resources.files("medbatch.testing").joinpath("vllm_api.json").read_text(encoding="utf-8")
)
"""Facts read from the real vLLM wheel by `tests/unit/runners/vllm_probe.py --snapshot`
(`scripts/fetch_vllm_wheel.sh` fetches it); a test checks they still match the wheel."""

VLLM_VERSION: str = _API["vllm_version"]
"""The vLLM release the fake follows."""

SAMPLING_PARAMS_KEYWORDS: frozenset[str] = frozenset(_API["sampling_params"])
"""`SamplingParams` fields (the public ones). Not `guided_decoding` (removed in 0.11) nor
`best_of` (removed with the V0 engine)."""

STRUCTURED_OUTPUTS_CONSTRAINTS = ("json", "regex", "choice", "grammar", "json_object")
STRUCTURED_OUTPUTS_OPTIONS = tuple(
    name for name in _API["structured_outputs_params"] if name not in STRUCTURED_OUTPUTS_CONSTRAINTS
)

LLM_INIT_KEYWORDS: frozenset[str] = (
    frozenset(_API["engine_args"]) | frozenset(_API["llm_init"])
) - {"model"}
"""`vllm.LLM(model, ...)` keywords: its own, and through `**kwargs` every `EngineArgs` field
(anything else is a `TypeError` from `EngineArgs`; `swap_space` is not one any more)."""

CHAT_KEYWORDS: frozenset[str] = frozenset(_API["llm_chat"]) - {"messages"}
"""`LLM.chat` keywords after `messages`."""


class VLLMError(Exception):
    """`vllm.exceptions.VLLMError`: the base of vLLM's own errors (not a `ValueError`)."""


class VLLMClientError(VLLMError):
    """`vllm.exceptions.VLLMClientError`: caused by the request (HTTP 4xx in the server)."""


class VLLMServerError(VLLMError):
    """`vllm.exceptions.VLLMServerError`: caused by the engine (HTTP 5xx in the server)."""


class VLLMValidationError(VLLMClientError):
    """`vllm.exceptions.VLLMValidationError`: e.g. a prompt longer than `max_model_len`."""

    def __init__(self, message: str, *, parameter: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.value = value

    def __str__(self) -> str:
        base = super().__str__()
        extras = []
        if self.parameter is not None:
            extras.append(f"parameter={self.parameter}")
        if self.value is not None:
            extras.append(f"value={self.value}")
        return f"{base} ({', '.join(extras)})" if extras else base


class EngineDeadError(VLLMServerError):
    """`vllm.v1.engine.exceptions.EngineDeadError`: the engine core died; unrecoverable."""

    ENGINE_DEAD_MESSAGE = (
        "EngineCore encountered an issue. See stack trace (above) for the root cause."
    )

    def __init__(self, *args: Any, suppress_context: bool = False, **kwargs: Any) -> None:
        super().__init__(self.ENGINE_DEAD_MESSAGE, *args, **kwargs)
        self.__suppress_context__ = suppress_context


FAKE_EXCEPTIONS: tuple[type[VLLMError], ...] = (
    VLLMError,
    VLLMClientError,
    VLLMServerError,
    VLLMValidationError,
    EngineDeadError,
)
"""The part of vLLM's exception tree the fake raises (checked against the wheel's)."""


class StructuredOutputsParams:
    """`vllm.sampling_params.StructuredOutputsParams`: exactly one constraint must be set."""

    def __init__(
        self,
        json: str | dict[str, Any] | None = None,
        regex: str | None = None,
        choice: list[str] | None = None,
        grammar: str | None = None,
        json_object: bool | None = None,
        disable_any_whitespace: bool = False,
        disable_additional_properties: bool = False,
        whitespace_pattern: str | None = None,
        structural_tag: str | None = None,
    ) -> None:
        self.json = json
        self.regex = regex
        self.choice = choice
        self.grammar = grammar
        self.json_object = json_object
        self.disable_any_whitespace = disable_any_whitespace
        self.disable_additional_properties = disable_additional_properties
        self.whitespace_pattern = whitespace_pattern
        self.structural_tag = structural_tag
        count = sum(
            getattr(self, name) is not None for name in (*STRUCTURED_OUTPUTS_CONSTRAINTS,)
        ) + (structural_tag is not None)
        if count != 1:
            raise ValueError(
                "You must use exactly one kind of structured outputs constraint, got "
                f"{count}: {self.__dict__}"
            )
        if choice is not None and (
            not isinstance(choice, list) or not all(isinstance(c, str) for c in choice)
        ):
            raise TypeError("choice must be a list of strings")
        if json is not None and not isinstance(json, str | dict):
            raise TypeError("json must be a schema dict or a JSON string")


class SamplingParams:
    """`vllm.SamplingParams`: only vLLM's keyword names, with its basic range checks."""

    def __init__(self, **kwargs: Any) -> None:
        unknown = set(kwargs) - SAMPLING_PARAMS_KEYWORDS
        if unknown:
            raise TypeError(f"SamplingParams got unexpected keyword arguments {sorted(unknown)}")
        self.kwargs = dict(kwargs)
        self.temperature: float = kwargs.get("temperature", 1.0)
        self.top_p: float = kwargs.get("top_p", 1.0)
        self.max_tokens: int | None = kwargs.get("max_tokens", 16)
        self.seed: int | None = kwargs.get("seed")
        self.stop: str | list[str] | None = kwargs.get("stop")
        self.logprobs: int | None = kwargs.get("logprobs")
        self.prompt_logprobs: int | None = kwargs.get("prompt_logprobs")
        self.structured_outputs: StructuredOutputsParams | None = kwargs.get("structured_outputs")
        if self.temperature < 0:
            raise ValueError(f"temperature must be non-negative, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.logprobs is not None and (not isinstance(self.logprobs, int) or self.logprobs < -1):
            raise ValueError(f"logprobs must be a non-negative int or -1, got {self.logprobs}")
        if self.prompt_logprobs is True:  # vLLM reads True as 1
            self.prompt_logprobs = 1
        self.prompt_logprob_start: int | None = kwargs.get("prompt_logprob_start")
        self.skip_reading_prefix_cache: bool | None = kwargs.get("skip_reading_prefix_cache")
        if self.skip_reading_prefix_cache is None:
            # vLLM's default: a request with prompt logprobs does not read the prefix cache.
            self.skip_reading_prefix_cache = self.prompt_logprobs is not None
        if self.prompt_logprobs is not None and self.prompt_logprobs < -1:
            raise ValueError(
                f"prompt_logprobs must be non-negative or -1, got {self.prompt_logprobs}."
            )
        if self.stop is not None and not isinstance(self.stop, str | list):
            raise TypeError("stop must be a string or a list of strings")
        if self.structured_outputs is not None and not isinstance(
            self.structured_outputs, StructuredOutputsParams
        ):
            raise TypeError("structured_outputs must be a StructuredOutputsParams")

    def __repr__(self) -> str:
        return f"SamplingParams({self.kwargs!r})"


@dataclass
class Logprob:
    """`vllm.logprobs.Logprob`."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    """`vllm.outputs.CompletionOutput`."""

    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    """`vllm.outputs.RequestOutput` (the fields medbatch reads)."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int] | None
    prompt_logprobs: list[dict[int, Logprob] | None] | None
    """`None` first (the first prompt token has no context), then per prompt token a dict
    holding that token and, with `prompt_logprobs=k`, the k most likely tokens."""
    outputs: list[CompletionOutput]
    finished: bool = True
