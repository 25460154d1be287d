"""The result models of `medbatch.evaluation`: what `evaluate` and `compare` return.

Plain pydantic models (frozen, `extra="forbid"`) that serialise to `metrics.json`. Must not
import the computing modules (`core`, `metrics`, `scores`, `bootstrap`, `comparison`): any
reader of `metrics.json`, the report included, needs only these.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from medbatch.evaluation.guardrails import Guardrails

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
    "LatencySummary",
    "RocCurve",
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
        interval = self.interval(digits)
        return f"{text} ({interval})" if interval is not None else text

    def interval(self, digits: int = 3) -> str | None:
        """`0.701–0.905`, or None without an interval."""
        if self.low is None or self.high is None:
            return None
        return f"{self.low:.{digits}f}–{self.high:.{digits}f}"


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


class RocCurve(BaseModel):
    """One label's one-vs-rest ROC curve, the points of `sklearn.metrics.roc_curve`.

    Attributes:
        label: The label scored against the rest.
        fpr: False positive rate at each threshold, ascending.
        tpr: True positive rate at each threshold.
    """

    model_config = _MODEL

    label: str
    fpr: tuple[float, ...]
    tpr: tuple[float, ...]


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
        roc_curves: The ROC curve of each label with a defined AUC, when label scores exist.
        calibration: The calibration table (with its bins), when label scores exist.
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
    roc_curves: tuple[RocCurve, ...] | None = None
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
