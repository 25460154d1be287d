"""`classify()`: the one loop that wires dataset → prompt → runner → parser → store.

Records stream through: requests are built lazily, the runner answers batch by batch, and
each prediction is written to the run store as it arrives. Nothing holds all images in
memory, and a run interrupted at any point resumes without losing or duplicating a record.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from medbatch.canary import (
    MIN_IMAGE_TOKENS,
    CanaryFailedError,
    CanaryThresholds,
    ImageNotSeenError,
    canary_subset,
    evaluate_canary,
    probe_image_seen,
)
from medbatch.datasets.base import Dataset, SubsetDataset
from medbatch.errors import ImageLoadError
from medbatch.evaluation import summarize
from medbatch.parsing.interpret import interpret_response
from medbatch.profiles import ModelProfile, profile_for
from medbatch.prompts.chat import ChatPromptTemplate
from medbatch.records import (
    AnswerStatus,
    GenerationParams,
    InferenceRequest,
    InferenceResponse,
    LabelConstraint,
    Prediction,
    Record,
    Usage,
)
from medbatch.reprompt import follow_up_request
from medbatch.runners.base import BatchRunner
from medbatch.store import ResumeKey, RunManifest, RunStore, predictions_to_frame
from medbatch.tasks.base import Task
from medbatch.versions import package_versions

__all__ = ["RunResult", "classify"]

logger = logging.getLogger(__name__)

# Predictions are fsync'ed in groups: per record would cap throughput at the disk's sync
# rate (milliseconds per sync). A crash loses at most the last second of answers (or 1,024
# of them), which are then simply run again on resume.
_FLUSH_EVERY = 1024
_REPROMPTABLE = frozenset({AnswerStatus.UNPARSEABLE, AnswerStatus.TRUNCATED})
_FLUSH_SECONDS = 1.0


@dataclass
class RunResult:
    """What `classify` returns.

    Attributes:
        predictions: One row per record of the dataset, in dataset order (see
            `medbatch.records.Prediction` for the columns).
        metrics: Headline figures (accuracy, coverage, counts per status).
        manifest: What ran.
        run_dir: Where results are stored, when a store was used.
        skipped: Records answered by an earlier run and reused (resume).
    """

    predictions: pd.DataFrame
    metrics: dict[str, Any]
    manifest: RunManifest
    run_dir: Path | None = None
    skipped: int = 0
    constraint_ignored: int = field(default=0)


@dataclass
class _Pending:
    sha256: str
    truth: str | None
    metadata: dict[str, Any]


class _Collector:
    """Buffers predictions and writes them to the store in durable groups."""

    def __init__(self, store: RunStore | None, on_prediction: Callable[[Prediction], None] | None):
        self.store = store
        self.on_prediction = on_prediction
        self.buffer: list[Prediction] = []
        self.by_id: dict[str, Prediction] = {}
        self.last_flush = time.monotonic()

    def add(self, prediction: Prediction) -> None:
        self.by_id[prediction.record_id] = prediction
        self.buffer.append(prediction)
        if self.on_prediction is not None:
            self.on_prediction(prediction)
        if len(self.buffer) >= _FLUSH_EVERY or time.monotonic() - self.last_flush >= _FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.store is not None and self.buffer:
            self.store.append(self.buffer)
        self.buffer = []
        self.last_flush = time.monotonic()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def classify(
    dataset: Dataset,
    task: Task,
    runner: BatchRunner,
    *,
    store: RunStore | str | Path | None = None,
    resume: bool = True,
    retry_failed: bool = False,
    limit: int | None = None,
    params: GenerationParams | None = None,
    constrained: bool | LabelConstraint = False,
    canary: int | Literal["auto"] = "auto",
    canary_thresholds: CanaryThresholds | None = None,
    reprompt: bool = False,
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
            (failed request, unreadable image); answered records are kept.
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
        profile: Model profile; chosen from `runner.model_id` when None (see
            `medbatch.profiles`). A profile without a system role folds the system text
            into the first user turn, so every back-end sends the same prompt.
        progress: Show a progress bar; None means only when stderr is a terminal.
        on_prediction: Called with each new prediction as it arrives.
        manifest_extra: Extra JSON-serialisable facts for the manifest (sampling, etc.).

    Returns:
        A `RunResult`: one prediction row per record, joined to record id, image sha256 and
        ground truth, plus headline metrics.

    Raises:
        RunStoreError: The run directory cannot be written or is in use.
        CanaryFailedError: The canary subset failed; nothing else was run.

    Example:
        >>> result = classify(ImageFolderDataset("ecg/", task.folder_map), get_task("ecg"),
        ...                   ReplayRunner("answers.jsonl"), store="runs/ecg")
        >>> result.metrics["accuracy"]
    """
    constraint: LabelConstraint | None = None
    if constrained:
        constraint = constrained if isinstance(constrained, LabelConstraint) else task.constraint()
        task = task.for_constrained_decoding()
    profile = profile or profile_for(runner.model_id)
    task = _apply_profile(task, profile)
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
        reprompt=reprompt,
    )
    loop.prepare(resume=resume, manifest_extra=manifest_extra or {})
    show = progress if progress is not None else sys.stderr.isatty()
    canary_size = _canary_size(canary, runner, dataset)
    try:
        try:
            if canary_size:
                loop.run_canary(canary_size, canary_thresholds or CanaryThresholds())
            loop.execute(dataset, show_progress=show)
            if reprompt:
                loop.reprompt_unparsed()
        finally:
            runner.close()
    except BaseException as exc:
        loop.abort(exc)
        raise
    return loop.finish()


def _apply_profile(task: Task, profile: ModelProfile) -> Task:
    if profile.system_role != "fold":
        return task
    prompt = task.prompt
    if isinstance(prompt, ChatPromptTemplate) and not prompt.fold_system:
        folded = prompt.with_options(fold_system=True)
        return replace(task, prompts={**task.prompts, task.prompt_version: folded})
    return task


def _canary_size(canary: int | Literal["auto"], runner: BatchRunner, dataset: Dataset) -> int:
    if canary == "auto":
        if not runner.capabilities.expensive:
            return 0
        size = _safe_len(dataset)
        return 8 if size is None or size > 64 else 0
    return max(0, canary)


class _RunLoop:
    """The state of one `classify` call, split into steps small enough to read."""

    def __init__(
        self,
        *,
        dataset: Dataset,
        task: Task,
        runner: BatchRunner,
        store: RunStore | None,
        params: GenerationParams,
        constraint: LabelConstraint | None,
        retry_failed: bool,
        on_prediction: Callable[[Prediction], None] | None,
        profile: ModelProfile,
        reprompt: bool = False,
    ) -> None:
        self.dataset = dataset
        self.reprompt = reprompt
        self.task = task
        self.runner = runner
        self.store = store
        self.params = params
        self.constraint = constraint
        self.retry_failed = retry_failed
        self.profile = profile
        self.prompt_fp = task.prompt.fingerprint
        self.params_fp = params.fingerprint()
        self.collector = _Collector(store, on_prediction)
        self.done: dict[str, Prediction] = {}
        self.pending: dict[str, _Pending] = {}
        self.requests_by_id: dict[str, InferenceRequest] = {}
        self.record_order: list[str] = []
        self.skipped = 0
        self.ignored_constraints = 0
        self.text_only_tokens: int | None = None
        self.stop_status: str | None = None  # why the run stopped early, when it did
        self.advance: Callable[[], None] = lambda: None
        self.describe: Callable[[str], None] = lambda text: None
        self.runner_started = False
        self.manifest = self._new_manifest()

    def _new_manifest(self) -> RunManifest:
        versions = package_versions()
        return RunManifest(
            medbatch_version=versions.get("medbatch", "unknown"),
            task=self.task.name,
            prompt_version=self.task.prompt_version,
            prompt_fingerprint=self.prompt_fp,
            prompt_text=self.task.prompt.definition(),
            model_id=self.runner.model_id,
            runner=self.runner.describe(),
            profile=self.profile.describe(),
            params=self.params.model_dump(mode="json"),
            params_fingerprint=self.params_fp,
            constrained=self.constraint is not None,
            dataset={"kind": type(self.dataset).__name__},
            versions=versions,
            started_at=_now(),
        )

    # -- steps -----------------------------------------------------------------------------

    def prepare(self, *, resume: bool, manifest_extra: dict[str, Any]) -> None:
        """Open the store, load what an earlier run answered, write the manifest."""
        for key, value in manifest_extra.items():
            setattr(self.manifest, key, value)
        self.manifest.dataset["fingerprint"] = self.dataset.fingerprint()
        if self.store is None:
            return
        self.store.open()
        previous = self.store.read_manifest()
        if resume:
            self.done = self.store.latest()
            if previous is not None:
                self.manifest.started_at = previous.started_at
                if previous.model_id == self.runner.model_id and previous.runner_state:
                    self.runner.restore(previous.runner_state)
        self.store.write_manifest(self.manifest)

    def run_canary(self, size: int, thresholds: CanaryThresholds) -> None:
        """Run a stratified subset first; stop with a report if it fails.

        Canary answers are stored like any other, so the main pass reuses them.
        """
        subset = canary_subset(self.dataset, size)
        self._stream(subset, record_order=[], keep_requests=True)
        ids = [record.id for record in subset]
        answered = [self.collector.by_id.get(rid) or self.done.get(rid) for rid in ids]
        frame = predictions_to_frame([p.to_row() for p in answered if p is not None])
        probe: tuple[bool | None, int | None, int | None] = (None, None, None)
        for prediction in answered:
            request = self.requests_by_id.get(prediction.record_id) if prediction else None
            if prediction is not None and request is not None and not prediction.is_error:
                response = InferenceResponse(
                    record_id=prediction.record_id,
                    usage=Usage(prompt_tokens=prediction.prompt_tokens),
                )
                probe = probe_image_seen(self.runner, request, response)
                break
        self.text_only_tokens = probe[2] if probe[0] else None
        report = evaluate_canary(
            frame,
            thresholds=thresholds,
            constrained=self.constraint is not None,
            image_probe=probe,
        )
        self.manifest.canary = report.model_dump(mode="json")
        self.collector.flush()
        self.done.update(self.collector.by_id)
        if self.store is not None:
            self.store.write_manifest(self.manifest)
        if not report.passed:
            error_cls = ImageNotSeenError if report.image_seen is False else CanaryFailedError
            self.stop_status = "canary_failed"
            raise error_cls(report)

    def execute(self, dataset: Dataset, *, show_progress: bool) -> None:
        """Stream every record of the main pass through the runner."""
        bar = _progress_bar(show_progress, _safe_len(dataset), self.task.name)
        with bar as advance:
            self.advance = advance
            self.describe = bar.describe
            self._stream(dataset, record_order=self.record_order)
        self.advance = lambda: None
        self.describe = lambda text: None

    def reprompt_unparsed(self) -> None:
        """One bounded follow-up turn for answers without a verdict."""
        follow_ups = []
        for record_id in self.record_order:
            prediction = self.collector.by_id.get(record_id)
            request = self.requests_by_id.get(record_id)
            if prediction is None or request is None:
                continue
            if prediction.status in _REPROMPTABLE:
                follow_ups.append(follow_up_request(request, prediction.text or "", self.task))
        if not follow_ups:
            return
        self._start_runner()
        constrained = self.runner.capabilities.constrained_decoding
        for request in follow_ups:
            first = self.collector.by_id[request.record_id]
            self.pending[request.record_id] = _Pending(
                first.image_sha256, first.truth, {**first.metadata}
            )
        for response in self.runner.run(
            request if constrained else request.model_copy(update={"constraint": None})
            for request in follow_ups
        ):
            first = self.collector.by_id[response.record_id]
            second = self._predict(response.record_id, response)
            if second.status is AnswerStatus.PARSED:
                merged = second.model_copy(
                    update={
                        "text": first.text,
                        "finish_reason": first.finish_reason,
                        "method": f"reprompt:{second.method}",
                        "metadata": {**second.metadata, "reprompt_answer": response.text},
                    }
                )
            else:
                merged = first.model_copy(
                    update={"metadata": {**first.metadata, "reprompt_answer": response.text}}
                )
            self.collector.add(merged)

    def abort(self, exc: BaseException) -> None:
        """Keep what arrived and record why the run stopped."""
        status = self.stop_status or (
            "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        )
        self.runner.state_listener = None
        try:
            self.collector.flush()
        finally:
            if self.store is not None:
                self.manifest.status = status
                self.manifest.finished_at = _now()
                self.manifest.runner_state = self.runner.state() or self.manifest.runner_state
                try:
                    self.store.write_manifest(self.manifest)
                finally:
                    self.store.close()

    def finish(self) -> RunResult:
        """Assemble one row per record in dataset order; write the table and manifest."""
        self.collector.flush()
        self.runner.state_listener = None
        rows = []
        for record_id in self.record_order:
            prediction = self.collector.by_id.get(record_id) or self.done.get(record_id)
            if prediction is not None:
                rows.append(prediction.to_row())
        frame = predictions_to_frame(rows)
        self.manifest.status = "completed"
        self.manifest.finished_at = _now()
        self.manifest.runner_state = self.runner.state() or self.manifest.runner_state
        self.manifest.counts = {
            "records": len(self.record_order),
            "answered_now": len(self.collector.by_id),
            "reused": self.skipped,
            "constraint_ignored": self.ignored_constraints,
            **{f"status_{key}": int(value) for key, value in Counter(frame["status"]).items()},
        }
        if self.store is not None:
            try:
                self.store.write_table(frame)
                self.store.write_manifest(self.manifest)
            finally:
                self.store.close()
        return RunResult(
            predictions=frame,
            metrics=summarize(frame),
            manifest=self.manifest,
            run_dir=self.store.path if self.store is not None else None,
            skipped=self.skipped,
            constraint_ignored=self.ignored_constraints,
        )

    # -- helpers ---------------------------------------------------------------------------

    def _start_runner(self) -> None:
        """Start the runner when the first record needs it (loading a model takes time)."""
        if self.runner_started:
            return
        self.describe(f"{self.task.name}: starting {self.runner.name} · {self.runner.model_id}")
        self.runner.start()
        self.runner_started = True
        self.describe(self.task.name)

    def _save_runner_state(self, state: dict[str, Any]) -> None:
        # A remote job's name must be durable as soon as it exists, so a client restarted
        # after a crash can re-attach to it instead of paying for a second job.
        self.manifest.runner_state = state
        if self.store is not None:
            self.store.write_manifest(self.manifest)

    def _is_done(self, record: Record, sha256: str) -> bool:
        previous = self.done.get(record.id)
        if previous is None:
            return False
        key = ResumeKey(sha256, self.prompt_fp, self.runner.model_id, self.params_fp)
        if ResumeKey.of(previous) != key:
            return False
        return not (self.retry_failed and previous.is_error)

    def _stream(
        self, dataset: Dataset, *, record_order: list[str], keep_requests: bool = False
    ) -> None:
        self.runner.state_listener = self._save_runner_state
        for response in self.runner.run(self._requests(dataset, record_order)):
            prediction = self._predict(response.record_id, response)
            self.collector.add(prediction)
            # Requests are kept only where a later step needs them (the canary's image
            # probe, a re-prompt), so memory does not grow with the dataset.
            if not keep_requests and not (self.reprompt and prediction.status in _REPROMPTABLE):
                self.requests_by_id.pop(response.record_id, None)
            self.advance()

    def _requests(self, dataset: Dataset, record_order: list[str]) -> Iterator[InferenceRequest]:
        for record in dataset:
            record_order.append(record.id)
            try:
                sha256 = record.image.sha256
            except ImageLoadError as exc:
                self.pending[record.id] = _Pending("", record.label, dict(record.metadata))
                # Not retryable as is; a repaired file has a new sha256 and is run again.
                failure = InferenceResponse.failure(
                    record.id, "image_error", str(exc), retryable=False
                )
                self.collector.add(self._predict(record.id, failure))
                self.advance()
                continue
            if self._is_done(record, sha256):
                self.skipped += 1
                self.advance()
                continue
            self._start_runner()
            self.pending[record.id] = _Pending(sha256, record.label, dict(record.metadata))
            request = InferenceRequest(
                record_id=record.id,
                messages=self.task.prompt.render(record),
                params=self.params,
                constraint=self.constraint,
            )
            # Kept (small: images are references) for the canary probe and re-prompts.
            self.requests_by_id[record.id] = request
            yield request

    def _predict(self, record_id: str, response: InferenceResponse) -> Prediction:
        info = self.pending.pop(record_id)
        parsed, constraint_ignored = interpret_response(response, self.task.parser, self.constraint)
        metadata = {**info.metadata, **response.metadata}
        if constraint_ignored:
            metadata["constraint_ignored"] = True
            self.ignored_constraints += 1
            if self.ignored_constraints == 1:
                logger.warning(
                    "%s ignored the label constraint (record %s answered %r); falling back "
                    "to the parser and flagging the rows",
                    self.runner.name,
                    record_id,
                    (response.text or "")[:60],
                )
        error = response.error
        usage = response.usage
        if (
            self.text_only_tokens is not None
            and usage is not None
            and usage.prompt_tokens is not None
            and usage.prompt_tokens - self.text_only_tokens < MIN_IMAGE_TOKENS
        ):
            metadata["image_not_seen"] = True
        return Prediction(
            record_id=record_id,
            image_sha256=info.sha256,
            truth=info.truth,
            label=parsed.label,
            status=parsed.status,
            method=parsed.method,
            evidence=parsed.evidence,
            text=response.text,
            finish_reason=response.finish_reason,
            label_scores=response.label_scores,
            error_kind=error.kind if error else None,
            error_message=error.message if error else None,
            retryable=error.retryable if error else None,
            latency_s=response.latency_s,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            model_id=self.runner.model_id,
            runner=self.runner.name,
            prompt_fingerprint=self.prompt_fp,
            params_fingerprint=self.params_fp,
            created_at=_now(),
            metadata=metadata,
        )


def _escape(text: str) -> str:
    from medbatch.terminal import markup

    return markup(text)


def _safe_len(dataset: Dataset) -> int | None:
    try:
        return len(dataset)
    except (TypeError, NotImplementedError):
        return None


class _progress_bar:  # noqa: N801 - used like a function in a with statement
    """A rich progress bar, or a no-op, yielding an `advance()` callable."""

    def __init__(self, show: bool, total: int | None, description: str) -> None:
        self.show = show
        self.total = total
        self.description = description
        self._progress: Any = None
        self._task_id: Any = None

    def __enter__(self) -> Callable[[], None]:
        if not self.show:
            return lambda: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self._progress.start()
        self._task_id = self._progress.add_task(_escape(self.description), total=self.total)
        progress = self._progress
        task_id = self._task_id
        return lambda: progress.advance(task_id)

    def describe(self, text: str) -> None:
        """Say what is happening now (starting the runner, ...) in place of the task name."""
        if self._progress is not None:
            self._progress.update(self._task_id, description=_escape(text))

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()
