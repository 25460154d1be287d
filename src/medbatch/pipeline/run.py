"""`classify` and what it checks before a run (capabilities, profile, canary size)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from medbatch.canary import CanaryThresholds
from medbatch.datasets.base import Dataset, SubsetDataset
from medbatch.errors import ConfigError
from medbatch.pipeline.canary_step import run_canary
from medbatch.pipeline.loop import _RunLoop
from medbatch.pipeline.reprompt_step import reprompt_unparsed
from medbatch.pipeline.result import RunResult
from medbatch.pipeline.support import _safe_len, _sigterm_as_interrupt
from medbatch.profiles import ModelProfile, profile_for
from medbatch.records import GenerationParams, LabelConstraint, Prediction
from medbatch.redaction import install_log_redaction, remember_runner_secrets
from medbatch.runners.base import BatchRunner
from medbatch.store import RunStore
from medbatch.tasks.base import Task

__all__ = ["GuardrailOptions", "classify"]

logger = logging.getLogger("medbatch.pipeline")


@dataclass(frozen=True)
class GuardrailOptions:
    """The checks `classify` runs around the main pass, as one object.

    Attributes:
        canary: Records to run first as a canary (stratified); `"auto"` runs 8 for
            runners that declare `expensive` and datasets of more than 64 records; 0
            disables it.
        canary_thresholds: When the canary fails; `CanaryThresholds()` when None.
        reprompt: Ask once more, for the label only, when an answer has no verdict.
    """

    canary: int | Literal["auto"] = "auto"
    canary_thresholds: CanaryThresholds | None = None
    reprompt: bool = False


def classify(
    dataset: Dataset,
    task: Task,
    runner: BatchRunner,
    *,
    store: RunStore | str | Path | None = None,
    resume: bool = True,
    retry_failed: bool | Literal["all"] = False,
    add_to_run: bool = False,
    limit: int | None = None,
    params: GenerationParams | None = None,
    constrained: bool | LabelConstraint = False,
    canary: int | Literal["auto"] = "auto",
    canary_thresholds: CanaryThresholds | None = None,
    reprompt: bool = False,
    guardrails: GuardrailOptions | None = None,
    profile: ModelProfile | None = None,
    progress: bool | None = None,
    on_prediction: Callable[[Prediction], None] | None = None,
    manifest_extra: dict[str, Any] | None = None,
) -> RunResult:
    """Classify every record of `dataset` with `task` on `runner`.

    Args:
        dataset: The records.
        task: Labels, prompt and parser (e.g. `get_task("ecg")`).
        runner: The back-end. It is started when the first record needs it (a resume with
            nothing left to do never loads the model) and closed at the end (starting twice
            is harmless, so a runner already in a `with` block is fine).
        store: A run directory (or `RunStore`) to stream predictions to; None keeps results
            in memory only.
        resume: Reuse predictions already in `store` whose image, prompt, model and
            parameters match; only the rest is run.
        retry_failed: With `resume`, run again the records whose stored answer is an error
            that may succeed on a new try (`RecordError.retryable`: a failed request, a
            lost job); answered records are kept, and so are errors marked not retryable
            (an image the server refused as too large). `"all"` runs every stored error
            again.
        add_to_run: Write to a `store` that already holds a run of another task, model,
            prompt, generation parameters or dataset folder. Without it that is refused
            (`RunStoreError`) so two runs are never mixed silently; with it the newest
            answer of each record wins and the earlier configuration is kept in the
            manifest's `history`.
        limit: Only the first `limit` records.
        params: Generation parameters; the task's defaults when None.
        constrained: Constrain answers to the task's labels (True for `choice` mode, or a
            `LabelConstraint`); the task's constrained-decoding prompt is used.
        canary: Records to run first as a canary (stratified); the run stops with
            `CanaryFailedError` if they fall below `canary_thresholds` or the image does not
            reach the model. `"auto"` runs 8 for runners that declare `expensive` in their
            capabilities and datasets of more than 64 records; 0 disables it.
        canary_thresholds: When a canary fails; defaults to `CanaryThresholds()`.
        reprompt: For answers with no verdict (unparseable or truncated), ask once more in a
            follow-up turn for the label only (constrained where the back-end supports it).
            Both answers are kept; the method is recorded.
        guardrails: `canary`, `canary_thresholds` and `reprompt` as one object (the three
            arguments above are kept for existing callers); give one or the other.
        profile: Model profile; chosen from `runner.model_id` when None (see
            `medbatch.profiles`). A profile without a system role folds the system text
            into the first user turn, so every back-end sends the same prompt.
        progress: Show a progress bar; None means only when stderr is a terminal.
        on_prediction: Called with each new prediction as it arrives.
        manifest_extra: Facts to record in the manifest: the typed fields `images_root`,
            `illustrative`, `sampling` and `demo` (the report reads them), or any other
            JSON-serialisable key of your own (kept as given).

    Returns:
        A `RunResult`: one prediction row per record, joined to record id, image sha256 and
        ground truth, plus headline metrics.

    Raises:
        TypeError: `guardrails` given together with `canary`, `canary_thresholds` or
            `reprompt`.
        RunStoreError: The run directory cannot be written, is in use, or holds a run of
            another configuration (see `add_to_run`).
        CanaryFailedError: The canary subset failed; nothing else was run.
        ValueError: `manifest_extra` sets a field medbatch records itself, or a typed field
            with a value of the wrong type.

    Example:
        >>> from medbatch import get_task
        >>> from medbatch.testing.ecg_sample import load_ecg_sample
        >>> dataset, runner = load_ecg_sample()  # 16 records and recorded answers
        >>> result = classify(dataset, get_task("ecg"), runner)
        >>> len(result.predictions), result.metrics["coverage"], result.metrics["accuracy"]
        (16, 0.8125, 0.625)
    """
    if guardrails is None:
        guardrails = GuardrailOptions(canary, canary_thresholds, reprompt)
    elif (canary, canary_thresholds, reprompt) != ("auto", None, False):
        raise TypeError(
            "give guardrails=GuardrailOptions(...) or canary/reprompt arguments, not both"
        )
    constraint: LabelConstraint | None = None
    if constrained:
        constraint = constrained if isinstance(constrained, LabelConstraint) else task.constraint()
        task = task.for_constrained_decoding()
        if constraint.mode == "score" and not runner.capabilities.likelihood_scoring:
            raise ConfigError(
                f"runner {runner.name!r} cannot classify by likelihood (mode='score'): it "
                "computes no exact label scores; use mode='choice' (constrained generation)"
            )
    profile = profile or runner.profile or profile_for(runner.model_id)
    task = _apply_profile(task, profile)
    _warn_about_capabilities(runner, constraint, params or task.params)
    if limit is not None:
        dataset = SubsetDataset(dataset, limit)
    loop = _RunLoop(
        dataset=dataset,
        task=task,
        runner=runner,
        store=RunStore(store) if isinstance(store, (str, Path)) else store,
        params=params or task.params,
        constraint=constraint,
        retry_failed=retry_failed,
        on_prediction=on_prediction,
        profile=profile,
        reprompt=guardrails.reprompt,
    )
    loop.prepare(resume=resume, add_to_run=add_to_run, manifest_extra=manifest_extra or {})
    show = progress if progress is not None else sys.stderr.isatty()
    canary_size = _canary_size(guardrails.canary, runner, dataset)
    remember_runner_secrets(runner)
    install_log_redaction()
    with _sigterm_as_interrupt():
        try:
            # The runner starts only when a record needs it (a resume with nothing left to
            # do never loads the model); it is closed whatever happens.
            try:
                if canary_size:
                    run_canary(
                        loop, canary_size, guardrails.canary_thresholds or CanaryThresholds()
                    )
                loop.execute(dataset, show_progress=show)
                if guardrails.reprompt:
                    reprompt_unparsed(loop)
            finally:
                runner.close()
        except BaseException as exc:
            loop.abort(exc)
            raise
        return loop.finish()


def _apply_profile(task: Task, profile: ModelProfile) -> Task:
    """The task with its prompt adapted to the model's profile (`PromptTemplate.for_profile`)."""
    prompt = task.prompt.for_profile(profile)
    if prompt is task.prompt:
        return task
    return replace(task, prompts={**task.prompts, task.prompt_version: prompt})


def _warn_about_capabilities(
    runner: BatchRunner, constraint: LabelConstraint | None, params: GenerationParams
) -> None:
    """Say before the run what the back-end declares it cannot do of what was asked.

    A constraint is still sent (a back-end may honour it anyway) and every answer is
    checked against the labels afterwards; this only moves the news to the start.
    """
    capabilities = runner.capabilities
    if constraint is not None and not capabilities.constrained_decoding:
        logger.warning(
            "%s does not declare constrained decoding: answers are not restricted to the "
            "labels; the parser reads them and rows outside the label set are flagged "
            "constraint_ignored",
            runner.name,
        )
    if params.logprobs and not capabilities.label_scores:
        logger.warning(
            "%s cannot give label scores: logprobs=True is passed on, but label_scores "
            "stays empty and score-based metrics (AUC, calibration) are not computed",
            runner.name,
        )


def _canary_size(canary: int | Literal["auto"], runner: BatchRunner, dataset: Dataset) -> int:
    if canary == "auto":
        if not runner.capabilities.expensive:
            return 0
        size = _safe_len(dataset)
        return 8 if size is None or size > 64 else 0
    return max(0, canary)
