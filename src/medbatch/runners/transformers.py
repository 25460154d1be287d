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

import json
import logging
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from medbatch.errors import ImageLoadError
from medbatch.profiles import GENERIC, ModelProfile, profile_for
from medbatch.records import (
    GenerationParams,
    InferenceRequest,
    InferenceResponse,
    LabelConstraint,
)
from medbatch.runners._hf import decoding, inputs, loading
from medbatch.runners._hf.constraints import json_string_tokens
from medbatch.runners._hf.loading import Loaded as _Loaded
from medbatch.runners._hf.loading import Prepared as _Prepared
from medbatch.runners.base import BatchRunner, RunnerCapabilities, RunnerConfig

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

logger = logging.getLogger(__name__)


def __getattr__(name: str) -> Any:
    # Moved in 0.x: label scoring lives in medbatch.scoring, for every back-end.
    if name == "score_label_continuations":
        warnings.warn(
            "medbatch.runners.transformers.score_label_continuations moved: use "
            "medbatch.scoring.score_label_continuations (model, batch, variants, terminators)",
            DeprecationWarning,
            stacklevel=2,
        )
        return decoding.score_prepared
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _local_model_type(model: str) -> str | None:
    """`model_type` from a local model folder's `config.json`, or None (hub names too)."""
    config = Path(model) / "config.json"
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


MAX_IMAGE_WORKERS = 4
"""Most image threads the automatic sizing starts (`image_workers_for`)."""


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    import os

    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def image_workers_for(device_type: str, torch_threads: int, cpus: int) -> int:
    """Image threads to start next to a model on `device_type`, given the cores torch uses.

    On CPU, torch's intra-op pool already spreads `generate` over `torch_threads` cores:
    image threads beyond the cores it leaves free only steal time from it (measured: four
    threads made `generate` 3.6x slower for 1.7x the CPU, issue 19). So one thread when torch
    covers every core, else the free cores. On a GPU the model does not need the cores, so
    up to `MAX_IMAGE_WORKERS`, leaving one core to the thread that drives the GPU.

    Args:
        device_type: The torch device type (`cpu`, `cuda`, ...).
        torch_threads: `torch.get_num_threads()`.
        cpus: Cores this process may use (`usable_cpus()`).

    Returns:
        At least 1, at most `MAX_IMAGE_WORKERS`.
    """
    free = cpus - torch_threads if device_type == "cpu" else cpus - 1
    return max(1, min(MAX_IMAGE_WORKERS, free))


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
    num_image_workers: int | None = Field(
        default=None,
        ge=1,
        description="Threads decoding and preprocessing images ahead of the model; None sizes "
        "the pool from the cores torch leaves free (one on a CPU torch already fills, up to "
        f"{MAX_IMAGE_WORKERS} on GPU).",
    )
    max_image_side: int | None = Field(
        default=None,
        gt=0,
        description="Shrink images so the longer side is at most this (pixels) before "
        "preprocessing; None keeps them as they are.",
    )
    reduced_jpeg_decode: bool = Field(
        default=True,
        description="Decode JPEGs at 1/2..1/8 scale when still at least the processor's "
        "fixed target size (Gemma 3, LLaVA 1.5; not tiling processors): same tensor shapes, "
        "several times cheaper on large scans; False decodes in full, pixel-identical to "
        "the processor on the full image.",
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
        likelihood_scoring=True,
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
        self.image_workers: int | None = cfg.num_image_workers
        """Threads preparing images: the setting, or the automatic size once started."""
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
                workers = self.config.num_image_workers
                if workers is None:
                    workers = self._auto_image_workers(self._loaded)
                self.image_workers = workers
                self._pool = ThreadPoolExecutor(
                    max_workers=workers, thread_name_prefix="medbatch-img"
                )

    @staticmethod
    def _auto_image_workers(loaded: _Loaded) -> int:
        import torch

        return image_workers_for(loaded.device.type, torch.get_num_threads(), usable_cpus())

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
        cfg = self.config
        tiny = cfg.model == TINY_MODEL
        loaded, self.profile = loading.load_model(
            # Built and loaded in a second; transformers' progress bars would only clutter.
            quiet=tiny,
            model=resolve_model(cfg.model) if tiny else cfg.model,
            revision=cfg.revision,
            device=cfg.device,
            dtype=cfg.dtype,
            allow_fp16=cfg.allow_fp16,
            trust_remote_code=cfg.trust_remote_code,
            attn_implementation=cfg.attn_implementation,
            profile=self._given_profile,
        )
        return loaded

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
        return inputs.prepare(
            request,
            self.loaded,
            max_image_side=self.config.max_image_side,
            pan_and_scan=self.config.pan_and_scan,
            reduced_jpeg_decode=self.config.reduced_jpeg_decode,
        )

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
            key = (request.params, request.constraint, inputs.layout(prepared))
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
        return decoding.generate(
            self.loaded,
            rows,
            params,
            constraint,
            started,
            score_labels=self.config.score_labels,
            string_tokens=self._json_string_tokens,
        )

    def _json_string_tokens(self) -> Any:
        """Token ids that may appear inside a JSON string (built once, on first use)."""
        if self._string_tokens is None:
            self._string_tokens = json_string_tokens(self.loaded.tokenizer)
        return self._string_tokens
