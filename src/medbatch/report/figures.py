"""The report's plots, drawn with matplotlib from an `Evaluation` alone.

Each figure is a PNG (written to `figures/` and embedded in the page). Reads only public
fields of `medbatch.evaluation.Evaluation`; must not import the page builder or templates.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

from medbatch.evaluation import UNPARSED, ClassMetrics, Evaluation

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as MplFigure

__all__ = ["Figure", "build_figures"]

_PALETTE = ("#2563eb", "#16a34a", "#d97706", "#9333ea", "#0891b2", "#dc2626", "#4b5563")
_DPI = 110


@dataclass(frozen=True)
class Figure:
    """One plot: its file name, title, PNG bytes and alt text."""

    filename: str
    title: str
    png: bytes
    alt: str

    @property
    def base64(self) -> str:
        """The PNG as base64, for a `data:` URI."""
        return base64.b64encode(self.png).decode("ascii")


def build_figures(ev: Evaluation) -> dict[str, Figure]:
    """Every plot the evaluation supports, by name (ROC and calibration need label scores)."""
    figures = {
        "confusion": _confusion_figure(ev),
        "per_class": _per_class_figure(ev),
        "distribution": _distribution_figure(ev),
    }
    if ev.roc_curves is not None:
        figures["roc"] = _roc_figure(ev)
    if ev.calibration is not None:
        figures["calibration"] = _calibration_figure(ev)
    return figures


def _tick(label: str) -> str:
    """Long label names broken at underscores, so axes stay readable."""
    return label.replace("_", "_\n") if len(label) > 12 else label


def _new_figure(width: float, height: float) -> tuple[MplFigure, Axes]:
    # Figure objects, not pyplot: no global state, safe in threads and servers.
    from matplotlib.figure import Figure as MplFigure

    figure = MplFigure(figsize=(width, height), layout="constrained")
    axes = figure.subplots()
    axes.spines[["top", "right"]].set_visible(False)
    return figure, axes


def _png(figure: MplFigure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return buffer.getvalue()


def _confusion_figure(ev: Evaluation) -> Figure:
    import numpy as np

    counts = np.array(ev.confusion.counts, dtype=float).reshape(len(ev.labels), -1)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    k = len(ev.labels)
    figure, axes = _new_figure(max(6.4, 1.05 * (k + 1) + 1.6), 0.75 * k + 1.6)
    axes.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i in range(k):
        for j in range(k + 1):
            dark = share[i, j] > 0.55
            color = "white" if dark else ("#b45309" if j == k and counts[i, j] else "#111827")
            text = f"{int(counts[i, j])}\n{share[i, j]:.0%}" if rows[i, 0] else "0"
            axes.text(j, i, text, ha="center", va="center", color=color, fontsize=9)
    axes.axvline(k - 0.5, color="#9ca3af", linestyle="--", linewidth=1)
    axes.set_xticks(range(k + 1), [_tick(c) for c in ev.confusion.columns], fontsize=8)
    axes.set_yticks(range(k), [_tick(label) for label in ev.labels], fontsize=8)
    axes.set_xlabel("predicted (last column: no parsed label)")
    axes.set_ylabel("ground truth")
    axes.set_title("Confusion matrix (count, share of the true class)", fontsize=10)
    axes.spines[["top", "right", "left", "bottom"]].set_visible(False)
    return Figure(
        "confusion_matrix.png",
        "Confusion matrix",
        _png(figure),
        "Confusion matrix: ground truth rows against predicted columns",
    )


def _per_class_figure(ev: Evaluation) -> Figure:
    import numpy as np

    metrics = (
        ("sensitivity", "sensitivity_ci"),
        ("specificity", "specificity_ci"),
        ("ppv", "ppv"),
        ("npv", "npv"),
        ("f1", "f1_ci"),
    )
    k = len(ev.labels)
    figure, axes = _new_figure(max(6.4, 1.6 * k + 1.5), 0.75 * k + 1.6)
    width = 0.8 / len(metrics)
    x = np.arange(k)
    for m, (name, ci_name) in enumerate(metrics):
        values = [getattr(c, name) for c in ev.per_class]
        heights = [v if v is not None else 0.0 for v in values]
        positions = x - 0.4 + width * (m + 0.5)
        axes.bar(
            positions,
            heights,
            width,
            label=name.upper() if len(name) == 3 else name,
            color=_PALETTE[m],
        )
        if ci_name is not None:
            for pos, cls, value in zip(positions, ev.per_class, values, strict=True):
                ci = _wilson(cls, name) if name in ("ppv", "npv") else getattr(cls, ci_name)
                if ci is not None and value is not None:
                    axes.errorbar(
                        pos,
                        value,
                        yerr=[[value - ci[0]], [ci[1] - value]],
                        color="#111827",
                        capsize=2,
                        linewidth=0.8,
                    )
        for pos, value in zip(positions, values, strict=True):
            if value is None:
                axes.text(pos, 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize=7)
            elif value == 0:
                # A zero-height bar is invisible: mark it, so it is not read as missing.
                axes.plot([pos - width / 2, pos + width / 2], [0, 0], color=_PALETTE[m], lw=2.5)
                axes.text(pos, 0.015, "0", ha="center", va="bottom", fontsize=7)
    axes.set_xticks(x, [f"{_tick(c.label)}\n(n={c.support})" for c in ev.per_class], fontsize=8)
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("one vs rest")
    axes.set_title(
        "Per-class metrics, one vs rest (whiskers: 95% CI; bootstrap, Wilson for PPV/NPV)",
        fontsize=10,
    )
    axes.legend(
        ncols=len(metrics),
        fontsize=9,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),
        frameon=False,
        handlelength=1.2,
    )
    return Figure(
        "per_class.png",
        "Per-class metrics",
        _png(figure),
        "Per-class sensitivity, specificity, PPV, NPV and F1 with confidence intervals",
    )


def _wilson(metrics: ClassMetrics, name: str) -> tuple[float, float] | None:
    """95% Wilson interval of PPV (TP of TP + FP) or NPV (TN of TN + FN) from the counts."""
    from scipy.stats import binomtest

    hits, total = (
        (metrics.tp, metrics.tp + metrics.fp)
        if name == "ppv"
        else (metrics.tn, metrics.tn + metrics.fn)
    )
    if total <= 0:
        return None
    interval = binomtest(int(hits), int(total)).proportion_ci(0.95, method="wilson")
    return float(interval.low), float(interval.high)


def _distribution_figure(ev: Evaluation) -> Figure:
    import numpy as np

    counts = np.array(ev.confusion.counts, dtype=int).reshape(len(ev.labels), -1)
    truth = counts.sum(axis=1)
    predicted = counts.sum(axis=0)
    names = [*ev.labels, UNPARSED]
    truth_all = [*truth.tolist(), 0]
    figure, axes = _new_figure(6.4, 0.55 * len(names) + 1.3)
    y = np.arange(len(names))
    axes.barh(y - 0.2, truth_all, 0.4, label="ground truth", color="#9ca3af")
    axes.barh(y + 0.2, predicted, 0.4, label="predicted", color=_PALETTE[0])
    for yi, (t, p) in enumerate(zip(truth_all, predicted, strict=True)):
        axes.text(t, yi - 0.2, f" {t}", va="center", fontsize=8)
        axes.text(p, yi + 0.2, f" {p}", va="center", fontsize=8)
    axes.set_yticks(y, [n.replace("_", " ") for n in names], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("records (with a ground truth)")
    axes.set_title("Predicted vs true label distribution", fontsize=10)
    axes.legend(fontsize=8, frameon=False, loc="lower right")
    return Figure(
        "label_distribution.png",
        "Label distribution",
        _png(figure),
        "Label counts: ground truth against predictions",
    )


def _roc_figure(ev: Evaluation) -> Figure:
    figure, axes = _new_figure(7.4, 4.2)
    axes.plot([0, 1], [0, 1], color="#9ca3af", linestyle="--", linewidth=1)
    for curve in ev.roc_curves or ():
        auc = (ev.roc_auc or {}).get(curve.label)
        if auc is None:
            continue
        colour = _PALETTE[ev.labels.index(curve.label) % len(_PALETTE)]
        axes.plot(
            curve.fpr,
            curve.tpr,
            color=colour,
            linewidth=1.6,
            label=f"{curve.label} (AUC {auc:.2f})",
        )
    axes.set_xlabel("false positive rate (1 − specificity)")
    axes.set_ylabel("true positive rate (sensitivity)")
    axes.set_title("ROC, one vs rest, from label scores", fontsize=10)
    axes.set_aspect("equal")
    # Beside the plot, not on it: the curves of a weak model fill the lower right.
    axes.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return Figure("roc.png", "ROC curves", _png(figure), "One-vs-rest ROC curves per label")


def _calibration_figure(ev: Evaluation) -> Figure:
    calibration = ev.calibration
    assert calibration is not None  # only called when scores exist
    figure, axes = _new_figure(5.2, 4.2)
    axes.plot(
        [0, 1], [0, 1], color="#9ca3af", linestyle="--", linewidth=1, label="perfect calibration"
    )
    filled = [b for b in calibration.bins if b.count]
    width = calibration.bins[0].upper - calibration.bins[0].lower if calibration.bins else 0.1
    axes.bar(
        [(b.lower + b.upper) / 2 for b in filled],
        [b.accuracy or 0.0 for b in filled],
        width * 0.9,
        color=_PALETTE[0],
        alpha=0.75,
        label="accuracy in bin",
    )
    for b in filled:
        axes.text(
            (b.lower + b.upper) / 2,
            (b.accuracy or 0.0) + 0.02,
            f"n={b.count}",
            ha="center",
            fontsize=7,
        )
    ece = f"{calibration.ece:.3f}" if calibration.ece is not None else "–"
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.08)
    axes.set_xlabel("confidence (top label score)")
    axes.set_ylabel("share correct")
    axes.set_title(f"Calibration (ECE {ece}, n={calibration.n})", fontsize=10)
    axes.legend(fontsize=7, frameon=False, loc="upper left")
    return Figure(
        "calibration.png", "Calibration", _png(figure), "Reliability diagram of label scores"
    )
