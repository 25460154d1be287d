"""The streaming loop of one `classify` call: requests, image probe, prediction rows.

The canary and re-prompt steps are functions over this loop, in `canary_step` and
`reprompt_step`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from medbatch.canary import MIN_IMAGE_TOKENS
from medbatch.datasets.base import Dataset
from medbatch.errors import ImageLoadError, RunStoreError
from medbatch.parsing.interpret import interpret_response
from medbatch.pipeline.result import RunResult
from medbatch.pipeline.support import (
    _check_before_sending,
    _config_differences,
    _config_summary,
    _dataset_source,
    _now,
    _progress_bar,
    _safe_len,
)
from medbatch.profiles import ModelProfile
from medbatch.records import (
    AnswerStatus,
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

if TYPE_CHECKING:
    import pandas as pd

__all__: list[str] = []  # internal: the loop behind `classify`

logger = logging.getLogger("medbatch.pipeline")

# Predictions are fsync'ed in groups: per record would cap throughput at the disk's sync
# rate (milliseconds per sync). A crash loses at most the last second of answers (or 1,024
# of them), which are then simply run again on resume.
_FLUSH_EVERY = 1024
_REPROMPTABLE = frozenset({AnswerStatus.UNPARSEABLE, AnswerStatus.TRUNCATED})
_FLUSH_SECONDS = 1.0


@dataclass
class _Pending:
    sha256: str
    truth: str | None
    metadata: dict[str, Any]


_Summary = tuple[str, bool, bool]  # status, has a ground truth, parsed and correct


def _summary(prediction: Prediction) -> _Summary:
    has_truth = prediction.truth is not None
    parsed = prediction.status is AnswerStatus.PARSED
    return (
        prediction.status.value,
        has_truth,
        has_truth and parsed and (prediction.label == prediction.truth),
    )


def _metrics(summaries: list[_Summary]) -> dict[str, Any]:
    """`medbatch.evaluation.summarize` of the rows, computed from their summaries."""
    n = len(summaries)
    n_truth = sum(1 for _, has_truth, _ in summaries if has_truth)
    parsed = sum(1 for status, _, _ in summaries if status == AnswerStatus.PARSED.value)
    n_parsed_truth = sum(
        1 for status, has_truth, _ in summaries if has_truth and status == AnswerStatus.PARSED.value
    )
    correct = sum(1 for _, _, right in summaries if right)
    counts = Counter(status for status, _, _ in summaries)
    return {
        "n": n,
        "n_with_truth": n_truth,
        "coverage": parsed / n if n else 0.0,
        "accuracy": correct / n_truth if n_truth else None,
        "accuracy_parsed": correct / n_parsed_truth if n_parsed_truth else None,
        "status_counts": {s.value: counts[s.value] for s in AnswerStatus},
    }


class _Collector:
    """Buffers predictions and writes them to the store in durable groups.

    With a store, a prediction is held after its group is written only where a later step
    asks for it (`keep`: the canary, a re-prompt); the rest of the run needs only its
    summary, so memory does not grow with the dataset. Without a store the predictions
    are the result, so all are held.
    """

    def __init__(self, store: RunStore | None, on_prediction: Callable[[Prediction], None] | None):
        self.store = store
        self.on_prediction = on_prediction
        self.buffer: list[Prediction] = []
        self.by_id: dict[str, Prediction] = {}
        self.summaries: dict[str, _Summary] = {}
        self.last_flush = time.monotonic()

    def add(self, prediction: Prediction, *, keep: bool = False) -> None:
        if keep or self.store is None:
            self.by_id[prediction.record_id] = prediction
        else:
            self.by_id.pop(prediction.record_id, None)
        self.summaries[prediction.record_id] = _summary(prediction)
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
        retry_failed: bool | Literal["all"],
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
        # Distinct records reused from an earlier call: a set, because the canary pass and
        # the main pass both meet the canary records.
        self.reused_ids: set[str] = set()
        self.kept_errors: set[str] = set()  # stored errors not retried: not retryable
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
            labels=list(self.task.labels.names),
            negative_label=self.task.labels.negative,
            dataset={"kind": type(self.dataset).__name__},
            versions=versions,
            started_at=_now(),
        )

    # -- steps -----------------------------------------------------------------------------

    def prepare(
        self, *, resume: bool, add_to_run: bool = False, manifest_extra: dict[str, Any]
    ) -> None:
        """Open the store, refuse a different run, load what was answered, write the manifest.

        Raises:
            RunStoreError: The store holds a run of another configuration and `add_to_run`
                is false.
        """
        self.manifest = self.manifest.with_recorded(manifest_extra)
        self.manifest.dataset["fingerprint"] = self.dataset.fingerprint()
        source = _dataset_source(self.dataset)
        if source is not None:
            self.manifest.dataset["source"] = source
        if self.store is None:
            return
        self.store.open()
        try:
            previous = self.store.read_manifest()
            differences = _config_differences(previous, self.manifest) if previous else []
            if differences and not add_to_run:
                raise RunStoreError(
                    f"{self.store.path} holds another run ({'; '.join(differences)}): give a "
                    "new output directory to start a new run, or add_to_run=True "
                    "(--add-to-run) to add this one to it"
                )
        except BaseException:
            self.store.close()
            raise
        stored = self.store.latest()
        if previous is not None:
            self.manifest.history = list(previous.history)
            if differences:
                self.manifest.history.append(_config_summary(previous))
        if resume:
            self.done = stored
            if previous is not None:
                self.manifest.started_at = previous.started_at
                if previous.model_id == self.runner.model_id and previous.runner_state:
                    self.runner.restore(previous.runner_state)
        # M of "N of M records": what the directory holds once this call ends, so a run
        # killed at any point can still say how much of it is missing. Ids are unique
        # (the Dataset contract), so a new directory needs only the length; reading the
        # ids again costs a pass over the dataset only when there is something to join.
        size = None if stored else _safe_len(self.dataset)
        self.manifest.expected_records = (
            size if size is not None else len(set(stored) | {r.id for r in self.dataset})
        )
        self.store.write_manifest(self.manifest)

    def execute(self, dataset: Dataset, *, show_progress: bool) -> None:
        """Stream every record of the main pass through the runner."""
        bar = _progress_bar(show_progress, _safe_len(dataset), self.task.name)
        with bar as advance:
            self.advance = advance
            self.describe = bar.describe
            self._stream(dataset, record_order=self.record_order)
        self.advance = lambda: None
        self.describe = lambda text: None

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
        summaries = []
        for record_id in self.record_order:
            summary = self.collector.summaries.get(record_id)
            if summary is None and record_id in self.done:
                summary = _summary(self.done[record_id])
            if summary is not None:
                summaries.append(summary)
        self.manifest.status = "completed"
        self.manifest.finished_at = _now()
        self.manifest.runner_state = self.runner.state() or self.manifest.runner_state
        self.manifest.counts = {
            "records": len(self.record_order),
            "answered_now": len(self.collector.summaries),
            "reused": len(self.reused_ids),
            "kept_not_retryable": len(self.kept_errors),
            "constraint_ignored": self.ignored_constraints,
            **{f"status_{key}": value for key, value in Counter(s[0] for s in summaries).items()},
        }
        if self.kept_errors:
            logger.warning(
                "kept %d stored errors marked not retryable (e.g. %s); "
                "retry_failed='all' (--retry-all-failed) runs them again",
                len(self.kept_errors),
                sorted(self.kept_errors)[0],
            )
        if self.store is not None:
            try:
                # The table holds every record of the directory (not only this call's), so
                # a resume on a subset never shrinks what `evaluate(run_dir)` reads.
                self.manifest.table = self.store.write_table()
                self.manifest.counts["stored"] = int(self.manifest.table["rows"])
                self.store.write_manifest(self.manifest)
            finally:
                self.store.close()
        return RunResult(
            predictions=self._predictions_loader(),
            metrics=_metrics(summaries),
            manifest=self.manifest,
            run_dir=self.store.path if self.store is not None else None,
            skipped=len(self.reused_ids),
            constraint_ignored=self.ignored_constraints,
        )

    # -- helpers ---------------------------------------------------------------------------

    def _predictions_loader(self) -> pd.DataFrame | Callable[[], pd.DataFrame]:
        """This call's rows in dataset order: a table, or with a store, how to read it.

        With a store the rows are read back from the run directory when first asked for,
        so `classify` never holds one row per record at once.
        """
        record_order = self.record_order
        if self.store is None:
            rows = []
            for record_id in record_order:
                prediction = self.collector.by_id.get(record_id) or self.done.get(record_id)
                if prediction is not None:
                    rows.append(prediction.to_row())
            return predictions_to_frame(rows)
        path = self.store.path
        return lambda: RunStore(path).predictions_frame(record_order)

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
        if not (self.retry_failed and previous.is_error):
            return True
        # None: a line written before `retryable` was stored; assume a new try may help.
        if self.retry_failed == "all" or previous.retryable is not False:
            return False
        self.kept_errors.add(record.id)
        return True

    def _stream(
        self, dataset: Dataset, *, record_order: list[str], keep_requests: bool = False
    ) -> None:
        self.runner.state_listener = self._save_runner_state
        for response in self.runner.run(self._requests(dataset, record_order)):
            prediction = self._predict(response.record_id, response)
            # Requests and predictions are kept only where a later step needs them (the
            # canary's image probe, a re-prompt), so memory does not grow with the dataset.
            keep = keep_requests or (self.reprompt and prediction.status in _REPROMPTABLE)
            self.collector.add(prediction, keep=keep)
            if not keep:
                self.requests_by_id.pop(response.record_id, None)
            self.advance()

    def _requests(self, dataset: Dataset, record_order: list[str]) -> Iterator[InferenceRequest]:
        for record in dataset:
            record_order.append(record.id)
            try:
                sha256 = record.image.sha256
            except ImageLoadError as exc:
                self._image_failure(record, "", exc)
                continue
            if self._is_done(record, sha256):
                if record.id not in self.collector.summaries:
                    self.reused_ids.add(record.id)
                self.advance()
                continue
            try:
                _check_before_sending(record)
            except ImageLoadError as exc:
                self._image_failure(record, sha256, exc)
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

    def _image_failure(self, record: Record, sha256: str, exc: ImageLoadError) -> None:
        self.pending[record.id] = _Pending(sha256, record.label, dict(record.metadata))
        # Not retryable as is; a repaired file has a new sha256 and is run again.
        failure = InferenceResponse.failure(record.id, "image_error", str(exc), retryable=False)
        self.collector.add(self._predict(record.id, failure))
        self.advance()

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
            # Offsets into `response.text`, the very string the parser read and `text` stores.
            evidence_start=parsed.span[0] if parsed.span else None,
            evidence_end=parsed.span[1] if parsed.span else None,
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
