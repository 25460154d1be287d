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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from medbatch.datasets.base import Dataset, SubsetDataset
from medbatch.errors import ImageLoadError
from medbatch.evaluation import summarize
from medbatch.parsing.interpret import interpret_response
from medbatch.records import (
    GenerationParams,
    InferenceRequest,
    InferenceResponse,
    LabelConstraint,
    Prediction,
    Record,
)
from medbatch.runners.base import BatchRunner
from medbatch.store import ResumeKey, RunManifest, RunStore, predictions_to_frame
from medbatch.tasks.base import Task
from medbatch.versions import package_versions

__all__ = ["RunResult", "classify"]

logger = logging.getLogger(__name__)

# Predictions are fsync'ed in groups: per record would cap throughput at the disk's sync
# rate; a crash loses at most this group, which is then simply run again on resume.
_FLUSH_EVERY = 64
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
    progress: bool | None = None,
    on_prediction: Callable[[Prediction], None] | None = None,
    manifest_extra: dict[str, Any] | None = None,
) -> RunResult:
    """Classify every record of `dataset` with `task` on `runner`.

    Args:
        dataset: The records.
        task: Labels, prompt and parser (e.g. `get_task("ecg")`).
        runner: The back-end. It is started and closed here if it is not already in a
            `with` block (starting twice is harmless).
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
        progress: Show a progress bar; None means only when stderr is a terminal.
        on_prediction: Called with each new prediction as it arrives.
        manifest_extra: Extra JSON-serialisable facts for the manifest (sampling, etc.).

    Returns:
        A `RunResult`: one prediction row per record, joined to record id, image sha256 and
        ground truth, plus headline metrics.

    Raises:
        RunStoreError: The run directory cannot be written or is in use.

    Example:
        >>> result = classify(ImageFolderDataset("ecg/", task.folder_map), get_task("ecg"),
        ...                   ReplayRunner("answers.jsonl"), store="runs/ecg")
        >>> result.metrics["accuracy"]
    """
    constraint: LabelConstraint | None = None
    if constrained:
        constraint = constrained if isinstance(constrained, LabelConstraint) else task.constraint()
        task = task.for_constrained_decoding()
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
    )
    loop.prepare(resume=resume, manifest_extra=manifest_extra or {})
    show = progress if progress is not None else sys.stderr.isatty()
    loop.execute(show_progress=show)
    return loop.finish()


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
    ) -> None:
        self.dataset = dataset
        self.task = task
        self.runner = runner
        self.store = store
        self.params = params
        self.constraint = constraint
        self.retry_failed = retry_failed
        self.prompt_fp = task.prompt.fingerprint
        self.params_fp = params.fingerprint()
        self.collector = _Collector(store, on_prediction)
        self.done: dict[str, Prediction] = {}
        self.pending: dict[str, _Pending] = {}
        self.record_order: list[str] = []
        self.skipped = 0
        self.ignored_constraints = 0
        self.advance: Callable[[], None] = lambda: None
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

    def execute(self, *, show_progress: bool) -> None:
        """Stream every record through the runner; on any exit, flush what arrived."""
        self.runner.state_listener = self._save_runner_state
        status = "completed"
        try:
            with (
                self.runner,
                _progress_bar(show_progress, _safe_len(self.dataset), self.task.name) as advance,
            ):
                self.advance = advance
                for response in self.runner.run(self._requests()):
                    self.collector.add(self._predict(response.record_id, response))
                    advance()
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        except BaseException:
            status = "failed"
            raise
        finally:
            self.runner.state_listener = None
            self.collector.flush()
            self.manifest.status = status
            self.manifest.runner_state = self.runner.state() or self.manifest.runner_state
            if status != "completed" and self.store is not None:
                self.manifest.finished_at = _now()
                try:
                    self.store.write_manifest(self.manifest)
                finally:
                    self.store.close()

    def finish(self) -> RunResult:
        """Assemble one row per record in dataset order; write the table and manifest."""
        rows = []
        for record_id in self.record_order:
            prediction = self.collector.by_id.get(record_id) or self.done.get(record_id)
            if prediction is not None:
                rows.append(prediction.to_row())
        frame = predictions_to_frame(rows)
        self.manifest.finished_at = _now()
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

    def _requests(self) -> Iterator[InferenceRequest]:
        for record in self.dataset:
            self.record_order.append(record.id)
            try:
                sha256 = record.image.sha256
            except ImageLoadError as exc:
                self.pending[record.id] = _Pending("", record.label, dict(record.metadata))
                failure = InferenceResponse.failure(record.id, "image_error", str(exc))
                self.collector.add(self._predict(record.id, failure))
                self.advance()
                continue
            if self._is_done(record, sha256):
                self.skipped += 1
                self.advance()
                continue
            self.pending[record.id] = _Pending(sha256, record.label, dict(record.metadata))
            yield InferenceRequest(
                record_id=record.id,
                messages=self.task.prompt.render(record),
                params=self.params,
                constraint=self.constraint,
            )

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
        task_id = self._progress.add_task(self.description, total=self.total)
        progress = self._progress
        return lambda: progress.advance(task_id)

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()
