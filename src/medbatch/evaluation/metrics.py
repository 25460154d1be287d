"""Confusion-matrix metrics: headline, per-class (one vs rest) and the screening view.

Point estimates from scikit-learn; bootstrap samples from the same definitions, vectorised.
Must not import `core`, `scores` or `comparison`.
"""

from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt

from medbatch.evaluation.bootstrap import (
    _estimate,
    _finite,
    _FloatArray,
    _IntArray,
    _interval,
    _nanmean,
    _pair,
    _ratio,
    _Resamples,
)
from medbatch.evaluation.models import (
    UNPARSED,
    BinaryView,
    ClassMetrics,
    ConfusionMatrix,
    Estimate,
)
from medbatch.evaluation.rows import _Rows


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
