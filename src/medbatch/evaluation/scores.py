"""Metrics of label scores: ROC AUC (with bootstrap intervals), ROC points, calibration.

Must not import `core`, `metrics` or `comparison`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from medbatch.evaluation.bootstrap import (
    _FloatArray,
    _IntArray,
    _interval,
    _nanmean,
    _pair,
    _ratio,
    _Resamples,
)
from medbatch.evaluation.models import Calibration, CalibrationBin, RocCurve
from medbatch.evaluation.rows import _Rows

__all__ = ["score_matrix"]


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
) -> tuple[
    dict[str, float | None] | None,
    float | None,
    tuple[RocCurve, ...] | None,
    Calibration | None,
]:
    """Per-label ROC AUC, their mean, the ROC curves and the calibration table."""
    probs, has = score_matrix(rows.scores, labels)
    if not has.any():
        return None, None, None, None
    from sklearn.metrics import roc_auc_score, roc_curve

    index = {label: i for i, label in enumerate(labels)}
    truth = np.array([index[t] for t in rows.truth], dtype=np.int64)[has]
    probs = probs[has]
    roc: dict[str, float | None] = {}
    curves: list[RocCurve] = []
    for i, label in enumerate(labels):
        positive = truth == i
        if positive.all() or not positive.any():
            roc[label] = None  # AUC needs both positives and negatives
            continue
        roc[label] = float(roc_auc_score(positive, probs[:, i]))
        fpr, tpr, _ = roc_curve(positive, probs[:, i])
        curves.append(RocCurve(label=label, fpr=tuple(map(float, fpr)), tpr=tuple(map(float, tpr))))
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
    calibration = Calibration(n=len(truth), ece=float(ece), bins=tuple(bins))
    return roc, macro, tuple(curves), calibration


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
