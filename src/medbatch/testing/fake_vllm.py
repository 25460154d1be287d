"""A fake `vllm` package that records what it is asked and checks it against vLLM's API.

vLLM needs a CUDA GPU and cannot be installed in CI, so `VLLMRunner` is tested against this
stand-in. It is strict where the real engine is: unknown keyword arguments are a
`TypeError`, `StructuredOutputsParams` needs exactly one constraint, conversations must be
OpenAI chat messages with `text` / `image_url` parts, `file://` images need
`allowed_local_media_path`, a prompt over `max_model_len` fails the whole `chat` call with
vLLM's `VLLMValidationError` (a `VLLMError`, not a `ValueError`). The accepted keywords and
the exception tree are read from the real vLLM wheel (`vllm_api.json`, written by
`tests/unit/runners/vllm_probe.py --snapshot`); `tests/unit/runners/test_vllm_wheel.py`
checks them against the wheel, and runs the fake with vLLM's own `SamplingParams`,
`StructuredOutputsParams` and exceptions (`FakeVLLM(sampling_params=…, exceptions=…)`).

The API facts (keywords, exceptions, `SamplingParams`, output records) live in
`medbatch.testing._vllm_api` and are re-exported here; this module is the engine.

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

from medbatch.testing._vllm_api import (
    CHAT_KEYWORDS,
    FAKE_EXCEPTIONS,
    LLM_INIT_KEYWORDS,
    SAMPLING_PARAMS_KEYWORDS,
    STRUCTURED_OUTPUTS_CONSTRAINTS,
    STRUCTURED_OUTPUTS_OPTIONS,
    VLLM_VERSION,
    CompletionOutput,
    EngineDeadError,
    Logprob,
    RequestOutput,
    SamplingParams,
    StructuredOutputsParams,
    VLLMClientError,
    VLLMError,
    VLLMServerError,
    VLLMValidationError,
)
from medbatch.testing.answers import last_label_named

__all__ = [
    "CHAT_KEYWORDS",
    "FAKE_EXCEPTIONS",
    "LLM_INIT_KEYWORDS",
    "SAMPLING_PARAMS_KEYWORDS",
    "STRUCTURED_OUTPUTS_CONSTRAINTS",
    "STRUCTURED_OUTPUTS_OPTIONS",
    "VLLM_VERSION",
    "ChatCall",
    "CompletionOutput",
    "EngineDeadError",
    "FakeLLM",
    "FakeVLLM",
    "Logprob",
    "RequestOutput",
    "SamplingParams",
    "StructuredOutputsParams",
    "VLLMClientError",
    "VLLMError",
    "VLLMServerError",
    "VLLMValidationError",
    "default_token_logprob",
    "fake_vllm",
]

_DTYPES = frozenset({"auto", "half", "float16", "bfloat16", "float", "float32"})
_ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})
_TOKEN_PATTERN = re.compile(r"\w+|\s+|[^\w\s]")
_CACHED_PROMPTS = 64
_DEFAULT_ANSWER = "FINAL CLASSIFICATION: (fake vllm answer)"


@dataclass
class ChatCall:
    """One recorded `LLM.chat` call."""

    conversations: list[list[dict[str, Any]]]
    sampling_params: list[Any]
    kwargs: dict[str, Any] = field(default_factory=dict)


AnswerFn = Callable[[list[dict[str, Any]], Any], str]
"""`answer(conversation, params) -> text`."""

TokenLogprobFn = Callable[[Sequence[str], str], float]
"""`token_logprob(tokens_before, token) -> log p(token | tokens_before)` (<= 0)."""


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
        sampling_params: Any = None,
        use_tqdm: bool | Callable[..., Any] = True,
        **kwargs: Any,
    ) -> list[RequestOutput]:
        """`LLM.chat`: one conversation or a list of them; one params object or one each.

        Raises:
            VLLMValidationError: A prompt is longer than `max_model_len`, or `fail_on`
                rejects it (the whole call fails, as in vLLM).
        """
        unknown = set(kwargs) - CHAT_KEYWORDS
        if unknown:
            raise TypeError(f"LLM.chat got unexpected keyword arguments {sorted(unknown)}")
        params_class = self.fake.sampling_params_class
        items: list[Any] = list(messages)
        conversations: list[list[dict[str, Any]]]
        if items and isinstance(items[0], Mapping):
            conversations = [[dict(m) for m in items]]
        else:
            conversations = [[dict(m) for m in conv] for conv in items]
        if sampling_params is None:
            params = [params_class()] * len(conversations)
        elif isinstance(sampling_params, params_class):
            params = [sampling_params] * len(conversations)
        else:
            params = list(sampling_params)
            if len(params) != len(conversations):
                raise ValueError(
                    "The lengths of prompts and sampling_params must be the same "
                    f"({len(conversations)} != {len(params)})"
                )
        for item in params:
            if not isinstance(item, params_class):
                raise TypeError(f"sampling_params must be SamplingParams, got {type(item)}")
        call_kwargs = {"use_tqdm": use_tqdm, **kwargs}
        self.fake.chat_calls.append(ChatCall(conversations, params, call_kwargs))
        for conversation in conversations:
            self._check_conversation(conversation)
        generation_prompt = bool(kwargs.get("add_generation_prompt", True))
        continue_final = bool(kwargs.get("continue_final_message", False))
        if generation_prompt and continue_final:
            # vLLM's own check (entrypoints/chat_utils.py), before any template is applied.
            raise ValueError(
                "continue_final_message and add_generation_prompt cannot both be True."
            )
        return [
            self._answer(
                conversation,
                param,
                index,
                _render(conversation, generation_prompt, continue_final),
            )
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
        self._check_limits(conversation, images)

    def _check_limits(self, conversation: list[dict[str, Any]], images: int) -> None:
        errors = self.fake.exceptions
        verdict = self.fake.fail_on(conversation) if self.fake.fail_on is not None else False
        if isinstance(verdict, BaseException):
            raise verdict
        if verdict:
            raise errors.VLLMValidationError("the fake engine was told to reject this prompt")
        limit = (self.kwargs.get("limit_mm_per_prompt") or {}).get("image")
        if limit is not None and images > limit:
            raise errors.VLLMValidationError(
                f"At most {limit} image(s) may be provided in one prompt",
                parameter="limit_mm_per_prompt",
                value=images,
            )
        max_len = self.kwargs.get("max_model_len")
        length = sum(_prompt_size(message) for message in conversation)
        if max_len is not None and length >= max_len:
            # vLLM's own message (v1/engine/input_processor.py), for a prompt that leaves
            # no room for even one answer token.
            raise errors.VLLMValidationError(
                f"The decoder prompt (length {length}) is longer than the maximum model length "
                f"of {max_len}. Make sure that `max_model_len` is no smaller than the number of "
                "text tokens plus multimodal tokens."
            )

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
        self,
        conversation: list[dict[str, Any]],
        params: Any,
        index: int,
        prompt: list[str],
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
        start = params.prompt_logprob_start or 0
        if start and start >= len(prompt) - 1:
            # vLLM's check (v1/engine/input_processor.py); it fails the whole call.
            raise fake.exceptions.VLLMValidationError(
                f"prompt_logprob_start must be less than prompt_len - 1 ({len(prompt) - 1}) "
                "so at least one prompt row is scored.",
                parameter="prompt_logprob_start",
                value=start,
            )
        fake.prefilled_tokens += len(prompt) - self._cached(prompt, params)
        prompt_logprobs = None
        if params.prompt_logprobs is not None:
            prompt_logprobs = self._prompt_logprobs(prompt, params.prompt_logprobs, start)
        return RequestOutput(
            request_id=str(len(fake.chat_calls) * 100_000 + index),
            prompt=None,
            prompt_token_ids=[_token_id(token) for token in prompt],
            prompt_logprobs=prompt_logprobs,
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

    def _cached(self, prompt: list[str], params: Any) -> int:
        """Prompt tokens read from the fake prefix cache (whole prompts seen before), with
        vLLM's limit (`Request.get_prefix_cache_hit_limit`): none when the request skips
        cache reads, up to `prompt_logprob_start` when it asks for prompt logprobs."""
        cache = self.fake.prefix_cache
        limit = len(prompt) - 1  # the last prompt token is always computed
        if params.skip_reading_prefix_cache:
            limit = 0
        elif params.prompt_logprobs is not None:
            limit = min(limit, params.prompt_logprob_start or 0)
        hit = 0
        for seen in cache:
            shared = 0
            for a, b in zip(seen, prompt, strict=False):
                if a != b:
                    break
                shared += 1
            hit = max(hit, shared)
        cache.append(tuple(prompt))
        # A finite cache (the real one evicts too), which keeps the fake linear in prompts.
        del cache[:-_CACHED_PROMPTS]
        return min(hit, limit)

    def _prompt_logprobs(
        self, prompt: Sequence[str], top_k: int, start: int = 0
    ) -> list[dict[int, Logprob] | None]:
        """vLLM's `prompt_logprobs` (`create_prompt_logprobs`, then
        `append_logprobs_for_next_position` per token, in `vllm/logprobs.py`): `None`, then
        per position the actual token first (its vocabulary rank), then the top k (ranks
        1..k; a token already there is overwritten with the same values). Positions up to
        `prompt_logprob_start` are None, as in vLLM's `LogprobsProcessor`."""
        out: list[dict[int, Logprob] | None] = [None] * (1 + start)
        for position in range(1 + start, len(prompt)):
            token = prompt[position]
            logprob = self.fake.token_logprob(prompt[:position], token)
            # The rest of the mass goes to made-up alternatives, halving each time.
            rest = max(-math.expm1(logprob), 1e-12)
            alternatives = [
                (f"<alt{j}>", math.log(rest / 2**j)) for j in range(1, max(top_k, 0) + 1)
            ]
            ranked = sorted([(token, logprob), *alternatives], key=lambda item: -item[1])
            rank = 1 + sum(1 for _, lp in alternatives if lp > logprob)
            step = {_token_id(token): Logprob(logprob=logprob, rank=rank, decoded_token=token)}
            for j, (alt, lp) in enumerate(ranked[: max(top_k, 0)], start=1):
                step[_token_id(alt)] = Logprob(logprob=lp, rank=j, decoded_token=alt)
            out.append(step)
        return out


def _render(
    conversation: Sequence[Mapping[str, Any]], generation_prompt: bool, continue_final: bool
) -> list[str]:
    """The fake chat template, as tokens: `<role>` content `<end>` per message (256
    `<image>` tokens per image), then `<assistant>` when a generation prompt is added; with
    `continue_final_message` the last message is left open (no `<end>`)."""
    tokens: list[str] = []
    for message in conversation:
        tokens.append(f"<{message.get('role')}>")
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for part in parts or []:
            if part.get("type") == "text":
                tokens.extend(t for t in _TOKEN_PATTERN.findall(str(part.get("text"))))
            else:
                tokens.extend(["<image>"] * 256)
        tokens.append("<end>")
    if continue_final and tokens:
        tokens.pop()
    elif generation_prompt:
        tokens.append("<assistant>")
    return tokens


def default_token_logprob(before: Sequence[str], token: str) -> float:
    """The fake model's log p(token | before): fixed per (previous token, token) pair."""
    previous = before[-1] if before else ""
    return -0.05 - (zlib.crc32(f"{previous}\x00{token}".encode()) % 400) / 100


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
        fail_on: `fail_on(conversation) -> bool | exception`: reject the whole `chat` call
            when any conversation matches, as vLLM does for one over-long prompt: True
            raises `VLLMValidationError`, an exception is raised as it is (e.g.
            `EngineDeadError()`).
        fail_init: An exception `LLM(...)` raises (e.g. out of GPU memory).
        token_logprob: The fake model behind `prompt_logprobs`:
            `token_logprob(tokens_before, token) -> log p` over the tokens of the fake
            chat template (`<role>` content `<end>`); default `default_token_logprob`.
        version: `vllm.__version__`.
        sampling_params: The real `vllm.sampling_params` module to use instead of the
            fake's `SamplingParams` / `StructuredOutputsParams` (tests that have the wheel).
        exceptions: The real `vllm.exceptions` module, whose classes the fake then raises.

    Attributes:
        inits: The keyword arguments of every `LLM(...)`.
        chat_calls: Every `LLM.chat` call, in order.
        prefilled_tokens: Prompt tokens computed, not read from the (fake) prefix cache.
        module: The fake `vllm` module.
    """

    def __init__(
        self,
        answer: AnswerFn | None = None,
        *,
        system_role: bool = True,
        fail_on: Callable[[list[dict[str, Any]]], bool | BaseException] | None = None,
        fail_init: Exception | None = None,
        token_logprob: TokenLogprobFn | None = None,
        version: str = VLLM_VERSION,
        sampling_params: types.ModuleType | None = None,
        exceptions: types.ModuleType | None = None,
    ) -> None:
        self.answer = answer
        self.system_role = system_role
        self.fail_on = fail_on
        self.fail_init = fail_init
        self.token_logprob: TokenLogprobFn = token_logprob or default_token_logprob
        self.inits: list[dict[str, Any]] = []
        self.chat_calls: list[ChatCall] = []
        self.prefix_cache: list[tuple[str, ...]] = []
        self.prefilled_tokens = 0
        llm_class = type("LLM", (FakeLLM,), {"fake": self})
        self.module = types.ModuleType("vllm")
        self.module.__version__ = version  # type: ignore[attr-defined]
        self.module.LLM = llm_class  # type: ignore[attr-defined]
        self.module.SamplingParams = SamplingParams  # type: ignore[attr-defined]
        sampling = sampling_params
        if sampling is None:
            sampling = types.ModuleType("vllm.sampling_params")
            sampling.SamplingParams = SamplingParams  # type: ignore[attr-defined]
            sampling.StructuredOutputsParams = StructuredOutputsParams  # type: ignore[attr-defined]
        self.sampling_params_class: type[Any] = sampling.SamplingParams
        self.module.SamplingParams = self.sampling_params_class  # type: ignore[attr-defined]
        errors = exceptions
        if errors is None:
            errors = types.ModuleType("vllm.exceptions")
            for error in FAKE_EXCEPTIONS:
                setattr(errors, error.__name__, error)
        self.exceptions = errors
        outputs = types.ModuleType("vllm.outputs")
        outputs.RequestOutput = RequestOutput  # type: ignore[attr-defined]
        outputs.CompletionOutput = CompletionOutput  # type: ignore[attr-defined]
        self.module.sampling_params = sampling  # type: ignore[attr-defined]
        self.module.outputs = outputs  # type: ignore[attr-defined]
        self.module.exceptions = errors  # type: ignore[attr-defined]
        self.modules = {
            "vllm": self.module,
            "vllm.sampling_params": sampling,
            "vllm.outputs": outputs,
            "vllm.exceptions": errors,
        }
        if exceptions is None:
            engine_errors = types.ModuleType("vllm.v1.engine.exceptions")
            engine_errors.EngineDeadError = EngineDeadError  # type: ignore[attr-defined]
            self.modules["vllm.v1.engine.exceptions"] = engine_errors

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
