"""`classify()`: the one loop that wires dataset → prompt → runner → parser → store.

Records stream through: requests are built lazily, the runner answers batch by batch, and
each prediction is written to the run store as it arrives. Nothing holds all images in
memory, and a run interrupted at any point resumes without losing or duplicating a record.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
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
from medbatch.errors import ConfigError, ImageLoadError, RunStoreError
from medbatch.evaluation import summarize
from medbatch.images import check_pixels
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
from medbatch.redaction import install_log_redaction, remember_runner_secrets
from medbatch.reprompt import follow_up_request
from medbatch.runners.base import BatchRunner
from medbatch.store import ResumeKey, RunManifest, RunStore, predictions_to_frame
from medbatch.tasks.base import Task
from medbatch.versions import package_versions

__all__ = ["RunResult", "RunTerminated", "classify"]

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
        skipped: Records answered by an earlier call and reused (resume), each counted once
            (canary records answered in this call are not "reused").
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
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
        RunStoreError: The run directory cannot be written, is in use, or holds a run of
            another configuration (see `add_to_run`).
        CanaryFailedError: The canary subset failed; nothing else was run.

    Example:
        >>> from medbatch import get_task
        >>> from medbatch.datasets.sample import load_ecg_sample
        >>> dataset, runner = load_ecg_sample()  # 16 records and recorded answers
        >>> result = classify(dataset, get_task("ecg"), runner)
        >>> len(result.predictions), result.metrics["coverage"], result.metrics["accuracy"]
        (16, 0.8125, 0.625)
    """
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
    loop.prepare(resume=resume, add_to_run=add_to_run, manifest_extra=manifest_extra or {})
    show = progress if progress is not None else sys.stderr.isatty()
    canary_size = _canary_size(canary, runner, dataset)
    remember_runner_secrets(runner)
    install_log_redaction()
    with _sigterm_as_interrupt():
        try:
            # The runner starts only when a record needs it (a resume with nothing left to
            # do never loads the model); it is closed whatever happens.
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


class RunTerminated(KeyboardInterrupt):
    """SIGTERM arrived during `classify` (a scheduler, `docker stop`, `kill`).

    Handled like Ctrl-C: the answers that arrived are written, the manifest says
    `interrupted`, and the same call with `resume=True` goes on where it stopped. A
    `KeyboardInterrupt`, so `except Exception` blocks do not swallow it.
    """


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Raise `RunTerminated` on the first SIGTERM while a run is in progress.

    Only where SIGTERM would otherwise kill the process outright (its handler is the
    default) and only on the main thread (the only one Python delivers signals to); the
    previous handler is put back afterwards. A second SIGTERM during the clean-up is
    ignored, so the manifest write it is waiting for can finish.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except (AttributeError, ValueError):
        previous = None
    if previous is not signal.SIG_DFL:
        yield  # the host handles SIGTERM its own way (or ignores it)
        return
    fired = False

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if not fired:
            fired = True
            raise RunTerminated(f"terminated by signal {signum} (SIGTERM)")

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_before_sending(record: Record) -> None:
    """The pixel limit, checked once here for every runner (and again where images decode).

    A runner that sends files unchanged (a stage upload, a data URL) would otherwise let a
    decompression bomb through that `medbatch validate` and the decoding runners refuse.
    """
    check_pixels(record.image)


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
        for key, value in manifest_extra.items():
            setattr(self.manifest, key, value)
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
            "reused": len(self.reused_ids),
            "kept_not_retryable": len(self.kept_errors),
            "constraint_ignored": self.ignored_constraints,
            **{f"status_{key}": int(value) for key, value in Counter(frame["status"]).items()},
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
            predictions=frame,
            metrics=summarize(frame),
            manifest=self.manifest,
            run_dir=self.store.path if self.store is not None else None,
            skipped=len(self.reused_ids),
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
                self._image_failure(record, "", exc)
                continue
            if self._is_done(record, sha256):
                if record.id not in self.collector.by_id:
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


_COMPARED = (
    ("task", "task"),
    ("model_id", "model"),
    ("prompt_fingerprint", "prompt"),
    ("params_fingerprint", "generation params"),
    ("constrained", "constrained decoding"),
)


def _config_differences(previous: RunManifest, current: RunManifest) -> list[str]:
    """What makes `current` another run than the one stored (empty when it is the same)."""
    differences = []
    for attribute, name in _COMPARED:
        old, new = getattr(previous, attribute), getattr(current, attribute)
        if old == new:
            continue
        if attribute == "prompt_fingerprint":
            old = f"{previous.prompt_version} {old}"
            new = f"{current.prompt_version} {new}"
        elif attribute == "params_fingerprint":
            changed = sorted(
                key
                for key in set(previous.params) | set(current.params)
                if previous.params.get(key) != current.params.get(key)
            )
            if changed:
                differences.append(
                    "generation params "
                    + ", ".join(
                        f"{key} {previous.params.get(key)!r} → {current.params.get(key)!r}"
                        for key in changed
                    )
                )
                continue
        differences.append(f"{name} {old!r} → {new!r}")
    old_source = previous.dataset.get("source")
    new_source = current.dataset.get("source")
    # Only a different folder is another dataset: a limit, a sample or added images of the
    # same folder are the same run, extended or resumed on a part.
    if old_source and new_source and old_source != new_source:
        differences.append(f"dataset {old_source!r} → {new_source!r}")
    return differences


def _config_summary(manifest: RunManifest) -> dict[str, Any]:
    return {
        "task": manifest.task,
        "model_id": manifest.model_id,
        "prompt_version": manifest.prompt_version,
        "prompt_fingerprint": manifest.prompt_fingerprint,
        "params_fingerprint": manifest.params_fingerprint,
        "constrained": manifest.constrained,
        "dataset": manifest.dataset,
        "started_at": manifest.started_at,
        "status": manifest.status,
    }


def _dataset_source(dataset: Dataset) -> str | None:
    """The folder (or file) a dataset reads, when it has one: what makes it "the same"."""
    while isinstance(dataset, SubsetDataset):
        dataset = dataset.base
    for attribute in ("root", "path", "source"):
        value = getattr(dataset, attribute, None)
        if isinstance(value, (str, Path)) and str(value):
            return str(Path(value).expanduser().resolve())
    return None


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
