"""`VLLMRunner`: offline batch inference with `vllm.LLM.chat` on a local GPU.

```
requests ──chunk_size──▶ conversations (OpenAI format, images as data URLs or file://)
         ──▶ LLM.chat(conversations, sampling_params=[SamplingParams(...) per request])
         ──▶ RequestOutput.outputs[0] → text, finish_reason, token counts, label scores
```

Each chunk is one `LLM.chat` call (vLLM batches it internally with continuous batching), and
its answers are yielded before the next chunk is read, so results stream to the run store.
A record whose image cannot be read fails alone (`image_error`). One prompt vLLM rejects
(e.g. longer than `max_model_len`: `VLLMValidationError`, which is not a `ValueError`) fails
the whole `LLM.chat` call, whatever the exception; the chunk is then split in halves until
the offending records are alone, so only they fail (`runner_error`, not retryable when vLLM
called it a client error). An `EngineDeadError` fails the chunk at once.

`LabelConstraint(mode="score")` generates nothing: each prompt is prefilled once, then its
K label continuations are scored from `prompt_logprobs` (see `VLLMRunner._score` and
docs/concepts/label-scores.md); the answer is the most probable label.

The calls follow the vLLM >= 0.11 API: `StructuredOutputsParams(choice=…)` or `(json=…)` in
`SamplingParams(structured_outputs=…)`; the pre-0.11 `guided_decoding` /
`GuidedDecodingParams` were removed, and servers ignore the old `guided_choice` silently.
`tests/unit/runners/test_vllm_wheel.py` builds them with the vLLM 0.34.0 wheel's own
classes (see docs/concepts/checked-against-real.md).

Running it for real (Linux, CUDA GPU, `pip install "medbatch[vllm]"`):

```python
runner = VLLMRunner(model="google/medgemma-4b-it", max_model_len=8192)
with runner:
    result = classify(dataset, get_task("ecg"), runner, constrained=True)
```

or `[runner] kind = "vllm"` with the same keys in a run config. MedGemma is gated on the
Hugging Face Hub: accept its licence and set `HF_TOKEN` first. Tests use the fake engine in
`medbatch.testing.fake_vllm`; `pytest -m gpu tests/integration` runs the real one.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from medbatch.constraints import to_vllm_structured_outputs
from medbatch.errors import ConfigError, ImageLoadError, MissingDependencyError, RunnerError
from medbatch.images import to_data_url
from medbatch.profiles import ModelProfile, fold_system_messages, profile_for
from medbatch.records import (
    ImageRef,
    InferenceRequest,
    InferenceResponse,
    Usage,
)
from medbatch.runners.base import BatchRunner, RunnerCapabilities, RunnerConfig
from medbatch.scoring import label_probabilities, label_scores_from_top_logprobs

__all__ = ["VLLMRunner", "VLLMRunnerConfig", "fold_system_messages"]

logger = logging.getLogger(__name__)

_DEFAULT_TOP_LOGPROBS = 5
# Score mode scores the continuations from this many tokens before the end of the prompt
# (rendered for generation); the chat template's end of turn and generation prompt must
# fit in it, or the request is scored again in full.
_SCORE_START_MARGIN = 16


class VLLMRunnerConfig(RunnerConfig):
    """Settings of `VLLMRunner` (`[runner] kind = "vllm"`).

    Defaults suit MedGemma 4B in bf16 on one 24-80 GB GPU: a prompt, one image (256
    tokens) and a 1k-token answer fit in 8k tokens of context.
    """

    model: str = Field(description="Hugging Face model id or local path.")
    revision: str | None = Field(default=None, description="Model revision (branch, tag, sha).")
    dtype: Literal["bfloat16", "float16", "float32", "auto"] = Field(
        default="bfloat16", description="Weights and activations dtype (Gemma 3 needs bf16)."
    )
    max_model_len: int | None = Field(
        default=8192, ge=1, description="Context length; smaller leaves more KV-cache room."
    )
    gpu_memory_utilization: float = Field(
        default=0.9, gt=0, le=1, description="Fraction of GPU memory vLLM may take."
    )
    limit_mm_per_prompt: dict[str, int] = Field(
        default_factory=lambda: {"image": 1},
        description="Most items per modality in one prompt (reserves encoder memory).",
    )
    tensor_parallel_size: int = Field(default=1, ge=1, description="GPUs to shard over.")
    chunk_size: int = Field(
        default=256, ge=1, description="Requests per LLM.chat call (results stream per chunk)."
    )
    image_transport: Literal["data_url", "file"] = Field(
        default="data_url",
        description="data_url: base64 in the prompt (resized, EXIF applied); file: file:// "
        "URLs of local images (needs allowed_local_media_path; sent as they are).",
    )
    allowed_local_media_path: str | None = Field(
        default=None, description="Directory vLLM may read file:// images from."
    )
    seed: int = Field(default=0, description="Engine seed (per-request seeds come from params).")
    logprobs: int = Field(
        default=0,
        ge=0,
        le=20,
        description="Top alternatives per token to return (label scores); 0: only when the "
        "request's params ask, then 5.",
    )
    max_image_side: int | None = Field(
        default=None,
        ge=0,
        description="Shrink data-URL images to this side; None: the model's native size if "
        "known; 0: never shrink.",
    )
    fold_system: bool | None = Field(
        default=None,
        description="Fold system text into the first user turn; None: as the model's "
        "profile says (yes for Gemma models).",
    )
    trust_remote_code: bool = Field(default=False, description="Run model code from the Hub.")
    enforce_eager: bool = Field(
        default=False, description="Skip CUDA graphs (slower, starts faster, less memory)."
    )
    engine_args: dict[str, Any] = Field(
        default_factory=dict, description="Extra keyword arguments for vllm.LLM(...)."
    )


def _import_vllm() -> tuple[Any, Any, Any]:
    """`(vllm, SamplingParams, StructuredOutputsParams)`, or the install hint."""
    try:
        import vllm
        from vllm.sampling_params import SamplingParams, StructuredOutputsParams
    except ImportError as exc:
        raise MissingDependencyError("VLLMRunner", "vllm", "vllm") from exc
    return vllm, SamplingParams, StructuredOutputsParams


class VLLMRunner(BatchRunner):
    """Classify with an in-process vLLM engine (see the module docs).

    Args:
        config: The settings; None: the defaults plus `overrides`.
        llm: An engine to use instead of building `vllm.LLM` at `start` (tests, or an
            engine shared between runners).
        profile: The model family's rules (native image size, system role); default
            `profile_for(model)`.
        **overrides: Fields of `VLLMRunnerConfig`, validated by it (e.g. `model=...`).

    Raises:
        ConfigError: `image_transport="file"` without `allowed_local_media_path`.
    """

    name: ClassVar[str] = "vllm"
    config_class: ClassVar[type[RunnerConfig] | None] = VLLMRunnerConfig
    capabilities = RunnerCapabilities(
        batching=True,
        constrained_decoding=True,
        label_scores=True,
        likelihood_scoring=True,
        image_inputs=frozenset({"bytes", "url"}),
        expensive=True,
    )

    def __init__(
        self,
        config: VLLMRunnerConfig | None = None,
        /,
        *,
        llm: Any | None = None,
        profile: ModelProfile | None = None,
        **overrides: Any,
    ) -> None:
        self.config: VLLMRunnerConfig = self._settings(config, overrides)
        cfg = self.config
        if cfg.image_transport == "file" and not cfg.allowed_local_media_path:
            raise ConfigError(
                'image_transport="file" needs allowed_local_media_path: the directory vLLM '
                "may read images from (e.g. the dataset root)"
            )
        self.model_id = f"{cfg.model}@{cfg.revision}" if cfg.revision else cfg.model
        self.batch_size = cfg.chunk_size
        side = cfg.max_image_side
        self.profile: ModelProfile = profile or profile_for(cfg.model)
        self._max_side = self.profile.image_size if side is None else (side or None)
        fold = self.profile.system_role == "fold" if cfg.fold_system is None else cfg.fold_system
        self._fold = fold
        self._media_root = (
            Path(cfg.allowed_local_media_path).resolve() if cfg.allowed_local_media_path else None
        )
        self._llm = llm
        self._owns_llm = llm is None
        self._sampling_params: Any = None
        self._structured_outputs: Any = None
        self._vllm_version: str | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def engine_kwargs(self) -> dict[str, Any]:
        """The keyword arguments `start` passes to `vllm.LLM`."""
        cfg = self.config
        kwargs: dict[str, Any] = {
            "model": cfg.model,
            "dtype": cfg.dtype,
            "gpu_memory_utilization": cfg.gpu_memory_utilization,
            "limit_mm_per_prompt": dict(cfg.limit_mm_per_prompt),
            "tensor_parallel_size": cfg.tensor_parallel_size,
            "seed": cfg.seed,
            "trust_remote_code": cfg.trust_remote_code,
            "enforce_eager": cfg.enforce_eager,
        }
        if cfg.revision is not None:
            kwargs["revision"] = cfg.revision
        if cfg.max_model_len is not None:
            kwargs["max_model_len"] = cfg.max_model_len
        if self._media_root is not None:
            kwargs["allowed_local_media_path"] = str(self._media_root)
        if cfg.logprobs:
            kwargs["max_logprobs"] = max(cfg.logprobs, _DEFAULT_TOP_LOGPROBS)
        kwargs.update(cfg.engine_args)
        return kwargs

    def start(self) -> None:
        """Import vLLM and load the model onto the GPU (minutes). Idempotent.

        Raises:
            MissingDependencyError: vLLM is not installed.
            RunnerError: The engine failed to start (no GPU, out of memory, gated model).
        """
        vllm, self._sampling_params, self._structured_outputs = _import_vllm()
        self._vllm_version = getattr(vllm, "__version__", None)
        if self._llm is not None:
            return
        kwargs = self.engine_kwargs()
        logger.info("starting vLLM %s with %s", self._vllm_version, kwargs["model"])
        try:
            self._llm = vllm.LLM(**kwargs)
        except TypeError as exc:
            # EngineArgs refuses keywords it does not know (e.g. `swap_space`, gone in
            # recent vLLM), which can only come from `engine_args`.
            raise RunnerError(
                f"vLLM {self._vllm_version} refused an engine argument: {exc}. Check "
                "engine_args against this vLLM version's EngineArgs"
            ) from exc
        except (ValueError, RuntimeError, OSError) as exc:
            raise RunnerError(
                f"vLLM could not start {kwargs['model']}: {exc}. Check the GPU (nvidia-smi), "
                "gpu_memory_utilization / max_model_len, and HF_TOKEN for gated models"
            ) from exc
        self._owns_llm = True

    def close(self) -> None:
        """Drop the engine (its GPU memory is freed once nothing else holds it)."""
        if self._owns_llm and self._llm is not None:
            self._llm = None
            gc.collect()

    def describe(self) -> dict[str, Any]:
        """Runner facts for the manifest (engine settings and the vLLM version)."""
        return {
            **super().describe(),
            "vllm_version": self._vllm_version,
            "max_image_side": self._max_side,
            "fold_system": self._fold,
            **self.config.model_dump(mode="json"),
        }

    # -- one chunk -------------------------------------------------------------------------

    def _run_batch(self, requests: Sequence[InferenceRequest]) -> Iterable[InferenceResponse]:
        if self._llm is None or self._sampling_params is None:
            self.start()
        conversations: list[list[dict[str, Any]]] = []
        params: list[Any] = []
        ready: list[InferenceRequest] = []
        scored: list[tuple[InferenceRequest, list[dict[str, Any]]]] = []
        for request in requests:
            try:
                conversation = self._conversation(request)
            except ImageLoadError as exc:
                yield InferenceResponse.failure(
                    request.record_id, "image_error", str(exc), retryable=False
                )
                continue
            if request.constraint is not None and request.constraint.mode == "score":
                scored.append((request, conversation))
                continue
            conversations.append(conversation)
            params.append(self._params(request))
            ready.append(request)
        if ready:
            yield from self._generate(ready, conversations, params)
        if scored:
            yield from self._score(scored)

    def _generate(
        self,
        requests: Sequence[InferenceRequest],
        conversations: list[list[dict[str, Any]]],
        params: list[Any],
    ) -> Iterator[InferenceResponse]:
        llm = self._llm
        assert llm is not None
        started = time.perf_counter()
        try:
            outputs = llm.chat(conversations, sampling_params=params, use_tqdm=False)
        # vLLM >= 0.27 rejects a prompt with VLLMValidationError, a VLLMError(Exception) and
        # not a ValueError; chat templates raise jinja2 errors. Whatever the type, one bad
        # prompt fails the whole call, so any exception is isolated below.
        except Exception as exc:
            yield from self._isolate(
                requests,
                exc,
                time.perf_counter() - started,
                lambda part: self._generate(requests[part], conversations[part], params[part]),
            )
            return
        # Offline batching has no per-request clock: each record gets its share of the call.
        latency = (time.perf_counter() - started) / len(requests)
        for request, output in zip(requests, outputs, strict=True):
            yield self._response(request, output, latency)

    def _score(
        self,
        rows: Sequence[tuple[InferenceRequest, list[dict[str, Any]]]],
        *,
        reuse_prompt: bool = True,
    ) -> Iterator[InferenceResponse]:
        """`score` mode: one prefill of each prompt plus its K label continuations.

        Each request becomes K conversations, its own plus an assistant turn holding one
        label, rendered whole (`add_generation_prompt=False`) so the end-of-turn token after
        the label is scored too: without it a label that is a prefix of another would always
        win. vLLM returns the log-probability of each prompt token (`prompt_logprobs=0`:
        the actual token only); a label's score is the sum over the tokens after the prefix
        its K prompts share. The shared prefix ends wherever tokenisation makes the prompts
        differ, so a boundary token is counted for every label; tokens before it have the
        same log-probability in all K prompts (a causal model sees the same context) and
        would only add a constant, which the normalisation cancels.

        vLLM does not read the prefix cache for a request with `prompt_logprobs` unless
        `prompt_logprob_start` says where scoring begins, and it would then prefill the
        prompt and its image K times. So the prompt is prefilled once first (as for
        generation, one token), and the K continuations ask for scores only from near its
        end, reading the cached rows before. A request whose labels diverge earlier than
        that (an unusual chat template) is scored again in full (`reuse_prompt=False`).
        """
        llm = self._llm
        assert llm is not None
        started = time.perf_counter()
        try:
            starts = [0] * len(rows)
            if reuse_prompt:
                prompts = llm.chat(
                    [conversation for _, conversation in rows],
                    sampling_params=self._sampling_params(max_tokens=1, temperature=0.0),
                    use_tqdm=False,
                )
                starts = [
                    max(0, len(output.prompt_token_ids) - _SCORE_START_MARGIN) for output in prompts
                ]
            conversations: list[list[dict[str, Any]]] = []
            params: list[Any] = []
            for (request, conversation), start in zip(rows, starts, strict=True):
                assert request.constraint is not None
                for label in request.constraint.labels:
                    conversations.append([*conversation, {"role": "assistant", "content": label}])
                    # One token must be generated; it is never read.
                    options: dict[str, Any] = {"prompt_logprobs": 0}
                    if start:
                        options.update(prompt_logprob_start=start, skip_reading_prefix_cache=False)
                    params.append(self._sampling_params(max_tokens=1, temperature=0.0, **options))
            outputs = llm.chat(
                conversations,
                sampling_params=params,
                use_tqdm=False,
                add_generation_prompt=False,
                continue_final_message=False,
            )
        except Exception as exc:  # one bad prompt fails the call, as in `_generate`
            yield from self._isolate(
                [request for request, _ in rows],
                exc,
                time.perf_counter() - started,
                lambda part: self._score(rows[part], reuse_prompt=reuse_prompt),
            )
            return
        latency = (time.perf_counter() - started) / len(rows)
        again: list[tuple[InferenceRequest, list[dict[str, Any]]]] = []
        position = 0
        for request, conversation in rows:
            assert request.constraint is not None
            labels = request.constraint.labels
            mine = outputs[position : position + len(labels)]
            position += len(labels)
            try:
                sums, shared = _label_logprobs(labels, mine)
                scores = label_probabilities(sums)
            except _UnscoredError:
                again.append((request, conversation))
                continue
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                yield InferenceResponse.failure(
                    request.record_id,
                    "runner_error",
                    f"vLLM returned unusable prompt log-probabilities: {exc}",
                    retryable=False,
                    latency_s=latency,
                )
                continue
            yield InferenceResponse(
                record_id=request.record_id,
                # max keeps the first of equal scores: a tie goes to the label listed first.
                text=max(scores, key=scores.__getitem__),
                finish_reason="stop",
                usage=Usage(prompt_tokens=shared, completion_tokens=0),
                label_scores=scores,
                latency_s=latency,
            )
        if again and reuse_prompt:
            yield from self._score(again, reuse_prompt=False)
        elif again:
            for request, _ in again:
                yield InferenceResponse.failure(
                    request.record_id,
                    "runner_error",
                    "vLLM returned no prompt log-probabilities for the label tokens",
                    retryable=False,
                    latency_s=latency,
                )

    def _isolate(
        self,
        requests: Sequence[InferenceRequest],
        exc: Exception,
        latency: float,
        again: Callable[[slice], Iterator[InferenceResponse]],
    ) -> Iterator[InferenceResponse]:
        """A call `exc` rejected: fail its records if alone or the engine died, else retry halves.

        `again(part)` answers the requests in `requests[part]` with the same call.
        """
        if len(requests) == 1 or _is_engine_dead(exc):
            yield from self._failed(requests, exc, latency)
            return
        # Halves, not singles: one bad record in 256 costs ~16 calls, and the good
        # records are still answered in large batches.
        half = len(requests) // 2
        logger.warning(
            "vLLM rejected a chunk of %d (%s: %s); splitting it to isolate the record",
            len(requests),
            type(exc).__name__,
            exc,
        )
        yield from again(slice(None, half))
        yield from again(slice(half, None))

    @staticmethod
    def _failed(
        requests: Sequence[InferenceRequest], exc: Exception, latency: float
    ) -> Iterator[InferenceResponse]:
        if _is_engine_dead(exc):
            message = f"the vLLM engine died: {type(exc).__name__}: {exc}"
            retryable = True
        else:
            message = f"vLLM rejected this record: {type(exc).__name__}: {exc}"
            # A request vLLM refuses (too long, too many images) is refused again.
            retryable = not _is_a(exc, "VLLMClientError")
        for request in requests:
            yield InferenceResponse.failure(
                request.record_id,
                "runner_error",
                message,
                retryable=retryable,
                latency_s=latency / len(requests),
            )

    def _conversation(self, request: InferenceRequest) -> list[dict[str, Any]]:
        messages = fold_system_messages(request.messages) if self._fold else request.messages
        return [message.to_openai(image_url=self._image_url) for message in messages]

    def _image_url(self, ref: ImageRef) -> str:
        if self.config.image_transport == "file" and ref.path is not None:
            path = ref.path.resolve()
            if self._media_root is not None and path.is_relative_to(self._media_root):
                if not path.is_file():
                    raise ImageLoadError(f"image file {ref.path} does not exist")
                return path.as_uri()
        return to_data_url(ref, max_side=self._max_side)

    def _params(self, request: InferenceRequest) -> Any:
        """`SamplingParams` for one request (keyword names as in vLLM >= 0.11)."""
        p = request.params
        kwargs: dict[str, Any] = {
            "temperature": p.temperature,
            "top_p": p.top_p,
            "max_tokens": p.max_tokens,
            "seed": p.seed,
        }
        if p.stop:
            kwargs["stop"] = list(p.stop)
        top_k = self.config.logprobs or (_DEFAULT_TOP_LOGPROBS if p.logprobs else 0)
        if top_k:
            kwargs["logprobs"] = top_k
        if request.constraint is not None:
            kwargs["structured_outputs"] = self._structured_outputs(
                **to_vllm_structured_outputs(request.constraint)
            )
        return self._sampling_params(**kwargs)

    def _response(
        self, request: InferenceRequest, output: Any, latency: float
    ) -> InferenceResponse:
        completion = output.outputs[0]
        prompt_ids = getattr(output, "prompt_token_ids", None)
        token_ids = getattr(completion, "token_ids", None)
        label_scores = None
        if request.constraint is not None and getattr(completion, "logprobs", None):
            content = _openai_logprobs(completion)
            try:
                label_scores = label_scores_from_top_logprobs(content, request.constraint.labels)
            except ValueError as exc:
                logger.debug("record %s: unusable logprobs (%s)", request.record_id, exc)
        return InferenceResponse(
            record_id=request.record_id,
            text=completion.text,
            finish_reason=completion.finish_reason,
            usage=Usage(
                prompt_tokens=len(prompt_ids) if prompt_ids is not None else None,
                completion_tokens=len(token_ids) if token_ids is not None else None,
            ),
            label_scores=label_scores,
            latency_s=latency,
        )


def _is_a(exc: BaseException, class_name: str) -> bool:
    """Whether `exc` is an instance of vLLM's class of that name (no vLLM import needed)."""
    return any(cls.__name__ == class_name for cls in type(exc).__mro__)


def _is_engine_dead(exc: BaseException) -> bool:
    return _is_a(exc, "EngineDeadError")


class _UnscoredError(ValueError):
    """A label token before `prompt_logprob_start`: its log-probability was not returned."""


def _label_logprobs(labels: Sequence[str], outputs: Sequence[Any]) -> tuple[dict[str, float], int]:
    """Each label's log-probability from the `prompt_logprobs` of its K prompts.

    Returns:
        `{label: sum of log p over the tokens after the shared prefix}`, and the length of
        that shared prefix (the prompt's tokens, for `usage`).

    Raises:
        ValueError: A prompt without `prompt_logprobs`, or K prompts that are all the same.
    """
    token_lists = [list(output.prompt_token_ids) for output in outputs]
    first = token_lists[0]
    shared = min(len(tokens) for tokens in token_lists)
    for tokens in token_lists[1:]:
        shared = next((i for i in range(shared) if tokens[i] != first[i]), shared)
    if len(labels) > 1 and all(len(tokens) == shared for tokens in token_lists):
        raise ValueError("the label continuations tokenised to the same prompt")
    sums: dict[str, float] = {}
    for label, tokens, output in zip(labels, token_lists, outputs, strict=True):
        logprobs = output.prompt_logprobs
        if logprobs is None:
            raise ValueError("no prompt_logprobs in the output")
        # Entry i holds log p(token i | tokens before it); entry 0 is None.
        start = max(shared, 1)
        if any(logprobs[i] is None for i in range(start, len(tokens))):
            raise _UnscoredError(label)
        sums[label] = sum(logprobs[i][tokens[i]].logprob for i in range(start, len(tokens)))
    return sums, shared


def _openai_logprobs(completion: Any) -> list[dict[str, Any]]:
    """vLLM's per-token `{token_id: Logprob}` dicts as OpenAI `logprobs.content` items."""
    content = []
    for token_id, step in zip(completion.token_ids, completion.logprobs, strict=False):
        chosen = step.get(token_id)
        ranked = sorted(step.values(), key=lambda lp: -lp.logprob)
        content.append(
            {
                "token": (chosen.decoded_token if chosen is not None else None) or "",
                "logprob": chosen.logprob if chosen is not None else ranked[0].logprob,
                "top_logprobs": [
                    {"token": lp.decoded_token or "", "logprob": lp.logprob} for lp in ranked
                ],
            }
        )
    return content
