"""`TransformersRunner`: any image-text-to-text model from the Hugging Face hub or a folder.

```
requests ──▶ read-ahead ──▶ thread pool: load_image + chat template + processor (one record)
                                   │  (batch k+1 is prepared while batch k generates)
                                   ▼
             collate (left padding, crops padded) ──▶ model.generate ──▶ text, usage
                                   └──▶ label scoring (one prefill + one forward over the
                                        label continuations, from the raw model log-probs);
                                        greedy constrained answers take the argmax label
```

Needs the `local` extra (`pip install "medbatch[local]"`): torch and transformers are imported
when the runner starts, never when medbatch is imported.

Example:
    >>> from medbatch.testing import tiny_vlm
    >>> runner = TransformersRunner(tiny_vlm(tmp_path / "tiny"))   # random answers
    >>> with runner:
    ...     responses = list(runner.run(requests))
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from medbatch.constraints import LabelTrie
from medbatch.errors import ConfigError, ImageLoadError, MissingDependencyError, RunnerError
from medbatch.images import load_image
from medbatch.profiles import GENERIC, ModelProfile, profile_for
from medbatch.records import (
    ChatMessage,
    GenerationParams,
    ImagePart,
    InferenceRequest,
    InferenceResponse,
    LabelConstraint,
    Usage,
)
from medbatch.runners.base import BatchRunner, RunnerCapabilities, RunnerConfig
from medbatch.scoring import label_probabilities

if TYPE_CHECKING:
    import torch

__all__ = ["TINY_MODEL", "TransformersRunner", "TransformersRunnerConfig", "resolve_model"]

TINY_MODEL = "medbatch/tiny-gemma3"
"""A model name medbatch builds itself, offline: `medbatch.testing.tiny_vlm` (seed 0).

Its weights are random, so its answers are too: for trying the whole path (a TOML run, the
report) without a download or a GPU, never for a number that means something.
"""


def resolve_model(model: str) -> str:
    """The name or folder to load for `model`: `TINY_MODEL` becomes a folder built on demand.

    The tiny model is written once to `$MEDBATCH_CACHE_DIR/tiny-gemma3` (default
    `~/.cache/medbatch/tiny-gemma3`, or under `$XDG_CACHE_HOME`) and reused after that.
    Every other value is returned unchanged.
    """
    if model != TINY_MODEL:
        return model
    import os

    from medbatch.testing.tiny_vlm import tiny_vlm

    cache = os.environ.get("MEDBATCH_CACHE_DIR")
    if cache is None:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        cache = str(Path(xdg) / "medbatch")
    return str(tiny_vlm(Path(cache).expanduser() / "tiny-gemma3", seed=0))


logger = logging.getLogger(__name__)

# Continuations scored in one forward pass (prompt rows x label variants); bounds the memory
# of the expanded KV cache and the logits (variants x tokens x vocabulary).
_MAX_SCORING_ROWS = 64


def _local_model_type(model: str) -> str | None:
    """`model_type` from a local model folder's `config.json`, or None (hub names too)."""
    config = Path(model) / "config.json"
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


class TransformersRunnerConfig(RunnerConfig):
    """Settings of `TransformersRunner` (`[runner] kind = "transformers"`)."""

    model: str = Field(
        description="Hub name (e.g. google/medgemma-4b-it), local folder of the model, or "
        f"{TINY_MODEL!r}: a tiny random-weight model built offline (answers are random)."
    )
    revision: str | None = Field(
        default=None, description="Hub revision (branch, tag or commit) to load."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where to run: auto picks cuda when a GPU is visible."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto", description="Weights' dtype: auto is bfloat16 on GPU, float32 on CPU."
    )
    allow_fp16: bool = Field(
        default=False,
        description="Allow float16 for Gemma 3 models, which overflow in it (empty/NaN text).",
    )
    batch_size: int = Field(default=8, ge=1, description="Records generated together.")
    num_image_workers: int = Field(
        default=4, ge=1, description="Threads decoding and preprocessing images ahead of the model."
    )
    max_image_side: int | None = Field(
        default=None,
        gt=0,
        description="Shrink images so the longer side is at most this (pixels) before "
        "preprocessing; None keeps them as they are.",
    )
    pan_and_scan: bool = Field(
        default=False,
        description="Gemma 3 pan-and-scan: also show the model crops of wide images (e.g. "
        "12-lead ECG pages); costs 256 more image tokens per crop on MedGemma.",
    )
    score_labels: bool = Field(
        default=True,
        description="With a label constraint, also compute each label's probability from the "
        "model's unconstrained log-probabilities (one extra forward pass per batch).",
    )
    trust_remote_code: bool = Field(
        default=False, description="Run model code shipped with the checkpoint (security risk)."
    )
    attn_implementation: str | None = Field(
        default=None,
        description="Attention kernel (eager, sdpa, ...); None lets transformers pick.",
    )


@dataclass
class _Prepared:
    """One record ready for the model: its tensors with batch dimension 1."""

    inputs: dict[str, torch.Tensor]
    prompt_tokens: int
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Loaded:
    processor: Any
    model: Any
    tokenizer: Any
    device: Any
    dtype: Any
    end_ids: tuple[int, ...]
    pad_id: int
    cache_kwarg: str


class TransformersRunner(BatchRunner):
    """Run an image-text-to-text model with transformers, batched, on CPU or GPU.

    Loads with `AutoProcessor` / `AutoModelForImageTextToText` (so Gemma 3 / MedGemma,
    PaliGemma, Qwen-VL, ... all work), renders each request with the model's own chat template
    (Gemma 3 has no system role: its template folds the system text into the first user turn),
    and generates a batch at a time with left padding.

    - Images are decoded and preprocessed in a thread pool, one batch ahead of the model, so
      generation never waits on JPEG decoding. A record whose image cannot be read gets
      `RecordError(kind="image_error")`; the rest of its batch goes on.
    - Decoding follows each request's `GenerationParams`: greedy when `temperature == 0`,
      otherwise sampled with `temperature` and `top_p` (the model's own defaults such as
      MedGemma's `top_k=64` are overridden), seeded per batch without touching the global RNG.
      `max_tokens` is honoured; `finish_reason` is `stop` (end of turn, EOS or a stop string)
      or `length`.
    - A `LabelConstraint` restricts decoding with a token trie of the label names
      (`prefix_allowed_tokens_fn`): `choice` answers exactly one label; `json` answers
      `{"reasoning": "...", "label": "..."}`. With `score_labels`, `label_scores` holds each
      label's probability computed from the *unconstrained* model: the log-probability of the
      label's tokens and of the end of the answer after them, summed over tokenisations,
      normalised over the label set. With greedy decoding the answer's label is then the
      argmax of those scores (docs/concepts/label-scores.md), so accuracy and ROC describe
      the same classifier.
    - Prompts are tokenised as the model's processor does (`apply_chat_template` with
      `tokenize=True`): the BOS is added only when the chat template does not write it.
    - Records whose images split into different numbers of crops (Idefics3, SmolVLM,
      LLaVA-NeXT) batch together: crops are zero-padded as the processor pads them.

    Args:
        config: The settings, or the shorthand: a hub name or local folder as the model
            (e.g. `medbatch.testing.tiny_vlm(...)`); None: `overrides` give the model.
        profile: The model family's rules (system role, dtype refusals); default
            `profile_for` of the model id and a local folder's `model_type`.
        **overrides: Fields of `TransformersRunnerConfig`, validated by it (`device`,
            `dtype`, `batch_size`, ...).

    Raises:
        MissingDependencyError: torch or transformers is not installed (on `start`).
        ConfigError: float16 was asked for a Gemma 3 model without `allow_fp16`, or cuda was
            asked where no GPU is visible (on `start`).
    """

    name: ClassVar[str] = "transformers"
    config_class: ClassVar[type[RunnerConfig] | None] = TransformersRunnerConfig
    profile: ModelProfile = GENERIC
    """The model family's rules, resolved at construction from the model id (and a local
    folder's `model_type`) unless one was given."""
    capabilities = RunnerCapabilities(
        batching=True,
        constrained_decoding=True,
        label_scores=True,
        image_inputs=frozenset({"bytes"}),
    )

    def __init__(
        self,
        config: TransformersRunnerConfig | str | Path | None = None,
        /,
        *,
        profile: ModelProfile | None = None,
        **overrides: Any,
    ) -> None:
        if isinstance(config, (str, Path)):
            # The shorthand `TransformersRunner("google/medgemma-4b-it")`.
            overrides = {"model": str(config), **overrides}
            config = None
        elif "model" in overrides and isinstance(overrides["model"], Path):
            overrides["model"] = str(overrides["model"])
        self.config: TransformersRunnerConfig = self._settings(config, overrides)
        cfg = self.config
        self.batch_size = cfg.batch_size
        self.model_id = cfg.model if cfg.revision is None else f"{cfg.model}@{cfg.revision}"
        # Resolved once, here, so the prompt the pipeline renders does not depend on whether
        # the runner was started; a local folder's `config.json` names the family even when
        # its path does not.
        self._given_profile = profile
        self.profile = profile or profile_for(cfg.model, model_type=_local_model_type(cfg.model))
        self._loaded: _Loaded | None = None
        self._pool: ThreadPoolExecutor | None = None
        # Read-ahead work by record id, with the request it was made for (an abandoned run
        # may leave some behind; they are only reused for an identical request).
        self._futures: dict[str, tuple[InferenceRequest, Future[_Prepared]]] = {}
        self._start_lock = threading.Lock()
        self._string_tokens: Any = None  # lazily built mask of JSON-string-safe tokens

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Load the processor and the model (idempotent)."""
        with self._start_lock:
            if self._loaded is None:
                self._loaded = self._load()
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.config.num_image_workers, thread_name_prefix="medbatch-img"
                )

    def close(self) -> None:
        """Stop the image threads and release the model (idempotent)."""
        if self._pool is not None:
            for _, future in self._futures.values():
                future.cancel()
            self._futures.clear()
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._loaded is not None:
            on_gpu = self._loaded.device.type == "cuda"
            self._loaded = None
            if on_gpu:
                import torch

                torch.cuda.empty_cache()

    def describe(self) -> dict[str, Any]:
        """Runner facts for the run manifest."""
        facts = super().describe()
        if self.config.model == TINY_MODEL:
            facts["random_weights"] = True
        facts.update(
            revision=self.config.revision,
            profile=self.profile.name,
            batch_size=self.batch_size,
            pan_and_scan=self.config.pan_and_scan,
            max_image_side=self.config.max_image_side,
        )
        if self._loaded is not None:
            facts.update(device=str(self._loaded.device), dtype=str(self._loaded.dtype))
        return facts

    def _load(self) -> _Loaded:
        try:
            import torch
            import transformers as _transformers
        except ImportError as exc:
            raise MissingDependencyError(
                "TransformersRunner", exc.name or "torch", "local"
            ) from exc
        # transformers' own annotations are partial; the seam to it is typed as Any.
        transformers: Any = _transformers

        cfg = self.config
        if cfg.model == TINY_MODEL:
            # Built and loaded in a second; transformers' progress bars would only clutter.
            transformers.utils.logging.disable_progress_bar()
            cfg = cfg.model_copy(update={"model": resolve_model(cfg.model)})
        device = _resolve_device(cfg.device, torch)
        dtype = _resolve_dtype(cfg.dtype, device, torch)
        common: dict[str, Any] = {
            "revision": cfg.revision,
            "trust_remote_code": cfg.trust_remote_code,
        }
        try:
            model_config = transformers.AutoConfig.from_pretrained(cfg.model, **common)
        except (OSError, ValueError) as exc:
            raise RunnerError(
                f"cannot load model {cfg.model!r}: {exc}. Give a local folder or a hub name "
                "you have access to (set HF_TOKEN for gated models such as MedGemma)."
            ) from exc
        model_type = str(getattr(model_config, "model_type", ""))
        # A hub model's `model_type` is known only now: the dtype rules use it too.
        family = self._given_profile or profile_for(cfg.model, model_type=model_type)
        try:
            family.check_dtype(str(dtype), force=cfg.allow_fp16)
        except ConfigError as exc:
            raise ConfigError(f"{cfg.model}: {exc}") from None

        model_kwargs: dict[str, Any] = {"dtype": dtype, **common}
        if cfg.attn_implementation is not None:
            model_kwargs["attn_implementation"] = cfg.attn_implementation
        try:
            processor = transformers.AutoProcessor.from_pretrained(cfg.model, **common)
            model = transformers.AutoModelForImageTextToText.from_pretrained(
                cfg.model, **model_kwargs
            )
        except (OSError, ValueError) as exc:
            raise RunnerError(f"cannot load model {cfg.model!r}: {exc}") from exc
        model = model.to(device)
        model.eval()

        tokenizer = getattr(processor, "tokenizer", processor)
        end_ids = _end_token_ids(model, tokenizer)
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            pad_id = end_ids[0]
        parameters = inspect.signature(model.forward).parameters
        # transformers 5 renamed past_key_values to cache; use whichever this version takes.
        cache_kwarg = "cache" if "cache" in parameters else "past_key_values"
        logger.info("loaded %s on %s as %s", cfg.model, device, dtype)
        return _Loaded(
            processor=processor,
            model=model,
            tokenizer=tokenizer,
            device=device,
            dtype=dtype,
            end_ids=end_ids,
            pad_id=int(pad_id),
            cache_kwarg=cache_kwarg,
        )

    @property
    def loaded(self) -> _Loaded:
        """The processor, model and derived facts; loads them on first use."""
        if self._loaded is None:
            self.start()
        assert self._loaded is not None
        return self._loaded

    # -- requests → tensors (thread pool) --------------------------------------------------

    def run(self, requests: Iterable[InferenceRequest]) -> Iterator[InferenceResponse]:
        """Answer every request exactly once (see `BatchRunner.run`).

        Reads one batch ahead of the model: while batch *k* generates, the images of batch
        *k+1* are decoded and preprocessed in the thread pool. The model is loaded when the
        first request arrives, so no request (a resume with nothing left) loads nothing.
        """
        yield from super().run(self._read_ahead(requests))

    def _read_ahead(self, requests: Iterable[InferenceRequest]) -> Iterator[InferenceRequest]:
        lookahead = self.batch_size or 1
        window: deque[InferenceRequest] = deque()
        for request in requests:
            self._submit(request)
            window.append(request)
            if len(window) > lookahead:
                yield window.popleft()
        while window:
            yield window.popleft()

    def _submit(self, request: InferenceRequest) -> Future[_Prepared]:
        if self._pool is None:
            self.start()
        assert self._pool is not None
        future = self._pool.submit(self._prepare, request)
        self._futures[request.record_id] = (request, future)
        return future

    def _prepare(self, request: InferenceRequest) -> _Prepared:
        """Decode the images and run the processor for one record (in a worker thread)."""
        loaded = self.loaded
        conversation, images = self._conversation(request.messages)
        prompt = loaded.processor.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=False
        )
        kwargs: dict[str, Any] = {"return_tensors": "pt"}
        if _template_emits_bos(prompt, loaded.tokenizer):
            # The processor's own rule (ProcessorMixin.apply_chat_template with tokenize=True):
            # no special tokens when the rendered prompt already starts with the BOS (Gemma 3,
            # Idefics3); otherwise the tokenizer adds its own (LLaVA's template has no BOS).
            kwargs["add_special_tokens"] = False
        if images and self.config.pan_and_scan:
            kwargs["do_pan_and_scan"] = True
        inputs = loaded.processor(text=[prompt], images=[images] if images else None, **kwargs)
        tensors = {key: value for key, value in inputs.items() if hasattr(value, "shape")}
        provenance: dict[str, Any] = {
            # What the model was actually shown, so any number in a report can be traced:
            # the chat template's output (system text folding included) and the crops.
            "rendered_prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest(),
            "image_sizes": [list(image.size) for image in images],
            "image_crops": _count_crops(tensors, len(images)),
            "pan_and_scan": bool(images and self.config.pan_and_scan),
        }
        return _Prepared(
            inputs=tensors,
            prompt_tokens=int(tensors["input_ids"].shape[1]),
            provenance=provenance,
        )

    def _conversation(
        self, messages: Sequence[ChatMessage]
    ) -> tuple[list[dict[str, Any]], list[Any]]:
        conversation: list[dict[str, Any]] = []
        images: list[Any] = []
        for message in messages:
            content: list[dict[str, Any]] = []
            for part in message.content:
                if isinstance(part, ImagePart):
                    image = load_image(part.image, max_side=self.config.max_image_side)
                    images.append(image)
                    content.append({"type": "image", "image": image})
                else:
                    content.append({"type": "text", "text": part.text})
            conversation.append({"role": message.role, "content": content})
        return conversation, images

    # -- one batch ---------------------------------------------------------------------------

    def _run_batch(self, requests: Sequence[InferenceRequest]) -> Iterator[InferenceResponse]:
        started = time.perf_counter()
        ready: list[tuple[InferenceRequest, _Prepared]] = []
        for request in requests:
            ahead = self._futures.pop(request.record_id, None)
            if ahead is not None and ahead[0] == request:
                future = ahead[1]
            else:
                future = self._submit(request)
                self._futures.pop(request.record_id, None)
            try:
                ready.append((request, future.result()))
            except ImageLoadError as exc:
                yield InferenceResponse.failure(
                    request.record_id,
                    "image_error",
                    f"record {request.record_id}: {exc}",
                    retryable=False,
                    latency_s=time.perf_counter() - started,
                )
            except Exception as exc:  # one bad record, not the batch
                yield InferenceResponse.failure(
                    request.record_id,
                    "invalid_request",
                    f"record {request.record_id} could not be prepared for {self.model_id}: "
                    f"{type(exc).__name__}: {exc}",
                    retryable=False,
                    latency_s=time.perf_counter() - started,
                )
        # Rows decode together when they share decoding settings (normally all do) and a
        # tensor layout: text-only records have no pixel_values, so they generate apart from
        # image records, as the processor could not batch them together either.
        groups: dict[tuple[Any, ...], list[int]] = {}
        for index, (request, prepared) in enumerate(ready):
            key = (request.params, request.constraint, _layout(prepared))
            groups.setdefault(key, []).append(index)
        for (params, constraint, _), indices in groups.items():
            rows = [ready[index] for index in indices]
            yield from self._generate(rows, params, constraint, started)

    def _generate(
        self,
        rows: list[tuple[InferenceRequest, _Prepared]],
        params: GenerationParams,
        constraint: LabelConstraint | None,
        started: float,
    ) -> Iterator[InferenceResponse]:
        loaded = self.loaded
        batch = _collate([prepared for _, prepared in rows], loaded)
        program = _ConstraintProgram.build(constraint, loaded, self._json_string_tokens)
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "pad_token_id": loaded.pad_id,
            "eos_token_id": list(loaded.end_ids),
        }
        if params.temperature == 0.0:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
            kwargs["top_k"] = None
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=loaded.tokenizer)
        greedy = params.temperature == 0.0
        scoring = program is not None and self.config.score_labels
        if scoring and greedy and program is not None and program.trie is not None:
            # Greedy choice: the answer is the argmax of the exact label scores, so the label
            # and its scores never disagree; no decoding is needed.
            scores, best = self._label_scores(
                rows, program, dict.fromkeys(range(len(rows)), 0), [[] for _ in rows]
            )
            generated = [
                _answer_with(program, [], best[row], params.max_tokens) for row in range(len(rows))
            ]
        else:
            generated, scores = self._decode(rows, batch, params, program, kwargs, scoring)

        elapsed = time.perf_counter() - started
        for row, ((request, prepared), tokens) in enumerate(zip(rows, generated, strict=True)):
            text, finish_reason, completion_tokens = _finish(
                tokens, params, loaded, program is not None
            )
            yield InferenceResponse(
                record_id=request.record_id,
                text=text,
                finish_reason=finish_reason,
                usage=Usage(
                    prompt_tokens=prepared.prompt_tokens, completion_tokens=completion_tokens
                ),
                label_scores=scores[row],
                latency_s=elapsed,
                metadata={"batch_rows": len(rows), **prepared.provenance},
            )

    def _decode(
        self,
        rows: list[tuple[InferenceRequest, _Prepared]],
        batch: dict[str, torch.Tensor],
        params: GenerationParams,
        program: _ConstraintProgram | None,
        kwargs: dict[str, Any],
        scoring: bool,
    ) -> tuple[list[list[int]], list[dict[str, float] | None]]:
        """Generate the batch (constrained if asked) and score the labels it reached."""
        import torch

        loaded = self.loaded
        prompt_length = int(batch["input_ids"].shape[1])
        tracker: _Tracker | None = None
        if program is not None and program.trie is not None:
            kwargs["prefix_allowed_tokens_fn"] = program.trie.prefix_allowed_tokens_fn(
                prompt_length
            )
        elif program is not None:
            tracker = _Tracker(program, prompt_length)
            kwargs["prefix_allowed_tokens_fn"] = tracker

        devices = [loaded.device] if loaded.device.type == "cuda" else []
        with torch.inference_mode(), torch.random.fork_rng(devices=devices):
            if params.seed is not None:
                torch.manual_seed(params.seed)
            output = loaded.model.generate(**batch, **kwargs)
        generated: list[list[int]] = output[:, prompt_length:].tolist()

        scores: list[dict[str, float] | None] = [None] * len(rows)
        if program is None or not scoring:
            return generated, scores
        # In choice mode the label is the whole answer; in JSON it starts where the tracker
        # saw the label's opening quote close (a row cut off before it has no scores).
        starts = dict.fromkeys(range(len(rows)), 0) if tracker is None else tracker.label_start
        scores, best = self._label_scores(rows, program, starts, generated)
        if params.temperature == 0.0 and tracker is not None:
            # Greedy JSON: the label written is the argmax of the scores, after the same
            # reasoning; what follows a label is fixed (`"}` and the end), so the answer is
            # what constrained decoding gives when it picks that label.
            for row, label_tokens in best.items():
                start = starts[row]
                generated[row] = _answer_with(
                    program, generated[row][:start], label_tokens, params.max_tokens
                )
        return generated, scores

    # -- label probabilities -------------------------------------------------------------

    def _label_scores(
        self,
        rows: list[tuple[InferenceRequest, _Prepared]],
        program: _ConstraintProgram,
        starts: dict[int, int],
        generated: list[list[int]],
    ) -> tuple[list[dict[str, float] | None], dict[int, tuple[int, ...]]]:
        """Each row's label probabilities given what preceded its label (empty in `choice`).

        Returns:
            The scores (None for a row whose label never started), and for each scored row
            the tokens of its most probable label (that label's most probable spelling).
        """
        contexts: list[list[int] | None] = []
        for row, tokens in enumerate(generated):
            start = starts.get(row)
            contexts.append(None if start is None else tokens[:start])
        wanted = [row for row, context in enumerate(contexts) if context is not None]
        scores: list[dict[str, float] | None] = [None] * len(rows)
        best: dict[int, tuple[int, ...]] = {}
        per_chunk = max(1, _MAX_SCORING_ROWS // len(program.score_variants))
        for first in range(0, len(wanted), per_chunk):
            chunk = wanted[first : first + per_chunk]
            chunk_scores = score_label_continuations(
                self.loaded,
                [rows[row][1] for row in chunk],
                [contexts[row] or [] for row in chunk],
                program.score_variants,
                program.terminators,
            )
            for row, (row_scores, spellings) in zip(chunk, chunk_scores, strict=True):
                scores[row] = row_scores
                # The first label wins a tie, as max() keeps the first maximum.
                best[row] = spellings[max(row_scores, key=row_scores.__getitem__)]
        return scores, best

    def _json_string_tokens(self) -> Any:
        """Token ids that may appear inside a JSON string (no quote, backslash, control)."""
        if self._string_tokens is None:
            import torch

            loaded = self.loaded
            tokenizer = loaded.tokenizer
            size = len(tokenizer)
            special = set(tokenizer.all_special_ids)
            texts = tokenizer.batch_decode([[index] for index in range(size)])
            allowed = [
                index
                for index, text in enumerate(texts)
                if index not in special
                and text
                and not any(char in '"\\' or ord(char) < 0x20 for char in text)
            ]
            self._string_tokens = torch.tensor(allowed, dtype=torch.long)
        return self._string_tokens


# -- helpers ---------------------------------------------------------------------------------


def _resolve_device(device: str, torch: Any) -> Any:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device='cuda' but torch sees no GPU here; use device='cpu' (or 'auto'), or "
            "install a CUDA build of torch"
        )
    return torch.device(device)


def _resolve_dtype(dtype: str, device: Any, torch: Any) -> Any:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def _template_emits_bos(prompt: str, tokenizer: Any) -> bool:
    bos = tokenizer.bos_token
    return bos is not None and prompt.startswith(str(bos))


def _count_crops(tensors: dict[str, torch.Tensor], n_images: int) -> int:
    """How many images (crops, tiles, global views) the vision encoder is shown.

    Processors lay crops out differently: Gemma 3 (pan-and-scan) stacks them as
    `(crops, C, H, W)`; Idefics2/3, SmolVLM and LLaVA-NeXT as `(1, crops, C, H, W)`, padding
    to the batch's most crops with all-zero images (which the models drop, and so does this
    count). Processors that flatten patches (Qwen-VL: `(patches, dim)`) have no crops: each
    image counts once.
    """
    pixels = tensors.get("pixel_values")
    if pixels is None:
        return 0
    if pixels.dim() < 4:
        return n_images
    images = pixels.reshape(-1, *pixels.shape[-3:])
    return int((images != 0).flatten(1).any(dim=1).sum())


def _end_token_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    """Every token that ends an answer: generation config's EOS list, EOS, end of turn."""
    ids: list[int] = []
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.append(configured)
    elif configured:
        ids.extend(int(value) for value in configured)
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    unk = tokenizer.unk_token_id
    for marker in ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_utterance>"):
        token_id = tokenizer.convert_tokens_to_ids(marker)
        if isinstance(token_id, int) and token_id != unk and token_id >= 0:
            ids.append(token_id)
    if not ids:
        raise RunnerError("the model has no end-of-sequence token; cannot tell when answers end")
    return tuple(dict.fromkeys(ids))


def _collate(prepared: Sequence[_Prepared], loaded: _Loaded) -> dict[str, torch.Tensor]:
    """Stack records into one batch: left-pad the token sequences, pad and stack the images.

    Token-aligned tensors (`(1, prompt_tokens, ...)`: input ids, attention mask, token types)
    are left-padded to the longest prompt. Every other tensor is concatenated along its first
    dimension after zero-padding its other dimensions (at the end) to the batch's largest.
    That is what the processors themselves do for several records at once: Idefics2/3 and
    SmolVLM pad a record's crops to the batch's most crops with all-zero images (and a zero
    `pixel_attention_mask`), which their models drop; LLaVA-NeXT pads its patches likewise
    (`image_sizes` says how many are real). Gemma 3's `(crops, C, H, W)` and Qwen-VL's
    `(patches, dim)` only concatenate. So images split into different numbers of crops never
    fail a batch. Rows must share a layout (same keys and ranks, see `_layout`).
    """
    length = max(item.prompt_tokens for item in prepared)
    keys = dict.fromkeys(key for item in prepared for key in item.inputs)
    batch: dict[str, torch.Tensor] = {}
    for key in keys:
        values = [item.inputs[key] for item in prepared]
        sequence_like = all(
            value.dim() >= 2 and value.shape[:2] == (1, item.prompt_tokens)
            for value, item in zip(values, prepared, strict=True)
        )
        fill = loaded.pad_id if key == "input_ids" and sequence_like else 0
        tensor = _pad_and_concatenate(values, fill, left_pad_to=length if sequence_like else None)
        tensor = tensor.to(loaded.device)
        if not sequence_like and tensor.is_floating_point():
            tensor = tensor.to(loaded.dtype)
        batch[key] = tensor
    return batch


def _pad_and_concatenate(
    values: Sequence[torch.Tensor], fill: int, *, left_pad_to: int | None
) -> torch.Tensor:
    """Concatenate along dim 0, padding dims 1.. to the largest (dim 1 on the left if asked)."""
    import torch

    shape = [max(value.shape[dim] for value in values) for dim in range(values[0].dim())]
    if left_pad_to is not None:
        shape[1] = left_pad_to
    padded = []
    for value in values:
        if list(value.shape[1:]) == shape[1:]:
            padded.append(value)
            continue
        out = torch.full((value.shape[0], *shape[1:]), fill, dtype=value.dtype)
        region = [slice(None)] + [slice(0, size) for size in value.shape[1:]]
        if left_pad_to is not None:
            region[1] = slice(shape[1] - value.shape[1], shape[1])
        out[tuple(region)] = value
        padded.append(out)
    return torch.cat(padded, dim=0)


def _layout(prepared: _Prepared) -> tuple[tuple[str, int], ...]:
    """Keys and ranks of a record's tensors: rows that share it can be collated together."""
    return tuple(sorted((key, value.dim()) for key, value in prepared.inputs.items()))


def _finish(
    tokens: list[int], params: GenerationParams, loaded: _Loaded, constrained: bool
) -> tuple[str, str, int]:
    """Text, finish reason and token count of one generated row (padding after the end)."""
    end = next((index for index, token in enumerate(tokens) if token in loaded.end_ids), None)
    if end is not None:
        body, finish_reason, count = tokens[:end], "stop", end + 1
    else:
        body = tokens
        while body and body[-1] == loaded.pad_id and loaded.pad_id not in loaded.end_ids:
            body = body[:-1]
        count = len(body)
        finish_reason = "length" if count >= params.max_tokens else "stop"
    text = str(loaded.tokenizer.decode(body, skip_special_tokens=True))
    for stop in params.stop:
        cut = text.find(stop)
        if cut >= 0:
            text, finish_reason = text[:cut], "stop"
    if constrained and finish_reason == "stop":
        # The trie may allow a leading space variant; the answer itself is the label.
        text = text.strip()
    return text, finish_reason, count


def score_label_continuations(
    loaded: _Loaded,
    prepared: Sequence[_Prepared],
    contexts: Sequence[Sequence[int]],
    variants: Sequence[tuple[str, tuple[int, ...]]],
    terminators: Sequence[int],
) -> list[tuple[dict[str, float], dict[str, tuple[int, ...]]]]:
    """Exact label probabilities from the raw model, in one prefill and one forward pass.

    For each row, the score of a variant (a label's token sequence) is the model's
    log-probability of those tokens after the prompt (plus `contexts[row]`, what the answer
    held before the label) and then of any of `terminators` (what must follow a complete
    label: end of turn in `choice` mode, the closing quote in `json` mode). Without the
    terminator a label that is a prefix of another (NORMAL, NORMAL_VARIANT) would always win.
    Variants of one label are summed; labels are normalised to sum to 1. Each row also gets,
    per label, its most probable variant (the tokens to write when that label is chosen).

    The prompt is run once with its KV cache kept; the cache is repeated once per variant and
    all continuations go through the model together.
    """
    import torch

    model = loaded.model
    rows = [
        _Prepared(
            inputs=_extend_inputs(item.inputs, list(context)),
            prompt_tokens=item.prompt_tokens + len(context),
        )
        for item, context in zip(prepared, contexts, strict=True)
    ]
    batch = _collate(rows, loaded)
    mask = batch["attention_mask"]
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    count = len(variants)
    longest = max(len(tokens) for _, tokens in variants)
    with torch.inference_mode():
        prefill = model(**batch, position_ids=positions, use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(prefill.logits[:, -1, :].float(), dim=-1)
        cache = getattr(prefill, "cache", None) or prefill.past_key_values
        cache.batch_repeat_interleave(count)

        padded = torch.full(
            (len(rows) * count, longest), loaded.pad_id, dtype=torch.long, device=loaded.device
        )
        for row in range(len(rows)):
            for index, (_, tokens) in enumerate(variants):
                padded[row * count + index, : len(tokens)] = torch.tensor(tokens)
        continuation_mask = torch.cat(
            [mask.repeat_interleave(count, dim=0), torch.ones_like(padded)], dim=1
        )
        continuation_positions = positions[:, -1:].repeat_interleave(count, dim=0) + 1
        continuation_positions = continuation_positions + torch.arange(
            longest, device=loaded.device
        )
        follow = model(
            input_ids=padded,
            attention_mask=continuation_mask,
            position_ids=continuation_positions,
            use_cache=True,
            **{loaded.cache_kwarg: cache},
        )
        after = torch.log_softmax(follow.logits.float(), dim=-1)

    terminator_index = torch.tensor(list(terminators), device=loaded.device)
    results: list[tuple[dict[str, float], dict[str, tuple[int, ...]]]] = []
    for row in range(len(rows)):
        totals: dict[str, list[float]] = {}
        spelling: dict[str, tuple[float, tuple[int, ...]]] = {}
        for index, (label, tokens) in enumerate(variants):
            line = row * count + index
            logprob = first[row, tokens[0]]
            for step in range(1, len(tokens)):
                logprob = logprob + after[line, step - 1, tokens[step]]
            end = torch.logsumexp(after[line, len(tokens) - 1, terminator_index], dim=0)
            value = float(logprob + end)
            totals.setdefault(label, []).append(value)
            if label not in spelling or value > spelling[label][0]:
                spelling[label] = (value, tuple(tokens))
        results.append(
            (label_probabilities(totals), {label: seq for label, (_, seq) in spelling.items()})
        )
    return results


def _answer_with(
    program: _ConstraintProgram,
    context: list[int],
    label_tokens: tuple[int, ...],
    max_tokens: int,
) -> list[int]:
    """The constrained answer that writes `label_tokens` after `context`, cut at `max_tokens`.

    After the label the program is fixed (`"}` in JSON mode) and then ends, so this is
    exactly what constrained decoding produces when it picks that label.
    """
    tail: list[int] = []
    if program.trie is None:  # JSON: the fixed segments after the label
        for segment in program.segments[program.choice_index() + 1 :]:
            tail.extend(segment.tokens)
    return [*context, *label_tokens, *tail, program.end_ids[0]][:max_tokens]


def _extend_inputs(inputs: dict[str, torch.Tensor], context: list[int]) -> dict[str, torch.Tensor]:
    """Append generated text tokens to a prepared record's sequence tensors."""
    if not context:
        return inputs
    import torch

    length = inputs["input_ids"].shape[1]
    extended: dict[str, torch.Tensor] = {}
    for key, value in inputs.items():
        if value.dim() >= 2 and value.shape[:2] == (1, length):
            if key == "input_ids":
                tail = torch.tensor([context], dtype=value.dtype)
            elif key == "attention_mask":
                tail = torch.ones((1, len(context)), dtype=value.dtype)
            else:  # token types: generated tokens are text (0)
                tail = torch.zeros((1, len(context)), dtype=value.dtype)
            extended[key] = torch.cat([value, tail], dim=1)
        else:
            extended[key] = value
    return extended


# -- constrained decoding ------------------------------------------------------------------


@dataclass
class _Segment:
    kind: Literal["fixed", "choice", "string"]
    tokens: tuple[int, ...] = ()
    trie: dict[tuple[int, ...], set[int]] = field(default_factory=dict)
    complete: set[tuple[int, ...]] = field(default_factory=set)


@dataclass
class _State:
    segment: int
    prefix: tuple[int, ...] = ()


@dataclass
class _ConstraintProgram:
    """A `LabelConstraint` as token rules for `generate`, and what label scoring needs.

    `choice`: the shared `LabelTrie` (`medbatch.constraints`), then an end token.
    `json`: a small automaton over segments, `{"label": "` [label trie] `"}` (with
    `{"reasoning": "` [JSON-string-safe tokens] `", ` before it when `reasoning` is set),
    then an end token.
    """

    segments: list[_Segment]
    end_ids: tuple[int, ...]
    string_tokens: Any
    score_variants: list[tuple[str, tuple[int, ...]]]
    terminators: tuple[int, ...]
    trie: LabelTrie | None = None
    """Set in `choice` mode, where the label trie alone is the program."""

    @classmethod
    def build(
        cls, constraint: LabelConstraint | None, loaded: _Loaded, string_tokens: Any
    ) -> _ConstraintProgram | None:
        if constraint is None:
            return None
        tokenizer = _InContext(loaded.tokenizer)

        def encode(text: str) -> tuple[int, ...]:
            return tuple(tokenizer.encode(text))

        if constraint.mode == "choice":
            # The shared label trie (label and " label" spellings, EOS after a complete label)
            # is the whole program; its variants are what the scores sum over.
            trie = LabelTrie.from_tokenizer(
                tokenizer, constraint.labels, eos_token_id=loaded.end_ids
            )
            variants = [(label, seq) for label, seqs in trie.variants.items() for seq in seqs]
            return cls([], loaded.end_ids, None, variants, loaded.end_ids, trie)
        # In JSON the label sits between quotes: only its own spelling is valid.
        trie = LabelTrie.from_tokenizer(
            tokenizer, constraint.labels, eos_token_id=loaded.end_ids, leading_space=False
        )
        variants = [(label, seq) for label, seqs in trie.variants.items() for seq in seqs]
        choice = _choice_segment([seq for _, seq in variants])
        closing = _Segment("fixed", encode('"}'))
        segments = [_Segment("fixed", encode('{"label": "')), choice, closing]
        if constraint.reasoning:
            segments = [
                _Segment("fixed", encode('{"reasoning": "')),
                _Segment("string"),
                _Segment("fixed", encode('", "label": "')),
                choice,
                closing,
            ]
        strings = string_tokens() if constraint.reasoning else None
        return cls(segments, loaded.end_ids, strings, variants, closing.tokens[:1])

    def allowed(self, state: _State) -> Any:
        if state.segment >= len(self.segments):
            return list(self.end_ids)
        segment = self.segments[state.segment]
        if segment.kind == "fixed":
            return [segment.tokens[len(state.prefix)]]
        if segment.kind == "string":
            following = self.allowed(_State(state.segment + 1))
            return _union(self.string_tokens, following)
        options = set(segment.trie.get(state.prefix, set()))
        if state.prefix in segment.complete:
            options.update(self.allowed(_State(state.segment + 1)))
        return sorted(options)

    def advance(self, state: _State, token: int) -> _State:
        if state.segment >= len(self.segments):
            return state
        segment = self.segments[state.segment]
        following = _State(state.segment + 1)
        if segment.kind == "fixed":
            prefix = (*state.prefix, token)
            return (
                following if len(prefix) >= len(segment.tokens) else _State(state.segment, prefix)
            )
        if segment.kind == "string":
            # The string ends with the token that opens what follows it (the closing quote).
            leaves = token in self.allowed(following)
            return self.advance(following, token) if leaves else state
        if token in segment.trie.get(state.prefix, set()):
            return _State(state.segment, (*state.prefix, token))
        return self.advance(following, token)

    def choice_index(self) -> int:
        return next(index for index, seg in enumerate(self.segments) if seg.kind == "choice")


class _InContext:
    """Tokenises a piece of an answer as it reads after other text, not as a text's start.

    SentencePiece-style tokenizers (Llama 2, so LLaVA 1.5; Mistral) prepend a space to the
    start of a text: `encode('"}')` is `▁" }`, which decodes to ` "}` mid-answer and turns
    `{"label": "NORMAL"}` into `{"label": " NORMAL "}`. Encoding after a newline and dropping
    the newline's tokens gives the in-context tokens; where the newline merges with the text
    (Gemma's `\n\n`) plain encoding is already right and is used.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.eos_token_id = tokenizer.eos_token_id
        self._base = list(tokenizer.encode("\n", add_special_tokens=False))
        self._base_text = str(tokenizer.decode(self._base))

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        del add_special_tokens  # never: these are pieces of an answer
        full = [int(i) for i in self.tokenizer.encode("\n" + text, add_special_tokens=False)]
        base = len(self._base)
        if full[:base] == self._base and str(self.tokenizer.decode(full)) == self._base_text + text:
            return full[base:]
        return [int(i) for i in self.tokenizer.encode(text, add_special_tokens=False)]


def _choice_segment(sequences: Iterable[tuple[int, ...]]) -> _Segment:
    trie: dict[tuple[int, ...], set[int]] = {}
    complete: set[tuple[int, ...]] = set()
    for tokens in sequences:
        for length in range(len(tokens)):
            trie.setdefault(tokens[:length], set()).add(tokens[length])
        complete.add(tokens)
    return _Segment("choice", trie=trie, complete=complete)


def _union(tokens: Any, extra: list[int]) -> Any:
    import torch

    combined: Any = torch.cat([tokens, torch.tensor(extra, dtype=torch.long)])
    return combined.unique()


class _Tracker:
    """`prefix_allowed_tokens_fn` for `generate`: follows each row through the program.

    Keeps each row's state and advances it by the newest token, so a step costs O(1) rather
    than replaying the answer. Records where each row's label began (for label scoring).
    """

    def __init__(self, program: _ConstraintProgram, prompt_length: int) -> None:
        self.program = program
        self.prompt_length = prompt_length
        self.states: dict[int, tuple[int, _State]] = {}
        self.label_start: dict[int, int] = {}
        self._choice = program.choice_index()
        self._allowed_cache: dict[tuple[int, tuple[int, ...]], Any] = {}

    def __call__(self, batch_id: int, sequence: torch.Tensor) -> Any:
        generated = sequence.shape[-1] - self.prompt_length
        seen, state = self.states.get(batch_id, (0, _State(0)))
        if seen < generated:
            tail = sequence[self.prompt_length + seen :].tolist()
            for token in tail:
                state = self.program.advance(state, int(token))
                seen += 1
                self._note_label_start(batch_id, state, seen)
        if generated == 0:
            self._note_label_start(batch_id, state, 0)
        self.states[batch_id] = (seen, state)
        key = (state.segment, state.prefix)
        if key not in self._allowed_cache:
            self._allowed_cache[key] = self.program.allowed(state)
        return self._allowed_cache[key]

    def _note_label_start(self, batch_id: int, state: _State, position: int) -> None:
        if state.segment == self._choice and not state.prefix:
            self.label_start.setdefault(batch_id, position)
