"""A fake `vllm` package that records what it is asked and checks it against vLLM's API.

vLLM needs a CUDA GPU and cannot be installed in CI, so `VLLMRunner` is tested against this
stand-in. It is strict where the real engine is: unknown keyword arguments are a
`TypeError`, `StructuredOutputsParams` needs exactly one constraint, conversations must be
OpenAI chat messages with `text` / `image_url` parts, `file://` images need
`allowed_local_media_path`. The keyword names are those of vLLM 0.33 (`vllm/sampling_params.py`
and `vllm/entrypoints/llm.py` on vllm-project/vllm `main`); where the real `vllm` is
importable, `tests/unit/runners/test_vllm.py` checks these names against it.

```python
with fake_vllm() as fake:
    with VLLMRunner(model="google/medgemma-4b-it") as runner:
        list(runner.run(requests))
fake.inits[0]["dtype"]                   # "bfloat16"
fake.chat_calls[0].conversations[0]      # OpenAI messages, images as data URLs
fake.chat_calls[0].sampling_params[0]    # a SamplingParams with .structured_outputs
```
"""

from __future__ import annotations

import math
import re
import sys
import types
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from medbatch.testing.answers import last_label_named

__all__ = [
    "SAMPLING_PARAMS_KEYWORDS",
    "ChatCall",
    "CompletionOutput",
    "FakeLLM",
    "FakeVLLM",
    "Logprob",
    "RequestOutput",
    "SamplingParams",
    "StructuredOutputsParams",
    "fake_vllm",
]

SAMPLING_PARAMS_KEYWORDS: frozenset[str] = frozenset(
    {
        "n",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "seed",
        "stop",
        "stop_token_ids",
        "ignore_eos",
        "max_tokens",
        "min_tokens",
        "logprobs",
        "prompt_logprobs",
        "logprob_token_ids",
        "flat_logprobs",
        "detokenize",
        "skip_special_tokens",
        "spaces_between_special_tokens",
        "include_stop_str_in_output",
        "output_kind",
        "structured_outputs",
        "logit_bias",
        "allowed_token_ids",
        "extra_args",
        "bad_words",
        "thinking_token_budget",
        "repetition_detection",
    }
)
"""`SamplingParams` keywords of vLLM 0.33. Not `guided_decoding` (removed in 0.11) nor
`best_of` (removed with the V0 engine)."""

STRUCTURED_OUTPUTS_CONSTRAINTS = ("json", "regex", "choice", "grammar", "json_object")
STRUCTURED_OUTPUTS_OPTIONS = (
    "disable_any_whitespace",
    "disable_additional_properties",
    "whitespace_pattern",
    "structural_tag",
)

LLM_INIT_KEYWORDS: frozenset[str] = frozenset(
    {
        "model",
        "runner",
        "convert",
        "tokenizer",
        "tokenizer_mode",
        "skip_tokenizer_init",
        "trust_remote_code",
        "allowed_local_media_path",
        "allowed_media_domains",
        "tensor_parallel_size",
        "pipeline_parallel_size",
        "data_parallel_size",
        "dtype",
        "quantization",
        "revision",
        "tokenizer_revision",
        "seed",
        "gpu_memory_utilization",
        "kv_cache_memory_bytes",
        "swap_space",
        "cpu_offload_gb",
        "enforce_eager",
        "disable_custom_all_reduce",
        "hf_token",
        "hf_overrides",
        "mm_processor_kwargs",
        "mm_processor_cache_gb",
        "pooler_config",
        "compilation_config",
        "structured_outputs_config",
        "max_model_len",
        "max_num_seqs",
        "max_num_batched_tokens",
        "max_logprobs",
        "logprobs_mode",
        "limit_mm_per_prompt",
        "enable_prefix_caching",
        "enable_chunked_prefill",
        "kv_cache_dtype",
        "download_dir",
        "load_format",
        "generation_config",
        "override_generation_config",
        "disable_log_stats",
        "distributed_executor_backend",
        "enable_lora",
        "max_lora_rank",
    }
)
"""`vllm.LLM(...)` keywords medbatch may pass (a subset of `EngineArgs`)."""

CHAT_KEYWORDS: frozenset[str] = frozenset(
    {
        "sampling_params",
        "use_tqdm",
        "lora_request",
        "chat_template",
        "chat_template_content_format",
        "add_generation_prompt",
        "continue_final_message",
        "tools",
        "chat_template_kwargs",
        "mm_processor_kwargs",
    }
)
"""`LLM.chat` keywords after `messages`."""

_DTYPES = frozenset({"auto", "half", "float16", "bfloat16", "float", "float32"})
_ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})
_TOKEN_PATTERN = re.compile(r"\w+|\s+|[^\w\s]")
_DEFAULT_ANSWER = "FINAL CLASSIFICATION: (fake vllm answer)"


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
        self.structured_outputs: StructuredOutputsParams | None = kwargs.get("structured_outputs")
        if self.temperature < 0:
            raise ValueError(f"temperature must be non-negative, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.logprobs is not None and (not isinstance(self.logprobs, int) or self.logprobs < -1):
            raise ValueError(f"logprobs must be a non-negative int or -1, got {self.logprobs}")
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
    prompt_logprobs: Any
    outputs: list[CompletionOutput]
    finished: bool = True


@dataclass
class ChatCall:
    """One recorded `LLM.chat` call."""

    conversations: list[list[dict[str, Any]]]
    sampling_params: list[SamplingParams]
    kwargs: dict[str, Any] = field(default_factory=dict)


AnswerFn = Callable[[list[dict[str, Any]], SamplingParams], str]
"""`answer(conversation, params) -> text`."""


class FakeLLM:
    """`vllm.LLM`: checks its arguments, records calls, answers deterministically."""

    fake: ClassVar[FakeVLLM]

    def __init__(self, model: str, **kwargs: Any) -> None:
        unknown = set(kwargs) - LLM_INIT_KEYWORDS
        if unknown:
            raise TypeError(f"LLM.__init__ got unexpected keyword arguments {sorted(unknown)}")
        dtype = kwargs.get("dtype", "auto")
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}")
        utilization = kwargs.get("gpu_memory_utilization", 0.9)
        if not 0 < utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {utilization}")
        limits = kwargs.get("limit_mm_per_prompt")
        if limits is not None and not (
            isinstance(limits, dict)
            and all(isinstance(k, str) and isinstance(v, int) for k, v in limits.items())
        ):
            raise TypeError("limit_mm_per_prompt must be a dict like {'image': 1}")
        self.model = model
        self.kwargs = kwargs
        self.fake.inits.append({"model": model, **kwargs})
        if self.fake.fail_init is not None:
            raise self.fake.fail_init

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]] | Sequence[Sequence[Mapping[str, Any]]],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool | Callable[..., Any] = True,
        lora_request: Any = None,
        chat_template: str | None = None,
        chat_template_content_format: str = "auto",
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        tools: list[dict[str, Any]] | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
    ) -> list[RequestOutput]:
        """`LLM.chat`: one conversation or a list of them; one params object or one each."""
        items: list[Any] = list(messages)
        conversations: list[list[dict[str, Any]]]
        if items and isinstance(items[0], Mapping):
            conversations = [[dict(m) for m in items]]
        else:
            conversations = [[dict(m) for m in conv] for conv in items]
        if sampling_params is None:
            params = [SamplingParams()] * len(conversations)
        elif isinstance(sampling_params, SamplingParams):
            params = [sampling_params] * len(conversations)
        else:
            params = list(sampling_params)
            if len(params) != len(conversations):
                raise ValueError(
                    "The lengths of prompts and sampling_params must be the same "
                    f"({len(conversations)} != {len(params)})"
                )
        for item in params:
            if not isinstance(item, SamplingParams):
                raise TypeError(f"sampling_params must be SamplingParams, got {type(item)}")
        call_kwargs = {
            "use_tqdm": use_tqdm,
            "lora_request": lora_request,
            "chat_template": chat_template,
            "chat_template_content_format": chat_template_content_format,
            "add_generation_prompt": add_generation_prompt,
            "continue_final_message": continue_final_message,
            "tools": tools,
            "chat_template_kwargs": chat_template_kwargs,
            "mm_processor_kwargs": mm_processor_kwargs,
        }
        self.fake.chat_calls.append(ChatCall(conversations, params, call_kwargs))
        for conversation in conversations:
            self._check_conversation(conversation)
        return [
            self._answer(conversation, param, index)
            for index, (conversation, param) in enumerate(zip(conversations, params, strict=True))
        ]

    def _check_conversation(self, conversation: list[dict[str, Any]]) -> None:
        images = 0
        for message in conversation:
            role = message.get("role")
            if role not in _ROLES:
                raise ValueError(f"unknown chat role {role!r}")
            if role == "system" and not self.fake.system_role:
                raise ValueError("System role not supported")
            content = message.get("content")
            if isinstance(content, str):
                continue
            if not isinstance(content, list):
                raise TypeError("message content must be a string or a list of parts")
            for part in content:
                kind = part.get("type")
                if kind == "text":
                    if not isinstance(part.get("text"), str):
                        raise TypeError("a text part needs a string 'text'")
                elif kind == "image_url":
                    self._check_image_url(part.get("image_url"))
                    images += 1
                else:
                    raise ValueError(f"unsupported content part type {kind!r}")
        if self.fake.fail_on is not None and self.fake.fail_on(conversation):
            raise ValueError("the fake engine was told to reject this prompt")
        limit = (self.kwargs.get("limit_mm_per_prompt") or {}).get("image")
        if limit is not None and images > limit:
            raise ValueError(f"At most {limit} image(s) may be provided in one prompt")

    def _check_image_url(self, image_url: Any) -> None:
        if not isinstance(image_url, dict) or not isinstance(image_url.get("url"), str):
            raise TypeError("an image_url part needs {'url': str}")
        url = image_url["url"]
        if url.startswith("data:image/") and ";base64," in url:
            return
        if url.startswith("file://"):
            root = self.kwargs.get("allowed_local_media_path")
            if not root:
                raise ValueError("Cannot load local files without --allowed-local-media-path")
            path = Path(unquote(urlsplit(url).path))
            if not path.is_relative_to(Path(root)):
                raise ValueError(f"{path} is not under allowed_local_media_path {root}")
            if not path.is_file():
                raise FileNotFoundError(path)
            return
        if url.startswith(("http://", "https://")):
            return
        raise ValueError(f"unsupported image URL {url[:40]!r}")

    def _answer(
        self, conversation: list[dict[str, Any]], params: SamplingParams, index: int
    ) -> RequestOutput:
        fake = self.fake
        text = fake.answer(conversation, params) if fake.answer is not None else _DEFAULT_ANSWER
        labels: tuple[str, ...] = ()
        constraint = params.structured_outputs
        if constraint is not None and constraint.choice is not None:
            labels = tuple(constraint.choice)
            text = text if text in labels else last_label_named(text, labels) or labels[0]
        elif constraint is not None and isinstance(constraint.json, dict):
            enum = constraint.json.get("properties", {}).get("label", {}).get("enum")
            if enum:
                labels = tuple(enum)
                label = last_label_named(text, labels) or labels[0]
                text = '{"label": "' + label + '"}'
        tokens = _TOKEN_PATTERN.findall(text)
        finish_reason = "stop"
        if params.max_tokens is not None and len(tokens) > params.max_tokens:
            tokens = tokens[: params.max_tokens]
            finish_reason = "length"
        token_ids = [_token_id(token) for token in tokens]
        logprobs = None
        if params.logprobs:
            logprobs = [_step(token, labels, params.logprobs) for token in tokens]
        prompt_tokens = sum(_prompt_size(message) for message in conversation)
        return RequestOutput(
            request_id=str(len(fake.chat_calls) * 100_000 + index),
            prompt=None,
            prompt_token_ids=list(range(prompt_tokens)),
            prompt_logprobs=None,
            outputs=[
                CompletionOutput(
                    index=0,
                    text="".join(tokens),
                    token_ids=token_ids,
                    cumulative_logprob=None,
                    logprobs=logprobs,
                    finish_reason=finish_reason,
                )
            ],
        )


def _token_id(token: str) -> int:
    return zlib.crc32(token.encode()) % 262_144


def _step(token: str, labels: Sequence[str], top_k: int) -> dict[int, Logprob]:
    """One position's logprobs: the sampled token, plus every label when it is one."""
    if token in labels:
        rest = 0.3 / max(1, len(labels) - 1)
        ranked = [(token, math.log(0.7))] + [(o, math.log(rest)) for o in labels if o != token]
    else:
        ranked = [(token, -0.001)]
    step = {
        _token_id(alt): Logprob(logprob=lp, rank=rank, decoded_token=alt)
        for rank, (alt, lp) in enumerate(ranked[: max(top_k, 1)], start=1)
    }
    step.setdefault(_token_id(token), Logprob(logprob=ranked[0][1], rank=1, decoded_token=token))
    return step


def _prompt_size(message: Mapping[str, Any]) -> int:
    content = message.get("content")
    if isinstance(content, str):
        return len(content.split())
    size = 0
    for part in content or []:
        size += len(str(part.get("text", "")).split()) if part.get("type") == "text" else 256
    return size


class FakeVLLM:
    """The fake `vllm` package and the record of what it was asked.

    Args:
        answer: `answer(conversation, params) -> text`; a constraint in the params is then
            applied like vLLM's structured outputs would (the label the text names, or the
            first label).
        system_role: False makes a `system` message an error, like chat templates of models
            without a system role.
        fail_on: `fail_on(conversation) -> bool`: reject the whole `chat` call (as vLLM does
            for one over-long prompt) when any conversation matches.
        fail_init: An exception `LLM(...)` raises (e.g. out of GPU memory).
        version: `vllm.__version__`.

    Attributes:
        inits: The keyword arguments of every `LLM(...)`.
        chat_calls: Every `LLM.chat` call, in order.
        module: The fake `vllm` module.
    """

    def __init__(
        self,
        answer: AnswerFn | None = None,
        *,
        system_role: bool = True,
        fail_on: Callable[[list[dict[str, Any]]], bool] | None = None,
        fail_init: Exception | None = None,
        version: str = "0.33.0",
    ) -> None:
        self.answer = answer
        self.system_role = system_role
        self.fail_on = fail_on
        self.fail_init = fail_init
        self.inits: list[dict[str, Any]] = []
        self.chat_calls: list[ChatCall] = []
        llm_class = type("LLM", (FakeLLM,), {"fake": self})
        self.module = types.ModuleType("vllm")
        self.module.__version__ = version  # type: ignore[attr-defined]
        self.module.LLM = llm_class  # type: ignore[attr-defined]
        self.module.SamplingParams = SamplingParams  # type: ignore[attr-defined]
        sampling = types.ModuleType("vllm.sampling_params")
        sampling.SamplingParams = SamplingParams  # type: ignore[attr-defined]
        sampling.StructuredOutputsParams = StructuredOutputsParams  # type: ignore[attr-defined]
        outputs = types.ModuleType("vllm.outputs")
        outputs.RequestOutput = RequestOutput  # type: ignore[attr-defined]
        outputs.CompletionOutput = CompletionOutput  # type: ignore[attr-defined]
        self.module.sampling_params = sampling  # type: ignore[attr-defined]
        self.module.outputs = outputs  # type: ignore[attr-defined]
        self.modules = {
            "vllm": self.module,
            "vllm.sampling_params": sampling,
            "vllm.outputs": outputs,
        }

    @contextmanager
    def installed(self) -> Iterator[FakeVLLM]:
        """Put the fake into `sys.modules` for the duration of the block."""
        saved = {name: sys.modules.get(name) for name in self.modules}
        sys.modules.update(self.modules)
        try:
            yield self
        finally:
            for name, module in saved.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module


@contextmanager
def fake_vllm(answer: AnswerFn | None = None, **options: Any) -> Iterator[FakeVLLM]:
    """Install a `FakeVLLM` as `vllm` for the duration of the block (see `FakeVLLM`)."""
    with FakeVLLM(answer, **options).installed() as fake:
        yield fake
