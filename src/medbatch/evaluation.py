"""Metrics that say how sure they are, computed from a predictions table.

```
predictions (DataFrame or run directory)
    │  truth, label, status, label_scores, image_sha256
    ▼
evaluate() ──▶ Evaluation
                 ├── confusion          labels × (labels + "unparsed/error"): nothing dropped
                 ├── per_class          sensitivity, specificity, PPV, NPV, F1 (each with
                 │                      a 95% CI), support
                 ├── headline           accuracy, balanced accuracy, macro/weighted F1,
                 │                      Cohen's kappa, coverage: value, 95% CI, n
                 ├── status_counts      one count per AnswerStatus (coverage never hidden)
                 ├── binary             "any abnormal" vs the negative label (screening view)
                 ├── roc_auc (95% CI), calibration   when the runner gave label scores
                 └── duplicates         records sharing image content (and dedupe=True)
compare(run_a, run_b) ──▶ Comparison   paired accuracy difference, McNemar's exact test,
                                       the records where the two runs disagree
```

Conventions, chosen so that a number can never look better than the run was:

- Every record with a ground truth counts. An answer that was not parsed (ambiguous,
  unparseable, empty, truncated, refusal, error, ...) is a wrong answer, shown in the
  confusion matrix's last column, not dropped. `accuracy_parsed` is given beside `coverage`
  for the accuracy among parsed answers only.
- Records without a ground truth count in coverage and status counts only.
- Confidence intervals are 95% percentile bootstrap intervals over records: `n_bootstrap`
  resamples of the records (seeded), drawn chunk by chunk so that memory stays bounded, and
  every metric is computed from the same resamples, vectorised with numpy. Point estimates
  come from scikit-learn; the vectorised resample formulas are the same definitions (the
  tests check they agree, that the intervals match `scipy.stats.bootstrap`, and that they
  cover a known value about 95% of the time).
- Copies of one image (same `image_sha256`) are reported; `dedupe=True` counts each content
  once, so a copied image cannot narrow an interval it should not.

Example:
    ```python
    from medbatch.evaluation import evaluate
    result = evaluate("runs/ecg", n_bootstrap=1000, seed=0)
    acc = result.headline["accuracy"]
    print(f"accuracy {acc.value:.2f} (95% CI {acc.low:.2f}-{acc.high:.2f}, n={acc.n})")
    ```
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from medbatch.records import AnswerStatus

if TYPE_CHECKING:
    from medbatch.store import RunManifest

__all__ = [
    "HEADLINE_METRICS",
    "UNPARSED",
    "BinaryView",
    "Calibration",
    "CalibrationBin",
    "ClassMetrics",
    "Comparison",
    "ConfusionMatrix",
    "Disagreement",
    "DuplicateSummary",
    "Estimate",
    "Evaluation",
    "Guardrails",
    "LatencySummary",
    "compare",
    "evaluate",
    "guardrail_summary",
    "summarize",
]

UNPARSED = "unparsed/error"
"""Column of the confusion matrix for records without a parsed label (never dropped)."""

HEADLINE_METRICS: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "weighted_f1",
    "kappa",
    "coverage",
    "accuracy_parsed",
)
"""The headline metrics, in display order."""

_FloatArray = npt.NDArray[np.float64]
_IntArray = npt.NDArray[np.int64]
_Number = TypeVar("_Number", np.float64, np.int64)
# Resample this many index values (32 MB) at a time. Each chunk is reduced to a few numbers
# per resample before the next is drawn, so the (n_bootstrap, n) index array (800 MB at
# n = 100k) never exists; the chunks draw the same stream of indices as that array would.
_BOOTSTRAP_CHUNK = 4_000_000


# -- cheap summary (called by the pipeline after every run) ----------------------------------


def summarize(predictions: pd.DataFrame) -> dict[str, Any]:
    """Headline figures of a run: n, coverage, accuracy, counts per status.

    Cheap (no bootstrap): `classify` calls it after every run. Accuracy counts every record
    with a ground truth; an unparsed or failed answer is a wrong answer there (it is never
    dropped). `accuracy_parsed` is the accuracy among parsed answers only, shown beside
    coverage so the two cannot be confused.
    """
    n = len(predictions)
    status = predictions["status"].astype(str) if n else pd.Series(dtype=str)
    parsed = status == AnswerStatus.PARSED.value
    has_truth = predictions["truth"].notna() if n else pd.Series(dtype=bool)
    correct = (predictions["label"] == predictions["truth"]) & has_truth & parsed if n else parsed
    n_truth = int(has_truth.sum()) if n else 0
    n_parsed_truth = int((has_truth & parsed).sum()) if n else 0
    return {
        "n": n,
        "n_with_truth": n_truth,
        "coverage": float(parsed.mean()) if n else 0.0,
        "accuracy": float(correct.sum() / n_truth) if n_truth else None,
        "accuracy_parsed": float(correct.sum() / n_parsed_truth) if n_parsed_truth else None,
        "status_counts": {s.value: int((status == s.value).sum()) for s in AnswerStatus},
    }


# -- result models ---------------------------------------------------------------------------

_MODEL = ConfigDict(frozen=True, extra="forbid")


class Estimate(BaseModel):
    """A metric with its 95% bootstrap confidence interval.

    Attributes:
        value: The point estimate, or None when undefined (e.g. no records with a truth).
        low: Lower end of the 95% interval, or None when it cannot be estimated.
        high: Upper end of the 95% interval.
        n: How many records the metric is computed over.
    """

    model_config = _MODEL

    value: float | None
    low: float | None = None
    high: float | None = None
    n: int = 0

    def format(self, digits: int = 3) -> str:
        """`0.812 (0.701–0.905)`, or `–` when undefined."""
        if self.value is None:
            return "–"
        text = f"{self.value:.{digits}f}"
        if self.low is not None and self.high is not None:
            text += f" ({self.low:.{digits}f}–{self.high:.{digits}f})"
        return text


class ConfusionMatrix(BaseModel):
    """Counts of (truth, prediction) pairs.

    Attributes:
        labels: The row labels (ground truth), in task order.
        columns: The predicted labels, then `UNPARSED` for records without a parsed label.
        counts: `counts[i][j]` records with truth `labels[i]` predicted as `columns[j]`.
    """

    model_config = _MODEL

    labels: tuple[str, ...]
    columns: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]

    def frame(self) -> pd.DataFrame:
        """As a DataFrame: rows truth, columns prediction."""
        frame: pd.DataFrame = pd.DataFrame(
            [list(row) for row in self.counts], index=list(self.labels), columns=list(self.columns)
        )
        return frame


class ClassMetrics(BaseModel):
    """One class against the rest.

    Unparsed answers of this class's records are false negatives. A class without support
    has no sensitivity; a class never predicted has no PPV; both are None, never 0 or 1.

    Attributes:
        label: The class.
        support: Records whose truth is this class.
        predicted: Records parsed as this class.
        tp: True positives.
        fp: False positives.
        fn: False negatives (including unparsed answers).
        tn: True negatives.
        sensitivity: Recall, TP / (TP + FN).
        specificity: TN / (TN + FP).
        ppv: Precision, TP / (TP + FP).
        npv: TN / (TN + FN).
        f1: 2·TP / (2·TP + FP + FN) (scikit-learn's `f1_score`).
        sensitivity_ci: 95% bootstrap interval of the sensitivity.
        specificity_ci: 95% bootstrap interval of the specificity.
        ppv_ci: 95% bootstrap interval of the PPV.
        npv_ci: 95% bootstrap interval of the NPV.
        f1_ci: 95% bootstrap interval of F1.
    """

    model_config = _MODEL

    label: str
    support: int
    predicted: int
    tp: int
    fp: int
    fn: int
    tn: int
    sensitivity: float | None
    specificity: float | None
    ppv: float | None
    npv: float | None
    f1: float | None
    sensitivity_ci: tuple[float, float] | None = None
    specificity_ci: tuple[float, float] | None = None
    ppv_ci: tuple[float, float] | None = None
    npv_ci: tuple[float, float] | None = None
    f1_ci: tuple[float, float] | None = None


class BinaryView(BaseModel):
    """Screening view: any abnormal label (positive) against the negative label.

    An unparsed answer is wrong whatever the truth: a missed positive (FN) or a false alarm
    (FP). Records without a truth are left out.

    Attributes:
        negative_label: The label that counts as negative (NORMAL for ECG).
        positive_labels: Every other label.
        n: Records with a truth.
        tp: Positives called positive.
        fp: Negatives called positive, or unparsed.
        fn: Positives called negative, or unparsed.
        tn: Negatives called negative.
        unparsed: Records with a truth but no parsed label.
        sensitivity: TP / (TP + FN), with CI.
        specificity: TN / (TN + FP), with CI.
        ppv: TP / (TP + FP).
        npv: TN / (TN + FN).
        ppv_ci: 95% bootstrap interval of the PPV.
        npv_ci: 95% bootstrap interval of the NPV.
    """

    model_config = _MODEL

    negative_label: str
    positive_labels: tuple[str, ...]
    n: int
    tp: int
    fp: int
    fn: int
    tn: int
    unparsed: int
    sensitivity: Estimate
    specificity: Estimate
    ppv: float | None
    npv: float | None
    ppv_ci: tuple[float, float] | None = None
    npv_ci: tuple[float, float] | None = None


class CalibrationBin(BaseModel):
    """One bin of a reliability diagram.

    Attributes:
        lower: Lower edge of the confidence bin.
        upper: Upper edge.
        count: Records whose top score falls in the bin.
        confidence: Their mean top score (None for an empty bin).
        accuracy: How often the top-scored label was right (None for an empty bin).
    """

    model_config = _MODEL

    lower: float
    upper: float
    count: int
    confidence: float | None
    accuracy: float | None


class Calibration(BaseModel):
    """Does a score of 0.8 mean right 80% of the time?

    Scores are normalised per record to probabilities over the labels (log-probabilities are
    soft-maxed). The top-scored label is the call being calibrated.

    Attributes:
        n: Records with a truth and scores.
        ece: Expected calibration error: the count-weighted mean |accuracy - confidence|.
        bins: Equal-width confidence bins.
    """

    model_config = _MODEL

    n: int
    ece: float | None
    bins: tuple[CalibrationBin, ...]


class DuplicateSummary(BaseModel):
    """Records that share image content (`image_sha256`).

    Attributes:
        records: Records looked at.
        distinct: Distinct image contents among them.
        copies: Records that repeat an earlier one's content.
        groups: Record ids per shared content (two or more each), at most 50 listed.
        conflicts: Groups whose copies carry different ground truths.
        deduped: Whether the metrics count each content once.
    """

    model_config = _MODEL

    records: int
    distinct: int
    copies: int
    groups: tuple[tuple[str, ...], ...] = ()
    conflicts: int = 0
    deduped: bool = False


class LatencySummary(BaseModel):
    """Seconds per answer, over records that report a latency."""

    model_config = _MODEL

    n: int
    mean: float | None = None
    median: float | None = None
    p95: float | None = None
    max: float | None = None
    total: float | None = None


class Guardrails(BaseModel):
    """What the guardrails saw: constraint validity, unseen images, re-prompts, canary.

    Attributes:
        constrained: The run asked for constrained decoding.
        constraint_valid: Constrained answers that came back as a valid label.
        constraint_ignored: Constrained answers outside the label set (the back-end ignored
            the constraint; the parser read them as a fallback and the rows are flagged).
        constraint_validity: `valid / (valid + ignored)`, None when not constrained.
        image_not_seen: Rows whose prompt tokens show the image never reached the model.
        reprompted: Rows whose verdict came from the corrective follow-up turn.
        canary: The canary report from the manifest, when a canary ran.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    constrained: bool = False
    constraint_valid: int = 0
    constraint_ignored: int = 0
    constraint_validity: float | None = None
    image_not_seen: int = 0
    reprompted: int = 0
    canary: dict[str, Any] | None = None


def guardrail_summary(frame: pd.DataFrame, manifest: RunManifest | None = None) -> Guardrails:
    """Count the guardrail flags of a predictions table (and the manifest's canary)."""
    # Hand-built frames may lack the provenance columns: absent means "no flags".
    methods = frame.get("method", pd.Series(dtype=str)).astype(str)
    flags: list[dict[str, Any]] = []
    for value in frame.get("metadata", pd.Series(dtype=object)):
        if isinstance(value, str) and value:
            flags.append(json.loads(value))
        elif isinstance(value, dict):
            flags.append(value)
    valid = int((methods == "constrained").sum())
    ignored = sum(1 for meta in flags if meta.get("constraint_ignored"))
    constrained = bool(manifest.constrained) if manifest is not None else (valid + ignored) > 0
    return Guardrails(
        constrained=constrained,
        constraint_valid=valid,
        constraint_ignored=ignored,
        constraint_validity=valid / (valid + ignored) if constrained and valid + ignored else None,
        image_not_seen=sum(1 for meta in flags if meta.get("image_not_seen")),
        reprompted=int(methods.str.startswith("reprompt:").sum()),
        canary=manifest.canary if manifest is not None else None,
    )


class Evaluation(BaseModel):
    """Everything `evaluate` computes; `.to_json()` writes it as `metrics.json`.

    Attributes:
        n: Records evaluated (after dedupe, when asked).
        n_with_truth: Records with a ground truth (the denominator of the accuracy metrics).
        n_parsed: Records with a parsed label.
        labels: The classes, in task order.
        headline: `HEADLINE_METRICS` by name, each an `Estimate`.
        status_counts: Records per `AnswerStatus` value (every status listed, zeros too).
        confusion: The confusion matrix, unparsed answers in the last column.
        per_class: One-vs-rest metrics per label.
        binary: The screening view, when a negative label is known.
        roc_auc: One-vs-rest ROC AUC per label (None where a class has no positives or no
            negatives), when label scores exist.
        roc_auc_ci: 95% bootstrap interval of each label's AUC (None where undefined).
        macro_roc_auc: The mean of the defined per-label AUCs.
        macro_roc_auc_ci: 95% bootstrap interval of the macro AUC.
        calibration: The calibration table, when label scores exist.
        duplicates: Records that share content.
        latency: Seconds per answer.
        n_bootstrap: Bootstrap resamples behind each interval (0: no intervals).
        seed: Seed of the resampling.
        notes: Plain-language caveats (few records, copies, labels outside the set, ...).
        run_status: The run directory's manifest status (`completed`, `running`,
            `interrupted`, ...); None for a DataFrame.
        n_stored: Records with a stored answer in the run directory (before dedupe).
        n_expected: Records the run directory should hold when complete (the manifest's
            `expected_records`); None when unknown.
    """

    model_config = _MODEL

    n: int
    n_with_truth: int
    n_parsed: int
    labels: tuple[str, ...]
    headline: dict[str, Estimate]
    status_counts: dict[str, int]
    confusion: ConfusionMatrix
    per_class: tuple[ClassMetrics, ...]
    binary: BinaryView | None = None
    roc_auc: dict[str, float | None] | None = None
    roc_auc_ci: dict[str, tuple[float, float] | None] | None = None
    macro_roc_auc: float | None = None
    macro_roc_auc_ci: tuple[float, float] | None = None
    calibration: Calibration | None = None
    duplicates: DuplicateSummary
    latency: LatencySummary
    guardrails: Guardrails = Field(default_factory=Guardrails)
    n_bootstrap: int
    seed: int
    ci_method: str = "95% percentile bootstrap over records"
    notes: tuple[str, ...] = ()
    run_status: str | None = None
    n_stored: int | None = None
    n_expected: int | None = None

    @property
    def incomplete(self) -> bool:
        """True for a run directory whose run did not finish or lacks records."""
        if self.run_status is not None and self.run_status != "completed":
            return True
        return (
            self.n_expected is not None
            and self.n_stored is not None
            and self.n_stored < self.n_expected
        )

    def completeness(self) -> str | None:
        """One line for an incomplete run ("N of M records"), None when complete."""
        if not self.incomplete:
            return None
        stored = self.n_stored if self.n_stored is not None else self.n
        expected = "?" if self.n_expected is None else str(self.n_expected)
        head = (
            f"This run is incomplete (status: {self.run_status or 'unknown'}): "
            f"{stored} of {expected} "
        )
        if self.n_expected is not None and stored >= self.n_expected:
            detail = (
                "records have an answer, but the last call stopped before it finished "
                "(records it was re-running keep their latest stored answer)."
            )
        else:
            detail = f"records have an answer; these figures describe those {stored} only."
        return f"{head}{detail} Resume the run to complete it."

    def to_json(self, indent: int | None = 2) -> str:
        """The evaluation as JSON (no NaN: undefined values are null)."""
        return self.model_dump_json(indent=indent)

    def to_dict(self) -> dict[str, Any]:
        """The evaluation as plain JSON-compatible Python."""
        result: dict[str, Any] = json.loads(self.to_json(indent=None))
        return result


class Disagreement(BaseModel):
    """One record two runs answered differently."""

    model_config = _MODEL

    record_id: str
    truth: str | None
    label_a: str | None
    label_b: str | None
    status_a: str
    status_b: str
    correct_a: bool | None
    correct_b: bool | None


class Comparison(BaseModel):
    """Two runs on the same records, compared pairwise.

    Attributes:
        n_paired: Records present in both runs.
        n_with_truth: Paired records with a ground truth (the accuracy denominator).
        unpaired_a: Records only run A has (left out of every paired figure).
        unpaired_b: Records only run B has.
        accuracy_a: Run A's accuracy on the paired records (unparsed = wrong).
        accuracy_b: Run B's accuracy on the paired records.
        difference: Accuracy of B minus A, with a paired bootstrap CI.
        a_only_correct: Records A got right and B wrong (McNemar's b).
        b_only_correct: Records B got right and A wrong (McNemar's c).
        mcnemar_p: Two-sided exact McNemar p-value (binomial test on the discordant pairs);
            1.0 when there are none; None without truths.
        disagreements: Records whose labels or statuses differ between the runs.
        model_a: Model id of run A (when known).
        model_b: Model id of run B.
        run_a: Run A's directory (None for a DataFrame).
        run_b: Run B's directory.
        prompt_a: Run A's prompt version (from its manifest, when known).
        prompt_b: Run B's prompt version.
    """

    model_config = _MODEL

    n_paired: int
    n_with_truth: int
    unpaired_a: int
    unpaired_b: int
    accuracy_a: float | None
    accuracy_b: float | None
    difference: Estimate
    a_only_correct: int
    b_only_correct: int
    mcnemar_p: float | None
    disagreements: tuple[Disagreement, ...]
    model_a: str | None = None
    model_b: str | None = None
    run_a: str | None = None
    run_b: str | None = None
    prompt_a: str | None = None
    prompt_b: str | None = None

    def disagreements_frame(self) -> pd.DataFrame:
        """The disagreeing records as a DataFrame."""
        columns = list(Disagreement.model_fields)
        frame: pd.DataFrame = pd.DataFrame(
            [d.model_dump() for d in self.disagreements], columns=columns
        )
        return frame

    def to_json(self, indent: int | None = 2) -> str:
        """The comparison as JSON."""
        return self.model_dump_json(indent=indent)


# -- loading ---------------------------------------------------------------------------------


def _load(source: pd.DataFrame | str | Path) -> tuple[pd.DataFrame, RunManifest | None]:
    if isinstance(source, pd.DataFrame):
        return source, None
    from medbatch.store import RunStore, load_predictions

    frame = load_predictions(source)
    return frame, RunStore(source).read_manifest()


def _task_labels(manifest: RunManifest | None) -> tuple[str, ...] | None:
    """The task's label order from a run's manifest, when the task is registered."""
    if manifest is None:
        return None
    from medbatch.errors import MedbatchError
    from medbatch.tasks.registry import get_task

    try:
        return tuple(get_task(manifest.task).labels.names)
    except (MedbatchError, KeyError, ValueError):
        return None


def _clean(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def _scores(value: Any) -> dict[str, float] | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        value = json.loads(value)
    if isinstance(value, Mapping) and value:
        return {str(k): float(v) for k, v in value.items()}
    return None


def _finite(value: float | np.floating[Any] | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# -- evaluate --------------------------------------------------------------------------------


def evaluate(
    source: pd.DataFrame | str | Path,
    labels: Sequence[str] | None = None,
    negative_label: str | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    *,
    dedupe: bool = False,
    calibration_bins: int = 10,
) -> Evaluation:
    """Evaluate a run: confusion matrix, per-class and headline metrics with 95% CIs.

    Args:
        source: A predictions DataFrame (`RunResult.predictions`) or a run directory.
        labels: The classes in display order. Default: the run's task labels (from the
            manifest), else the labels seen in truth and predictions. Labels seen but not
            listed are appended (and noted), never dropped.
        negative_label: The label that counts as negative in the screening view. Default:
            `NORMAL` when it is one of the labels, else no screening view.
        n_bootstrap: Bootstrap resamples for the confidence intervals; 0 for none.
        seed: Seed of the resampling: the same seed gives the same intervals.
        dedupe: Count each image content (`image_sha256`) once, keeping its first record.
        calibration_bins: Equal-width bins of the calibration table.

    Returns:
        An `Evaluation`.

    Raises:
        RunStoreError: `source` is a folder without predictions.
        ValueError: `negative_label` is not one of the labels, or `n_bootstrap` < 0.

    Example:
        >>> import pandas as pd
        >>> frame = pd.DataFrame({
        ...     "record_id": ["a", "b", "c", "d"],
        ...     "truth": ["NORMAL", "NORMAL", "POST_MI", "POST_MI"],
        ...     "label": ["NORMAL", "POST_MI", "POST_MI", None],
        ...     "status": ["parsed", "parsed", "parsed", "unparseable"],
        ... })
        >>> ev = evaluate(frame, negative_label="NORMAL", seed=1)
        >>> ev.n, ev.headline["accuracy"].value, ev.headline["coverage"].value
        (4, 0.5, 0.75)
    """
    if n_bootstrap < 0:
        raise ValueError("n_bootstrap must be >= 0")
    frame, manifest = _load(source)
    rows = _Rows.from_frame(frame)
    notes: list[str] = []

    duplicates = rows.duplicate_summary(dedupe=dedupe)
    if duplicates.copies:
        if dedupe:
            rows = rows.first_per_content()
            notes.append(
                f"{duplicates.copies} records repeat another record's image; each image is "
                "counted once (dedupe)."
            )
        else:
            notes.append(
                f"{duplicates.copies} records repeat another record's image and are counted "
                "again; pass dedupe=True (--dedupe) to count each image once."
            )

    label_order = _label_order(labels or _task_labels(manifest), rows, notes)
    if negative_label is None and "NORMAL" in label_order:
        negative_label = "NORMAL"
    if negative_label is not None and negative_label not in label_order:
        raise ValueError(
            f"negative label {negative_label!r} is not one of the labels: {', '.join(label_order)}"
        )

    rng_seed = np.random.SeedSequence(seed)
    truth_rows = rows.with_truth()
    cm_codes = _Codes(truth_rows, label_order)
    boot = _Resamples.of(len(truth_rows.truth), n_bootstrap, rng_seed.spawn(1)[0])
    tensors = cm_codes.bootstrap_confusion(boot)

    headline = _headline(
        rows=rows,
        truth_rows=truth_rows,
        codes=cm_codes,
        tensors=tensors,
        boot=boot,
        seed=rng_seed,
        n_bootstrap=n_bootstrap,
    )
    per_class = _per_class(cm_codes, tensors)
    binary = (
        _binary_view(truth_rows, label_order, negative_label, boot)
        if negative_label is not None
        else None
    )
    roc_auc, macro_auc, calibration = _score_metrics(truth_rows, label_order, calibration_bins)
    roc_auc_ci, macro_auc_ci = _auc_intervals(
        truth_rows, label_order, n_bootstrap, rng_seed.spawn(1)[0]
    )
    if 0 < len(truth_rows.truth) < 30:
        notes.append(
            f"Only {len(truth_rows.truth)} records with a ground truth: intervals are wide "
            "and the bootstrap is approximate at this size."
        )
    if len(truth_rows.truth) == 0:
        notes.append("No record has a ground truth: only coverage and status counts apply.")
    if rows.n and not rows.parsed.any():
        notes.append("No answer was parsed: every record counts as wrong.")

    return Evaluation(
        n=rows.n,
        n_with_truth=len(truth_rows.truth),
        n_parsed=int(rows.parsed.sum()),
        labels=label_order,
        headline=headline,
        status_counts=rows.status_counts(),
        confusion=cm_codes.confusion(),
        per_class=per_class,
        binary=binary,
        roc_auc=roc_auc,
        roc_auc_ci=roc_auc_ci if roc_auc is not None else None,
        macro_roc_auc=macro_auc,
        macro_roc_auc_ci=macro_auc_ci if macro_auc is not None else None,
        calibration=calibration,
        duplicates=duplicates,
        latency=rows.latency_summary(),
        guardrails=guardrail_summary(frame, manifest),
        n_bootstrap=n_bootstrap if len(truth_rows.truth) else 0,
        seed=seed,
        notes=tuple(notes),
        run_status=manifest.status if manifest is not None else None,
        n_stored=len(frame) if manifest is not None else None,
        n_expected=manifest.expected_records if manifest is not None else None,
    )


class _Rows:
    """The columns evaluation needs, cleaned: plain strings, None for missing."""

    def __init__(
        self,
        *,
        record_ids: list[str],
        truth: list[str | None],
        label: list[str | None],
        status: list[str],
        sha: list[str | None],
        scores: list[dict[str, float] | None],
        latency: list[float | None],
    ) -> None:
        self.record_ids = record_ids
        self.truth_raw = truth
        self.label = label
        self.status = status
        self.sha = sha
        self.scores = scores
        self.latency = latency
        self.n = len(record_ids)
        self.parsed = np.array([s == AnswerStatus.PARSED.value for s in status], dtype=bool)
        # `truth` is the non-None list only for `_Rows` built by `with_truth`.
        self.truth: list[str] = [t for t in truth if t is not None]

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> _Rows:
        n = len(frame)

        def column(name: str) -> list[Any]:
            if name not in frame.columns:
                return [None] * n
            return list(frame[name])

        status = [_clean(s) or AnswerStatus.ERROR.value for s in column("status")]
        labels = [_clean(v) for v in column("label")]
        # Only a parsed answer has a label that counts; anything else is "unparsed/error".
        labels = [
            lab if st == AnswerStatus.PARSED.value else None
            for lab, st in zip(labels, status, strict=True)
        ]
        latency = [_finite(v) if isinstance(v, (int, float)) else None for v in column("latency_s")]
        return cls(
            record_ids=[str(v) for v in column("record_id")],
            truth=[_clean(v) for v in column("truth")],
            label=labels,
            status=status,
            sha=[_clean(v) or None for v in column("image_sha256")],
            scores=[_scores(v) for v in column("label_scores")],
            latency=latency,
        )

    def _subset(self, keep: Sequence[int]) -> _Rows:
        return _Rows(
            record_ids=[self.record_ids[i] for i in keep],
            truth=[self.truth_raw[i] for i in keep],
            label=[self.label[i] for i in keep],
            status=[self.status[i] for i in keep],
            sha=[self.sha[i] for i in keep],
            scores=[self.scores[i] for i in keep],
            latency=[self.latency[i] for i in keep],
        )

    def with_truth(self) -> _Rows:
        return self._subset([i for i, t in enumerate(self.truth_raw) if t is not None])

    def first_per_content(self) -> _Rows:
        seen: set[str] = set()
        keep: list[int] = []
        for i, sha in enumerate(self.sha):
            # Records without a content hash (unreadable images) are kept: they are errors
            # that must stay visible, not copies.
            if sha is None or sha not in seen:
                keep.append(i)
            if sha is not None:
                seen.add(sha)
        return self._subset(keep)

    def duplicate_summary(self, *, dedupe: bool) -> DuplicateSummary:
        groups: dict[str, list[int]] = {}
        for i, sha in enumerate(self.sha):
            if sha is not None:
                groups.setdefault(sha, []).append(i)
        shared = [members for members in groups.values() if len(members) > 1]
        conflicts = sum(
            1
            for members in shared
            if len({self.truth_raw[i] for i in members if self.truth_raw[i] is not None}) > 1
        )
        no_hash = sum(1 for sha in self.sha if sha is None)
        return DuplicateSummary(
            records=self.n,
            distinct=len(groups) + no_hash,
            copies=sum(len(members) - 1 for members in shared),
            groups=tuple(tuple(self.record_ids[i] for i in members) for members in shared[:50]),
            conflicts=conflicts,
            deduped=dedupe and bool(shared),
        )

    def status_counts(self) -> dict[str, int]:
        counts = {status.value: 0 for status in AnswerStatus}
        for status in self.status:
            counts[status] = counts.get(status, 0) + 1
        return counts

    def latency_summary(self) -> LatencySummary:
        values = np.array([v for v in self.latency if v is not None], dtype=np.float64)
        if values.size == 0:
            return LatencySummary(n=0)
        return LatencySummary(
            n=int(values.size),
            mean=float(values.mean()),
            median=float(np.median(values)),
            p95=float(np.percentile(values, 95)),
            max=float(values.max()),
            total=float(values.sum()),
        )


def _label_order(given: Sequence[str] | None, rows: _Rows, notes: list[str]) -> tuple[str, ...]:
    seen = {t for t in rows.truth_raw if t is not None} | {lab for lab in rows.label if lab}
    if not given:
        return tuple(sorted(seen))
    order = list(dict.fromkeys(given))
    extra = sorted(seen - set(order))
    if extra:
        notes.append(
            f"Labels outside the task's label set were found and added: {', '.join(extra)}."
        )
    return (*order, *extra)


class _Codes:
    """Truth and prediction of the records with a truth, as integer codes."""

    def __init__(self, rows: _Rows, labels: tuple[str, ...]) -> None:
        self.labels = labels
        self.columns = (*labels, UNPARSED)
        self.k = len(labels)
        self.kc = self.k + 1
        index = {label: i for i, label in enumerate(labels)}
        self.y_true = list(rows.truth)
        self.y_pred = [lab if lab is not None else UNPARSED for lab in rows.label]
        self.t: _IntArray = np.array([index[t] for t in self.y_true], dtype=np.int64)
        self.p: _IntArray = np.array([index.get(p, self.k) for p in self.y_pred], dtype=np.int64)
        self.n = len(self.y_true)

    def confusion(self) -> ConfusionMatrix:
        if self.n:
            from sklearn.metrics import confusion_matrix

            full = confusion_matrix(self.y_true, self.y_pred, labels=list(self.columns))
            counts = full[: self.k]  # the "unparsed/error" row is empty: truth is a label
        else:
            counts = np.zeros((self.k, self.kc), dtype=np.int64)
        return ConfusionMatrix(
            labels=self.labels,
            columns=self.columns,
            counts=tuple(tuple(int(c) for c in row) for row in counts),
        )

    def bootstrap_confusion(self, boot: _Resamples | None) -> npt.NDArray[np.int64] | None:
        """(B, k, k+1) confusion matrices, one per resample, without a loop over resamples."""
        if boot is None:
            return None
        cell = self.t * self.kc + self.p
        size = self.k * self.kc

        def confusions(chunk: _IntArray) -> npt.NDArray[np.int64]:
            b = chunk.shape[0]
            offsets = (np.arange(b, dtype=np.int64) * size)[:, None]
            flat = np.bincount((cell[chunk] + offsets).ravel(), minlength=b * size)
            return flat.reshape(b, self.k, self.kc)

        return boot.map(confusions)


class _Resamples:
    """`n_bootstrap` resamples of `n` records, drawn in chunks from one seed.

    `map` draws the same index stream every time (a fresh generator from the same seed), so
    metrics computed in separate calls are paired on the same resamples; only one chunk of
    indices is alive at a time.
    """

    def __init__(self, n: int, n_bootstrap: int, seed: np.random.SeedSequence) -> None:
        self.n = n
        self.n_bootstrap = n_bootstrap
        self.seed = seed

    @classmethod
    def of(cls, n: int, n_bootstrap: int, seed: np.random.SeedSequence) -> _Resamples | None:
        """The resamples, or None when there is nothing to resample."""
        return cls(n, n_bootstrap, seed) if n and n_bootstrap else None

    def chunks(self) -> Iterator[_IntArray]:
        """(rows, n) index arrays whose rows, in order, are the resamples."""
        rng = np.random.default_rng(self.seed)
        rows_per_chunk = max(1, _BOOTSTRAP_CHUNK // self.n)
        for start in range(0, self.n_bootstrap, rows_per_chunk):
            size = min(rows_per_chunk, self.n_bootstrap - start)
            yield rng.integers(0, self.n, size=(size, self.n), dtype=np.int64)

    def map(self, statistic: Callable[[_IntArray], npt.NDArray[_Number]]) -> npt.NDArray[_Number]:
        """`statistic` of each chunk (one leading row per resample), stacked over chunks."""
        return np.concatenate([statistic(chunk) for chunk in self.chunks()])


def _ratio(num: _FloatArray, den: _FloatArray) -> _FloatArray:
    """num / den, NaN where den is 0 (undefined, not 0)."""
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(values: _FloatArray, axis: int) -> _FloatArray:
    """Mean over non-NaN values; NaN where all are NaN (without numpy's warning)."""
    valid = ~np.isnan(values)
    total = np.where(valid, values, 0.0).sum(axis=axis)
    return _ratio(total, valid.sum(axis=axis).astype(np.float64))


def _interval(samples: _FloatArray | None) -> tuple[float | None, float | None]:
    """95% percentile interval of bootstrap samples, ignoring undefined resamples."""
    if samples is None:
        return None, None
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return None, None
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def _estimate(value: float | None, samples: _FloatArray | None, n: int) -> Estimate:
    value = _finite(value)
    if value is None:
        return Estimate(value=None, n=n)
    low, high = _interval(samples)
    return Estimate(value=value, low=low, high=high, n=n)


def _confusion_stats(
    counts: npt.NDArray[np.int64],
) -> dict[str, _FloatArray]:
    """Per-class and headline metrics from (..., k, k+1) confusion counts, vectorised.

    The same definitions as scikit-learn's functions (checked by the tests): unparsed
    answers are false negatives of their class and never a class of their own.
    """
    c = counts.astype(np.float64)
    k = c.shape[-2]
    n = c.sum(axis=(-2, -1))
    tp = np.diagonal(c[..., :k], axis1=-2, axis2=-1)
    support = c.sum(axis=-1)
    predicted = c[..., :k].sum(axis=-2)
    fn = support - tp
    fp = predicted - tp
    tn = n[..., None] - tp - fn - fp
    recall = _ratio(tp, support)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    total_support = support.sum(axis=-1)
    weighted = _ratio(np.where(np.isnan(f1), 0.0, f1 * support).sum(axis=-1), total_support)
    accuracy = _ratio(tp.sum(axis=-1), n)
    # Cohen's kappa over labels + "unparsed/error": chance agreement from the margins.
    row = support
    col = c.sum(axis=-2)
    expected = _ratio((row * col[..., :k]).sum(axis=-1), n * n)
    kappa = _ratio(accuracy - expected, 1.0 - expected)
    kappa = np.where(np.isclose(expected, 1.0), np.nan, kappa)
    return {
        "accuracy": accuracy,
        "balanced_accuracy": _nanmean(recall, axis=-1),
        "macro_f1": _nanmean(f1, axis=-1),
        "weighted_f1": weighted,
        "kappa": kappa,
        "sensitivity": recall,
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, predicted),
        "npv": _ratio(tn, tn + fn),
        "f1": f1,
    }


def _headline(
    *,
    rows: _Rows,
    truth_rows: _Rows,
    codes: _Codes,
    tensors: npt.NDArray[np.int64] | None,
    boot: _Resamples | None,
    seed: np.random.SeedSequence,
    n_bootstrap: int,
) -> dict[str, Estimate]:
    n = codes.n
    samples = _confusion_stats(tensors) if tensors is not None else {}
    points: dict[str, float | None] = dict.fromkeys(
        ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "kappa")
    )
    if n:
        from sklearn.metrics import (
            accuracy_score,
            balanced_accuracy_score,
            cohen_kappa_score,
            f1_score,
        )

        labels = list(codes.labels)
        with warnings.catch_warnings():
            # Warnings about classes without support or predictions: those classes are
            # handled explicitly (undefined, left out of the means), not silenced by accident.
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            points["accuracy"] = float(accuracy_score(codes.y_true, codes.y_pred))
            points["balanced_accuracy"] = float(balanced_accuracy_score(codes.y_true, codes.y_pred))
            for average in ("macro", "weighted"):
                points[f"{average}_f1"] = float(
                    f1_score(
                        codes.y_true,
                        codes.y_pred,
                        labels=labels,
                        average=average,
                        zero_division=np.nan,
                    )
                )
            points["kappa"] = float(
                cohen_kappa_score(codes.y_true, codes.y_pred, labels=list(codes.columns))
            )
    headline = {
        name: _estimate(points[name], samples.get(name), n)
        for name in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "kappa")
    }

    parsed_all = rows.parsed.astype(np.float64)
    coverage_samples = None
    if rows.n and n_bootstrap:
        coverage_boot = _Resamples.of(rows.n, n_bootstrap, seed.spawn(2)[1])
        if coverage_boot is not None:
            coverage_samples = coverage_boot.map(lambda chunk: parsed_all[chunk].mean(axis=1))
    headline["coverage"] = _estimate(
        float(parsed_all.mean()) if rows.n else None, coverage_samples, rows.n
    )

    correct = (codes.t == codes.p).astype(np.float64)
    parsed_truth = truth_rows.parsed.astype(np.float64)
    n_parsed_truth = int(parsed_truth.sum())
    acc_parsed = float(correct.sum() / n_parsed_truth) if n_parsed_truth else None
    acc_parsed_samples = None
    if boot is not None:
        sums = boot.map(
            lambda chunk: np.stack(
                [correct[chunk].sum(axis=1), parsed_truth[chunk].sum(axis=1)], axis=-1
            )
        )
        acc_parsed_samples = _ratio(sums[:, 0], sums[:, 1])
    headline["accuracy_parsed"] = _estimate(acc_parsed, acc_parsed_samples, n_parsed_truth)
    return headline


def _per_class(codes: _Codes, tensors: npt.NDArray[np.int64] | None) -> tuple[ClassMetrics, ...]:
    counts = np.array(codes.confusion().counts, dtype=np.int64).reshape(codes.k, codes.kc)
    point = _confusion_stats(counts)
    samples = _confusion_stats(tensors) if tensors is not None else None
    f1_sklearn: list[float] = []
    if codes.n:
        from sklearn.metrics import f1_score

        f1_sklearn = [
            float(v)
            for v in f1_score(
                codes.y_true,
                codes.y_pred,
                labels=list(codes.labels),
                average=None,
                zero_division=np.nan,
            )
        ]
    n = int(counts.sum())
    result = []
    for i, label in enumerate(codes.labels):
        tp = int(counts[i, i])
        support = int(counts[i].sum())
        predicted = int(counts[:, i].sum())
        fn, fp = support - tp, predicted - tp
        tn = n - tp - fn - fp

        def ci(name: str, i: int = i) -> tuple[float, float] | None:
            return None if samples is None else _pair(_interval(samples[name][:, i]))

        result.append(
            ClassMetrics(
                label=label,
                support=support,
                predicted=predicted,
                tp=tp,
                fp=fp,
                fn=fn,
                tn=tn,
                sensitivity=_finite(point["sensitivity"][i]),
                specificity=_finite(point["specificity"][i]),
                ppv=tp / predicted if predicted else None,
                npv=tn / (tn + fn) if tn + fn else None,
                f1=_finite(f1_sklearn[i]) if f1_sklearn else None,
                sensitivity_ci=ci("sensitivity") if support else None,
                specificity_ci=ci("specificity") if n - support else None,
                ppv_ci=ci("ppv") if predicted else None,
                npv_ci=ci("npv") if tn + fn else None,
                f1_ci=ci("f1") if support or predicted else None,
            )
        )
    return tuple(result)


def _binary_view(
    rows: _Rows, labels: tuple[str, ...], negative: str, boot: _Resamples | None
) -> BinaryView:
    truth_pos = np.array([t != negative for t in rows.truth], dtype=bool)
    parsed = rows.parsed
    call_pos = np.array([lab is not None and lab != negative for lab in rows.label], dtype=bool)
    call_neg = np.array([lab == negative for lab in rows.label], dtype=bool)
    # Unparsed: wrong either way (a missed positive or a false alarm), never a free pass.
    hit = np.where(truth_pos, call_pos, call_neg)
    tp = int((truth_pos & hit).sum())
    fn = int((truth_pos & ~hit).sum())
    tn = int((~truth_pos & hit).sum())
    fp = int((~truth_pos & ~hit).sum())
    n_pos, n_neg = tp + fn, tn + fp

    sens_samples = spec_samples = ppv_samples = npv_samples = None
    if boot is not None:
        # 2·truth + hit: 0 FP, 1 TN, 2 FN, 3 TP; counted per resample.
        cell = 2 * truth_pos.astype(np.int64) + hit.astype(np.int64)

        def counts(chunk: _IntArray) -> _IntArray:
            b = chunk.shape[0]
            offsets = (np.arange(b, dtype=np.int64) * 4)[:, None]
            return np.bincount((cell[chunk] + offsets).ravel(), minlength=4 * b).reshape(b, 4)

        c = boot.map(counts).astype(np.float64)
        fp_b, tn_b, fn_b, tp_b = c[:, 0], c[:, 1], c[:, 2], c[:, 3]
        sens_samples = _ratio(tp_b, tp_b + fn_b)
        spec_samples = _ratio(tn_b, tn_b + fp_b)
        ppv_samples = _ratio(tp_b, tp_b + fp_b)
        npv_samples = _ratio(tn_b, tn_b + fn_b)
    return BinaryView(
        negative_label=negative,
        positive_labels=tuple(label for label in labels if label != negative),
        n=len(rows.truth),
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        unparsed=int((~parsed).sum()),
        sensitivity=_estimate(tp / n_pos if n_pos else None, sens_samples, n_pos),
        specificity=_estimate(tn / n_neg if n_neg else None, spec_samples, n_neg),
        ppv=tp / (tp + fp) if tp + fp else None,
        npv=tn / (tn + fn) if tn + fn else None,
        ppv_ci=_pair(_interval(ppv_samples)) if tp + fp else None,
        npv_ci=_pair(_interval(npv_samples)) if tn + fn else None,
    )


def _pair(interval: tuple[float | None, float | None]) -> tuple[float, float] | None:
    low, high = interval
    return (low, high) if low is not None and high is not None else None


def score_matrix(
    scores: Sequence[Mapping[str, float] | None], labels: Sequence[str]
) -> tuple[_FloatArray, npt.NDArray[np.bool_]]:
    """Per-record probabilities over `labels` from raw label scores.

    Log-probabilities (any value below 0 or above 1) are soft-maxed; probabilities are
    renormalised to sum to one over the labels. A label without a score gets 0.

    Returns:
        The `(n, len(labels))` probability matrix, and which rows had scores.
    """
    probs = np.zeros((len(scores), len(labels)), dtype=np.float64)
    has = np.zeros(len(scores), dtype=bool)
    for i, record_scores in enumerate(scores):
        if not record_scores:
            continue
        raw = np.array([record_scores.get(label, np.nan) for label in labels], dtype=np.float64)
        known = np.isfinite(raw)
        if not known.any():
            continue
        if (raw[known] < 0).any() or (raw[known] > 1).any():
            shifted = np.where(known, np.exp(raw - raw[known].max()), 0.0)
        else:
            shifted = np.where(known, raw, 0.0)
        total = shifted.sum()
        if total > 0:
            probs[i] = shifted / total
            has[i] = True
    return probs, has


def _score_metrics(
    rows: _Rows, labels: tuple[str, ...], n_bins: int
) -> tuple[dict[str, float | None] | None, float | None, Calibration | None]:
    probs, has = score_matrix(rows.scores, labels)
    if not has.any():
        return None, None, None
    from sklearn.metrics import roc_auc_score

    index = {label: i for i, label in enumerate(labels)}
    truth = np.array([index[t] for t in rows.truth], dtype=np.int64)[has]
    probs = probs[has]
    roc: dict[str, float | None] = {}
    for i, label in enumerate(labels):
        positive = truth == i
        if positive.all() or not positive.any():
            roc[label] = None  # AUC needs both positives and negatives
            continue
        roc[label] = float(roc_auc_score(positive, probs[:, i]))
    defined = [v for v in roc.values() if v is not None]
    macro = float(np.mean(defined)) if defined else None

    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == truth
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    bins = []
    ece = 0.0
    for b in range(n_bins):
        in_bin = which == b
        count = int(in_bin.sum())
        conf = float(confidence[in_bin].mean()) if count else None
        acc = float(correct[in_bin].mean()) if count else None
        if conf is not None and acc is not None:
            ece += count / len(truth) * abs(acc - conf)
        bins.append(
            CalibrationBin(
                lower=float(edges[b]),
                upper=float(edges[b + 1]),
                count=count,
                confidence=conf,
                accuracy=acc,
            )
        )
    return roc, macro, Calibration(n=len(truth), ece=float(ece), bins=tuple(bins))


def _auc_intervals(
    rows: _Rows, labels: tuple[str, ...], n_bootstrap: int, seed: np.random.SeedSequence
) -> tuple[dict[str, tuple[float, float] | None] | None, tuple[float, float] | None]:
    """95% bootstrap intervals of each label's one-vs-rest ROC AUC and of their mean.

    The records with scores (the AUC's own population) are resampled. A resample's AUC is the
    Mann-Whitney statistic, ties counted half as in `roc_auc_score`, from how many positive
    and negative records it holds at each distinct score; a label without positives or
    negatives in a resample is left out of that resample's macro mean, as in the estimate.
    """
    probs, has = score_matrix(rows.scores, labels)
    boot = _Resamples.of(int(has.sum()), n_bootstrap, seed)
    if boot is None:
        return None, None
    index = {label: i for i, label in enumerate(labels)}
    truth = np.array([index[t] for t in rows.truth], dtype=np.int64)[has]
    probs = probs[has]
    # Per label: 2 · (rank of the record's distinct score) + (1 if positive), and the ranks.
    cells: list[tuple[_IntArray, int]] = []
    for i in range(len(labels)):
        ranks = np.unique(probs[:, i], return_inverse=True)[1].astype(np.int64).ravel()
        cells.append((2 * ranks + (truth == i), int(ranks.max()) + 1))

    def aucs(chunk: _IntArray) -> _FloatArray:
        b = chunk.shape[0]
        out = np.empty((b, len(labels)), dtype=np.float64)
        for i, (cell, n_ranks) in enumerate(cells):
            size = 2 * n_ranks
            offsets = (np.arange(b, dtype=np.int64) * size)[:, None]
            flat = np.bincount((cell[chunk] + offsets).ravel(), minlength=b * size)
            counts = flat.reshape(b, n_ranks, 2)
            neg, pos = counts[..., 0], counts[..., 1]
            below = np.cumsum(neg, axis=1) - neg  # negatives scored strictly lower
            # Twice the wins, in integers: a tie with a negative is half a win.
            wins2 = (pos * (2 * below + neg)).sum(axis=1)
            pairs = pos.sum(axis=1) * neg.sum(axis=1)
            out[:, i] = _ratio(wins2 / 2.0, pairs.astype(np.float64))
        return out

    samples = boot.map(aucs)
    per_label: dict[str, tuple[float, float] | None] = {}
    for i, label in enumerate(labels):
        positive = truth == i
        defined = bool(positive.any() and not positive.all())
        per_label[label] = _pair(_interval(samples[:, i])) if defined else None
    return per_label, _pair(_interval(_nanmean(samples, axis=1)))


# -- compare ---------------------------------------------------------------------------------


def compare(
    run_a: pd.DataFrame | str | Path,
    run_b: pd.DataFrame | str | Path,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> Comparison:
    """Compare two runs on the records they share, pairwise.

    Each record is right or wrong in each run (an unparsed answer is wrong). The accuracy
    difference (B - A) gets a paired bootstrap interval; McNemar's exact test asks whether
    the records only one run got right split evenly (`scipy.stats.binomtest` on the
    discordant pairs).

    Args:
        run_a: Predictions or a run directory (the baseline).
        run_b: Predictions or a run directory (the challenger).
        n_bootstrap: Resamples for the interval of the difference.
        seed: Seed of the resampling.

    Returns:
        A `Comparison`, with the table of records where the runs disagree.

    Raises:
        ValueError: The runs share no record, or give one record different ground truths.

    Example:
        ```python
        result = compare("runs/cot", "runs/direct")
        print(result.difference.format(), result.mcnemar_p)
        ```
    """
    frame_a, manifest_a = _load(run_a)
    frame_b, manifest_b = _load(run_b)
    a = _Rows.from_frame(frame_a)
    b = _Rows.from_frame(frame_b)
    pos_a = {rid: i for i, rid in enumerate(a.record_ids)}
    pos_b = {rid: i for i, rid in enumerate(b.record_ids)}
    shared = [rid for rid in a.record_ids if rid in pos_b]
    if not shared:
        raise ValueError("the two runs share no record id: nothing to compare")

    truth: list[str | None] = []
    for rid in shared:
        ta, tb = a.truth_raw[pos_a[rid]], b.truth_raw[pos_b[rid]]
        if ta is not None and tb is not None and ta != tb:
            raise ValueError(
                f"record {rid} has different ground truths in the two runs ({ta} vs {tb})"
            )
        truth.append(ta if ta is not None else tb)

    disagreements: list[Disagreement] = []
    right_a: list[bool] = []
    right_b: list[bool] = []
    for rid, t in zip(shared, truth, strict=True):
        ia, ib = pos_a[rid], pos_b[rid]
        la, lb = a.label[ia], b.label[ib]
        ca = None if t is None else la == t
        cb = None if t is None else lb == t
        if t is not None:
            right_a.append(bool(ca))
            right_b.append(bool(cb))
        if la != lb or a.status[ia] != b.status[ib]:
            disagreements.append(
                Disagreement(
                    record_id=rid,
                    truth=t,
                    label_a=la,
                    label_b=lb,
                    status_a=a.status[ia],
                    status_b=b.status[ib],
                    correct_a=ca,
                    correct_b=cb,
                )
            )

    ra = np.array(right_a, dtype=np.float64)
    rb = np.array(right_b, dtype=np.float64)
    n = len(ra)
    a_only = int(((ra == 1) & (rb == 0)).sum())
    b_only = int(((ra == 0) & (rb == 1)).sum())
    p_value: float | None = None
    if n:
        from scipy.stats import binomtest

        discordant = a_only + b_only
        p_value = (
            float(binomtest(b_only, discordant, 0.5, alternative="two-sided").pvalue)
            if discordant
            else 1.0
        )
    boot = _Resamples.of(n, n_bootstrap, np.random.SeedSequence(seed))
    diff_samples = (
        boot.map(lambda chunk: rb[chunk].mean(axis=1) - ra[chunk].mean(axis=1))
        if boot is not None
        else None
    )
    return Comparison(
        n_paired=len(shared),
        n_with_truth=n,
        unpaired_a=len(a.record_ids) - len(shared),
        unpaired_b=sum(1 for rid in b.record_ids if rid not in pos_a),
        accuracy_a=float(ra.mean()) if n else None,
        accuracy_b=float(rb.mean()) if n else None,
        difference=_estimate(float(rb.mean() - ra.mean()) if n else None, diff_samples, n),
        a_only_correct=a_only,
        b_only_correct=b_only,
        mcnemar_p=p_value,
        disagreements=tuple(disagreements),
        model_a=manifest_a.model_id if manifest_a else _model_of(frame_a),
        model_b=manifest_b.model_id if manifest_b else _model_of(frame_b),
        run_a=None if isinstance(run_a, pd.DataFrame) else str(run_a),
        run_b=None if isinstance(run_b, pd.DataFrame) else str(run_b),
        prompt_a=manifest_a.prompt_version if manifest_a else None,
        prompt_b=manifest_b.prompt_version if manifest_b else None,
    )


def _model_of(frame: pd.DataFrame) -> str | None:
    if "model_id" not in frame.columns or frame.empty:
        return None
    return _clean(frame["model_id"].iloc[0])
