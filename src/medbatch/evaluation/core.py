"""`evaluate`: one run's predictions to an `Evaluation`.

Puts the pieces together (rows, metrics, scores, guardrails); the only module that imports
all of them. Must not import `comparison` or anything of `medbatch.report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from medbatch.evaluation.bootstrap import _Resamples
from medbatch.evaluation.guardrails import guardrail_summary
from medbatch.evaluation.metrics import _binary_view, _Codes, _headline, _per_class
from medbatch.evaluation.models import Evaluation
from medbatch.evaluation.rows import _label_order, _load, _Rows, _run_labels
from medbatch.evaluation.scores import _auc_intervals, _score_metrics

if TYPE_CHECKING:
    from medbatch.store import RunManifest

__all__ = ["evaluate"]


def evaluate(
    source: pd.DataFrame | str | Path,
    labels: Sequence[str] | None = None,
    negative_label: str | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    *,
    dedupe: bool = False,
    calibration_bins: int = 10,
    manifest: RunManifest | None = None,
) -> Evaluation:
    """Evaluate a run: confusion matrix, per-class and headline metrics with 95% CIs.

    Args:
        source: A predictions DataFrame (`RunResult.predictions`) or a run directory.
        labels: The classes in display order. Default: the run's task labels (from the
            manifest), else the labels seen in truth and predictions. Labels seen but not
            listed are appended (and noted), never dropped.
        negative_label: The label that counts as negative in the screening view. Default:
            the negative label the run's manifest records (the task's `LabelSet.negative`),
            else no screening view.
        n_bootstrap: Bootstrap resamples for the confidence intervals; 0 for none.
        seed: Seed of the resampling: the same seed gives the same intervals.
        dedupe: Count each image content (`image_sha256`) once, keeping its first record.
        calibration_bins: Equal-width bins of the calibration table.
        manifest: The run's manifest, for a DataFrame already loaded from a run directory
            (its labels, negative label and status then apply as for the directory).

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
    frame, loaded = _load(source)
    manifest = manifest if manifest is not None else loaded
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

    run_labels, run_negative = _run_labels(manifest, notes)
    label_order = _label_order(labels or run_labels, rows, notes)
    if negative_label is None:
        negative_label = run_negative
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
    roc_auc, macro_auc, roc_curves, calibration = _score_metrics(
        truth_rows, label_order, calibration_bins
    )
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
        roc_curves=roc_curves,
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
