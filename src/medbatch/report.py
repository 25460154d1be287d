"""A self-contained HTML report of one run: what ran, how well, and how sure we are.

```
run_dir/
├── manifest.json, predictions.parquet     (written by the run)
├── report.html          ONE file: inline CSS, plots as inline PNG, no scripts, no network
├── metrics.json         the `Evaluation` (`medbatch evaluate --json` prints the same)
└── figures/             the plots as PNG files (confusion_matrix.png, per_class.png, ...)
```

Everything shown is escaped with `html.escape`; runner settings whose names look like
secrets are redacted; record metadata is never dumped (it may hold identifiers), only the
image path used for a thumbnail.

Example:
    ```python
    from medbatch.report import write_report
    path = write_report("runs/ecg")        # runs/ecg/report.html
    ```
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from medbatch.evaluation import (
    HEADLINE_METRICS,
    UNPARSED,
    Evaluation,
    evaluate,
    score_matrix,
)
from medbatch.records import AnswerStatus
from medbatch.store import (
    RunManifest,
    RunStore,
    atomic_write_bytes,
    atomic_write_text,
    load_predictions,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["RANDOM_MODEL_MARKER", "is_illustrative", "is_random_model", "write_report"]

RANDOM_MODEL_MARKER = "medbatch_tiny_vlm.json"
"""File that `medbatch.testing.tiny_vlm` writes into the random-weight model's folder."""

METRIC_NAMES: dict[str, str] = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "macro_f1": "Macro F1",
    "weighted_f1": "Weighted F1",
    "kappa": "Cohen's kappa",
    "coverage": "Coverage",
    "accuracy_parsed": "Accuracy (parsed only)",
}
"""Display names of the headline metrics."""

_SECRET_KEY = re.compile(r"key|token|secret|password|passwd|credential|auth|cookie", re.I)
_IMAGE_KEYS = ("image_path", "path", "source_path", "file")
_PALETTE = ("#2563eb", "#16a34a", "#d97706", "#9333ea", "#0891b2", "#dc2626", "#4b5563")
_DPI = 110
# Longest side of an embedded example image: an ECG page's leads stay legible at this size
# (~150 kB a page as JPEG), and the report stays one file.
_FULL_SIDE = 1400


# -- public API ------------------------------------------------------------------------------


def is_random_model(manifest: RunManifest | None) -> bool:
    """Whether a run used a random-weight test model (its answers mean nothing).

    True when the manifest says so (`random_weights: true`, as `medbatch demo` and the
    `medbatch/tiny-gemma3` runner record), or the model folder holds the marker that
    `medbatch.testing.tiny_vlm` writes.
    """
    if manifest is None:
        return False
    extra = manifest.model_extra or {}
    demo = extra.get("demo")
    if extra.get("random_weights") or (isinstance(demo, Mapping) and demo.get("random_weights")):
        return True
    runner = manifest.runner if isinstance(manifest.runner, Mapping) else {}
    if runner.get("random_weights") or manifest.model_id == "medbatch/tiny-gemma3":
        return True
    try:
        return (Path(manifest.model_id) / RANDOM_MODEL_MARKER).is_file()
    except (OSError, ValueError):
        return False


def is_illustrative(manifest: RunManifest | None) -> bool:
    """Whether a run replayed the bundled illustrative answers (written, not generated).

    True when the manifest says so (`illustrative: true`, as `medbatch demo --replay`
    records) or its model id is `medbatch.datasets.sample.ILLUSTRATIVE_MODEL_ID`.
    """
    if manifest is None:
        return False
    from medbatch.datasets.sample import ILLUSTRATIVE_MODEL_ID

    extra = manifest.model_extra or {}
    return bool(extra.get("illustrative")) or manifest.model_id == ILLUSTRATIVE_MODEL_ID


def write_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    images_root: str | Path | None = None,
    evaluation: Evaluation | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    dedupe: bool = False,
    negative_label: str | None = None,
    examples_per_cell: int = 3,
) -> Path:
    """Write `report.html`, `metrics.json` and the plots (PNG) for a run directory.

    Args:
        run_dir: The run directory (`manifest.json` + predictions).
        out: The HTML file to write; default `run_dir/report.html`. `metrics.json` and
            `figures/` are written next to it.
        images_root: Folder the record ids are relative to (e.g. an `ImageFolderDataset`
            root), for the images in the gallery; default: the manifest's `images_root`
            (a relative one is relative to `run_dir`).
        evaluation: A precomputed evaluation; computed here when None.
        n_bootstrap: Bootstrap resamples for the intervals (when computing).
        seed: Seed of the resampling.
        dedupe: Count each image content once (when computing).
        negative_label: The screening view's negative label (default NORMAL when present).
        examples_per_cell: Example records shown per confusion-matrix cell.

    Returns:
        The path of the HTML report.

    Raises:
        RunStoreError: `run_dir` holds no predictions.
    """
    run_dir = Path(run_dir)
    frame = load_predictions(run_dir)
    manifest = RunStore(run_dir).read_manifest()
    if evaluation is None:
        evaluation = evaluate(
            run_dir,
            negative_label=negative_label,
            n_bootstrap=n_bootstrap,
            seed=seed,
            dedupe=dedupe,
        )
    target = Path(out) if out is not None else run_dir / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    # Atomic: a reader (or a kill) never sees half a file.
    atomic_write_text(target.parent / "metrics.json", evaluation.to_json() + "\n")

    root = images_root
    if root is None and manifest is not None:
        recorded = (manifest.model_extra or {}).get("images_root")
        # `medbatch run` records a root given as a relative path relative to the run dir.
        root = run_dir / recorded if isinstance(recorded, str) and recorded else None
    figures = _figures(evaluation, frame)
    figure_dir = target.parent / "figures"
    figure_dir.mkdir(exist_ok=True)
    for figure in figures.values():
        atomic_write_bytes(figure_dir / figure.filename, figure.png)

    page = _Page(
        evaluation=evaluation,
        frame=frame,
        manifest=manifest,
        figures=figures,
        images_root=Path(root) if root else None,
        examples_per_cell=examples_per_cell,
        run_name=run_dir.resolve().name,
    )
    atomic_write_text(target, page.render())
    return target


# -- figures ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Figure:
    filename: str
    title: str
    png: bytes
    alt: str

    def img(self) -> str:
        data = base64.b64encode(self.png).decode("ascii")
        return (
            f'<img class="plot" src="data:image/png;base64,{data}" alt="{html.escape(self.alt)}">'
        )


def _tick(label: str) -> str:
    """Long label names broken at underscores, so axes stay readable."""
    return label.replace("_", "_\n") if len(label) > 12 else label


def _new_figure(width: float, height: float) -> tuple[Figure, Axes]:
    # Figure objects, not pyplot: no global state, safe in threads and servers.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots()
    axes.spines[["top", "right"]].set_visible(False)
    return figure, axes


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return buffer.getvalue()


def _figures(ev: Evaluation, frame: pd.DataFrame) -> dict[str, _Figure]:
    figures = {
        "confusion": _confusion_figure(ev),
        "per_class": _per_class_figure(ev),
        "distribution": _distribution_figure(ev),
    }
    if ev.roc_auc is not None:
        figures["roc"] = _roc_figure(ev, frame)
    if ev.calibration is not None:
        figures["calibration"] = _calibration_figure(ev)
    return figures


def _confusion_figure(ev: Evaluation) -> _Figure:
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
    return _Figure(
        "confusion_matrix.png",
        "Confusion matrix",
        _png(figure),
        "Confusion matrix: ground truth rows against predicted columns",
    )


def _per_class_figure(ev: Evaluation) -> _Figure:
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
    return _Figure(
        "per_class.png",
        "Per-class metrics",
        _png(figure),
        "Per-class sensitivity, specificity, PPV, NPV and F1 with confidence intervals",
    )


def _wilson(metrics: Any, name: str) -> tuple[float, float] | None:
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


def _distribution_figure(ev: Evaluation) -> _Figure:
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
    return _Figure(
        "label_distribution.png",
        "Label distribution",
        _png(figure),
        "Label counts: ground truth against predictions",
    )


def _roc_figure(ev: Evaluation, frame: pd.DataFrame) -> _Figure:
    import numpy as np
    from sklearn.metrics import roc_curve

    from medbatch.evaluation import _Rows

    rows = _Rows.from_frame(frame)
    if ev.duplicates.deduped:
        rows = rows.first_per_content()
    rows = rows.with_truth()
    probs, has = score_matrix(rows.scores, ev.labels)
    truth = np.array(rows.truth)[has]
    probs = probs[has]
    figure, axes = _new_figure(7.4, 4.2)
    axes.plot([0, 1], [0, 1], color="#9ca3af", linestyle="--", linewidth=1)
    for i, label in enumerate(ev.labels):
        auc = (ev.roc_auc or {}).get(label)
        if auc is None:
            continue
        fpr, tpr, _ = roc_curve(truth == label, probs[:, i])
        axes.plot(
            fpr,
            tpr,
            color=_PALETTE[i % len(_PALETTE)],
            linewidth=1.6,
            label=f"{label} (AUC {auc:.2f})",
        )
    axes.set_xlabel("false positive rate (1 − specificity)")
    axes.set_ylabel("true positive rate (sensitivity)")
    axes.set_title("ROC, one vs rest, from label scores", fontsize=10)
    axes.set_aspect("equal")
    # Beside the plot, not on it: the curves of a weak model fill the lower right.
    axes.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return _Figure("roc.png", "ROC curves", _png(figure), "One-vs-rest ROC curves per label")


def _calibration_figure(ev: Evaluation) -> _Figure:
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
    return _Figure(
        "calibration.png", "Calibration", _png(figure), "Reliability diagram of label scores"
    )


# -- HTML ------------------------------------------------------------------------------------

_CSS = """
:root { --ink:#111827; --muted:#6b7280; --line:#e5e7eb; --bg:#f8fafc; --card:#fff;
        --accent:#2563eb; --warn:#b45309; --bad:#b91c1c; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
main { max-width:1180px; margin:0 auto; padding:24px 28px 48px; }
h1 { font-size:24px; margin:0 0 4px; }
h2 { font-size:18px; margin:32px 0 10px; padding-bottom:4px; border-bottom:1px solid var(--line); }
h3 { font-size:15px; margin:18px 0 8px; }
.sub { color:var(--muted); margin:0 0 14px; }
.notice { border-radius:8px; padding:10px 14px; margin:10px 0; border:1px solid; }
.notice.research { background:#fffbeb; border-color:#fcd34d; }
.notice.random { background:#fef2f2; border-color:#fca5a5; color:#7f1d1d; }
.notice.info { background:#eff6ff; border-color:#bfdbfe; }
.cards { display:grid; grid-template-columns:repeat(auto-fill,minmax(170px,1fr)); gap:12px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px;
        padding:12px 14px; }
.card .name { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.03em; }
.card .value { font-size:26px; font-weight:650; }
.card .ci { color:var(--muted); font-size:12px; }
.card.warn .value { color:var(--warn); }
.grid2 { display:grid; grid-template-columns:1fr 1fr; gap:16px; align-items:start; }
.panel { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:12px; }
img.plot { max-width:100%; height:auto; display:block; margin:0 auto; }
table { border-collapse:collapse; width:100%; background:var(--card); font-size:13px; }
th, td { padding:5px 9px; border-bottom:1px solid var(--line); text-align:left;
         vertical-align:top; }
th { background:#f1f5f9; font-weight:600; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
tr.zero td { color:var(--muted); }
tr.bad td:first-child { color:var(--bad); font-weight:600; }
.bar { display:inline-block; height:9px; background:var(--accent); border-radius:2px; }
.bar.bad { background:var(--bad); }
code, pre { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:12px; }
pre { white-space:pre-wrap; word-break:break-word; background:#f1f5f9; padding:8px 10px;
      border-radius:6px; margin:6px 0; max-height:320px; overflow:auto; }
details summary { cursor:pointer; color:var(--accent); }
mark { background:#fde68a; padding:0 2px; border-radius:2px; }
.gallery { display:grid; grid-template-columns:repeat(auto-fill,minmax(300px,1fr)); gap:10px; }
.example { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:8px;
           font-size:12px; overflow:hidden; }
.example.right { border-top:3px solid #16a34a; }
.example.wrong { border-top:3px solid var(--bad); }
.example img { width:100%; height:auto; border-radius:4px; display:block; margin-bottom:6px; }
.zoom { cursor:zoom-in; display:block; }
.zoom input { position:absolute; opacity:0; width:0; height:0; }
.zoom input:focus-visible + img { outline:2px solid var(--accent); }
.zoom input:checked + img { position:fixed; inset:0; margin:auto; z-index:10;
    width:auto; height:auto; max-width:96vw; max-height:96vh; cursor:zoom-out;
    box-shadow:0 0 0 100vmax rgba(15,23,42,.85); border-radius:0; }
.example .id { font-family:ui-monospace,monospace; color:var(--muted); word-break:break-all; }
.noimg { background:#f1f5f9; color:var(--muted); text-align:center; padding:28px 0;
         border-radius:4px; margin-bottom:6px; }
.pill { display:inline-block; padding:0 6px; border-radius:9px; background:#e5e7eb;
        font-size:11px; }
.muted { color:var(--muted); }
dl.kv { display:grid; grid-template-columns:200px 1fr; gap:4px 12px; margin:0; }
dl.kv dt { color:var(--muted); } dl.kv dd { margin:0; word-break:break-word; }
footer { color:var(--muted); font-size:12px; margin-top:36px; border-top:1px solid var(--line);
         padding-top:10px; }
@media (max-width:860px) { .grid2 { grid-template-columns:1fr; } }
"""


def _e(value: Any) -> str:
    """Escape anything for HTML text and attributes."""
    return html.escape("" if value is None else str(value), quote=True)


def _pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ci(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f'<span class="muted"> ({ci[0]:.2f}–{ci[1]:.2f})</span>'


def _redact(value: Any) -> Any:
    """Settings with secret-looking names are replaced, recursively."""
    if isinstance(value, Mapping):
        return {
            k: "[redacted]" if _SECRET_KEY.search(str(k)) else _redact(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def _json_cell(value: Any) -> dict[str, Any]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return {}
    if isinstance(value, str):
        try:
            loaded = json.loads(value)
        except json.JSONDecodeError:
            return {}
        return loaded if isinstance(loaded, dict) else {}
    return dict(value) if isinstance(value, Mapping) else {}


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


class _Page:
    def __init__(
        self,
        *,
        evaluation: Evaluation,
        frame: pd.DataFrame,
        manifest: RunManifest | None,
        figures: Mapping[str, _Figure],
        images_root: Path | None,
        examples_per_cell: int,
        run_name: str,
    ) -> None:
        self.ev = evaluation
        self.frame = frame
        self.manifest = manifest
        self.figures = figures
        self.images_root = images_root
        self.examples_per_cell = examples_per_cell
        self.run_name = run_name

    def render(self) -> str:
        model = self.manifest.model_id if self.manifest else _first(self.frame, "model_id")
        task = self.manifest.task if self.manifest else "run"
        title = f"medbatch report: {task} · {model or 'unknown model'}"
        sections = [
            self._header(title),
            self._headline(),
            self._coverage(),
            self._guardrails(),
            self._confusion(),
            self._screening(),
            self._scores(),
            self._gallery(),
            self._records(),
            self._manifest(),
        ]
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
            + "\n".join(s for s in sections if s)
            + self._footer()
            + "</main></body></html>\n"
        )

    # -- sections --------------------------------------------------------------------------

    def _header(self, title: str) -> str:
        ev = self.ev
        when = self.manifest.finished_at or self.manifest.started_at if self.manifest else None
        parts = [
            f"<h1>{_e(title)}</h1>",
            f'<p class="sub">Run directory <code>{_e(self.run_name)}</code> · {ev.n} records · '
            f"{ev.n_with_truth} with ground truth · finished {_e(when or 'unknown')}</p>",
            '<div class="notice research"><b>Research software, not a medical device.</b> '
            "These figures describe one model on one set of images. They are not clinical "
            "evidence and must not be used for diagnosis or treatment decisions.</div>",
        ]
        if is_random_model(self.manifest):
            parts.append(
                '<div class="notice random"><b>This run used a tiny random-weight test model.'
                "</b> Its answers are random: every metric below is chance level by "
                "construction and says nothing about any real model. The report shows what a "
                "real run looks like; point the runner at a real model (e.g. "
                '<code>TransformersRunner("google/medgemma-4b-it")</code>) for real numbers.'
                "</div>"
            )
        completeness = ev.completeness()
        if completeness is not None:
            parts.append(f'<div class="notice random incomplete">{_e(completeness)}</div>')
        if is_illustrative(self.manifest):
            parts.append(
                '<div class="notice random"><b>These answers are illustrative, not model '
                "output.</b> They were written by hand in MedGemma's style for the notebook's "
                "prompt and are replayed here to show the report; every metric below "
                "describes that hand-written sample, not MedGemma or any other model.</div>"
            )
        for note in ev.notes:
            parts.append(f'<div class="notice info">{_e(note)}</div>')
        return "\n".join(parts)

    def _headline(self) -> str:
        cards = []
        for name in HEADLINE_METRICS:
            estimate = self.ev.headline.get(name)
            if estimate is None:
                continue
            ci = (
                f"95% CI {estimate.low:.3f}–{estimate.high:.3f}"
                if estimate.low is not None and estimate.high is not None
                else "no interval"
            )
            warn = name == "coverage" and (estimate.value or 0.0) < 0.95
            cards.append(
                f'<div class="card{" warn" if warn else ""}"><div class="name">'
                f"{_e(METRIC_NAMES[name])}</div>"
                f'<div class="value">{_num(estimate.value)}</div>'
                f'<div class="ci">{_e(ci)} · n={estimate.n}</div></div>'
            )
        binary = self.ev.binary
        if binary is not None:
            for label, estimate in (
                ("Screening sensitivity", binary.sensitivity),
                ("Screening specificity", binary.specificity),
            ):
                ci = (
                    f"95% CI {estimate.low:.3f}–{estimate.high:.3f}"
                    if estimate.low is not None and estimate.high is not None
                    else "no interval"
                )
                cards.append(
                    f'<div class="card"><div class="name">{_e(label)}</div>'
                    f'<div class="value">{_num(estimate.value)}</div>'
                    f'<div class="ci">{_e(ci)} · n={estimate.n}</div></div>'
                )
        method = (
            f"{self.ev.ci_method}, {self.ev.n_bootstrap} resamples, seed {self.ev.seed}"
            if self.ev.n_bootstrap
            else "no bootstrap intervals"
        )
        return (
            "<h2>Headline metrics</h2>"
            f'<p class="sub">Unparsed and failed answers count as wrong. Intervals: '
            f"{_e(method)}.</p>"
            f'<div class="cards">{"".join(cards)}</div>'
        )

    def _coverage(self) -> str:
        counts = self.ev.status_counts
        total = max(1, self.ev.n)
        rows = []
        for status, count in counts.items():
            bad = status != AnswerStatus.PARSED.value and count > 0
            klass = "bad" if bad else ("zero" if count == 0 else "")
            bar = (
                f'<span class="bar{" bad" if bad else ""}" '
                f'style="width:{count / total * 120:.0f}px"></span>'
            )
            rows.append(
                f'<tr class="{klass}"><td>{_e(status)}</td><td class="num">{count}</td>'
                f'<td class="num">{_pct(count / total)}</td><td>{bar}</td></tr>'
            )
        return (
            "<h2>Coverage: what became of every answer</h2>"
            f'<p class="sub">{self.ev.n_parsed} of {self.ev.n} answers have a parsed label '
            f"(coverage {_pct(self.ev.headline['coverage'].value)}). Nothing is dropped.</p>"
            '<div class="grid2"><div><table><tr><th>status</th><th class="num">records</th>'
            f'<th class="num">share</th><th></th></tr>{"".join(rows)}</table></div>'
            f'<div class="panel">{self.figures["distribution"].img()}'
            '<p class="muted" style="margin:6px 4px 0">Each predicted count beside the true '
            "count of the same class; answers without a label keep their own bar.</p>"
            "</div></div>"
        )

    def _guardrails(self) -> str:
        g = self.ev.guardrails
        # The three checks always have a row, so "not run" is visible rather than absent.
        rows: list[tuple[str, str, bool]] = []
        if g.constrained:
            validity = _pct(g.constraint_validity) if g.constraint_validity is not None else "–"
            rows.append(
                (
                    "constraint validity",
                    f"{validity} ({g.constraint_valid} valid, {g.constraint_ignored} ignored)",
                    g.constraint_ignored > 0,
                )
            )
        else:
            rows.append(("constraint validity", "not applicable: answers were not constrained",
                         False))  # fmt: skip
        if g.image_not_seen:
            rows.append(("images not seen by the model", str(g.image_not_seen), True))
        else:
            seen = (g.canary or {}).get("image_seen")
            rows.append(
                (
                    "images seen by the model",
                    "yes (the canary's image probe)"
                    if seen
                    else "no record was reported unseen; not probed (no canary)"
                    if seen is None
                    else "no: the canary's probe found the image did not reach the model",
                    seen is False,
                )
            )
        if g.reprompted:
            rows.append(("verdicts from the follow-up re-prompt", str(g.reprompted), False))
        canary = g.canary
        if canary:
            failures = canary.get("failures") or []
            seen = canary.get("image_seen")
            verdict = "failed: " + "; ".join(failures) if failures else "passed"
            detail = (
                f"{verdict} · n {canary.get('n')} · coverage {_pct(canary.get('coverage'))}"
                f" · errors {_pct(canary.get('error_rate'))}"
                + (f" · image seen: {'yes' if seen else 'no'}" if seen is not None else "")
            )
            rows.append(("canary", detail, bool(failures)))
        else:
            rows.append(
                (
                    "canary",
                    "not run (only runners marked expensive run one, on more than 64 records;"
                    " --skip-canary turns it off)",
                    False,
                )
            )
        body = "".join(
            f'<tr class="{"bad" if bad else ""}"><td>{_e(name)}</td><td>{_e(value)}</td></tr>'
            for name, value, bad in rows
        )
        return (
            "<h2>Guardrails</h2>"
            '<p class="sub">Checks for silent failures: ignored constraints, images that never '
            "reached the model, the canary run before the job.</p>"
            f"<table>{body}</table>"
        )

    def _confusion(self) -> str:
        rows = []
        for c in self.ev.per_class:
            rows.append(
                f'<tr><td>{_e(c.label)}</td><td class="num">{c.support}</td>'
                f'<td class="num">{c.predicted}</td>'
                f'<td class="num">{_num(c.sensitivity)}{_ci(c.sensitivity_ci)}</td>'
                f'<td class="num">{_num(c.specificity)}{_ci(c.specificity_ci)}</td>'
                f'<td class="num">{_num(c.ppv)}{_ci(c.ppv_ci)}</td>'
                f'<td class="num">{_num(c.npv)}{_ci(c.npv_ci)}</td>'
                f'<td class="num">{_num(c.f1)}{_ci(c.f1_ci)}</td></tr>'
            )
        return (
            "<h2>Per class</h2>"
            '<div class="grid2">'
            f'<div class="panel">{self.figures["confusion"].img()}</div>'
            f'<div class="panel">{self.figures["per_class"].img()}</div></div>'
            "<h3>One vs rest (95% bootstrap CI)</h3>"
            '<table><tr><th>label</th><th class="num">support</th><th class="num">predicted</th>'
            '<th class="num">sensitivity</th><th class="num">specificity</th>'
            '<th class="num">PPV</th><th class="num">NPV</th><th class="num">F1</th></tr>'
            + "".join(rows)
            + "</table>"
            '<p class="muted">A class without support has no sensitivity and a class never '
            "predicted has no PPV: shown as –, never as 0 or 1. Unparsed answers are false "
            "negatives of their true class.</p>"
        )

    def _screening(self) -> str:
        b = self.ev.binary
        if b is None:
            return ""
        return (
            f"<h2>Screening view: any abnormal vs {_e(b.negative_label)}</h2>"
            f'<p class="sub">Positive = {_e(", ".join(b.positive_labels))}. An unparsed answer '
            f"({b.unparsed} records) counts as a miss or a false alarm, never as correct.</p>"
            '<table style="max-width:720px"><tr><th></th><th class="num">truth positive</th>'
            '<th class="num">truth negative</th></tr>'
            f'<tr><td>called positive</td><td class="num">{b.tp} (TP)</td>'
            f'<td class="num">{b.fp} (FP)</td></tr>'
            f'<tr><td>called negative or unparsed</td><td class="num">{b.fn} (FN)</td>'
            f'<td class="num">{b.tn} (TN)</td></tr></table>'
            '<table style="max-width:720px;margin-top:8px"><tr><th>metric</th>'
            '<th class="num">value (95% CI)</th><th class="num">n</th></tr>'
            f'<tr><td>sensitivity</td><td class="num">{_e(b.sensitivity.format())}</td>'
            f'<td class="num">{b.sensitivity.n}</td></tr>'
            f'<tr><td>specificity</td><td class="num">{_e(b.specificity.format())}</td>'
            f'<td class="num">{b.specificity.n}</td></tr>'
            f'<tr><td>PPV</td><td class="num">{_num(b.ppv)}{_ci(b.ppv_ci)}</td>'
            f'<td class="num">{b.tp + b.fp}</td></tr>'
            f'<tr><td>NPV</td><td class="num">{_num(b.npv)}{_ci(b.npv_ci)}</td>'
            f'<td class="num">{b.tn + b.fn}</td></tr></table>'
        )

    def _scores(self) -> str:
        ev = self.ev
        if ev.roc_auc is None:
            return (
                '<h2>Label scores</h2><p class="muted">This runner gave no label scores, so '
                "there is no ROC curve or calibration table. Runners with constrained decoding "
                "(transformers, vLLM) can score every label.</p>"
            )
        rows = "".join(
            f'<tr><td>{_e(label)}</td><td class="num">{_num(auc)}'
            f"{_ci((ev.roc_auc_ci or {}).get(label))}</td></tr>"
            for label, auc in ev.roc_auc.items()
        )
        cal = ev.calibration
        cal_rows = ""
        if cal is not None:
            cal_rows = "".join(
                f'<tr class="{"zero" if not b.count else ""}"><td>{b.lower:.1f}–{b.upper:.1f}'
                f'</td><td class="num">{b.count}</td><td class="num">{_num(b.confidence)}</td>'
                f'<td class="num">{_num(b.accuracy)}</td></tr>'
                for b in cal.bins
            )
        return (
            "<h2>Label scores: discrimination and calibration</h2>"
            '<div class="grid2">'
            f'<div class="panel">{self.figures["roc"].img()}</div>'
            f'<div class="panel">{self.figures["calibration"].img()}</div></div>'
            '<div class="grid2" style="margin-top:12px"><div>'
            '<table><tr><th>label (one vs rest)</th><th class="num">ROC AUC</th></tr>'
            f'{rows}<tr><th>macro</th><th class="num">{_num(ev.macro_roc_auc)}'
            f"{_ci(ev.macro_roc_auc_ci)}</th></tr>"
            "</table></div><div>"
            '<table><tr><th>confidence bin</th><th class="num">n</th>'
            '<th class="num">mean confidence</th><th class="num">accuracy</th></tr>'
            f"{cal_rows}</table>"
            f'<p class="muted">Expected calibration error (ECE): '
            f"{_num(cal.ece if cal else None)} over {cal.n if cal else 0} records.</p>"
            "</div></div>"
        )

    def _gallery(self) -> str:
        frame = self.frame
        if frame.empty:
            return ""
        truth = frame["truth"].map(_cell)
        status = frame["status"].astype(str)
        predicted = frame["label"].map(_cell).where(status == AnswerStatus.PARSED.value, None)
        blocks: list[str] = []
        for label in self.ev.labels:
            counts: list[str] = []
            cards: list[str] = []
            for column in self.ev.confusion.columns:
                if column == UNPARSED:
                    mask = (truth == label) & predicted.isna()
                else:
                    mask = (truth == label) & (predicted == column)
                chosen = frame[mask]
                if chosen.empty:
                    continue
                mark = " ✓" if column == label else ""
                counts.append(f"{_e(column)}{mark} <b>{len(chosen)}</b>")
                cards += [
                    self._example(row) for _, row in chosen.head(self.examples_per_cell).iterrows()
                ]
            if cards:
                blocks.append(
                    f"<h3>Ground truth {_e(label)}</h3>"
                    f'<p class="muted" style="margin:0 0 6px">predicted → {" · ".join(counts)}</p>'
                    f'<div class="gallery">{"".join(cards)}</div>'
                )
        return (
            "<h2>Examples per cell of the confusion matrix</h2>"
            f'<p class="sub">Up to {self.examples_per_cell} records per cell, in run order; '
            "green: right, red: wrong. The evidence the parser used is highlighted in the "
            "answer.</p>" + "".join(blocks)
        )

    def _example(self, row: pd.Series[Any]) -> str:
        truth = _cell(row.get("truth"))
        status = str(row.get("status"))
        label = _cell(row.get("label")) if status == AnswerStatus.PARSED.value else None
        right = label is not None and label == truth
        thumb = self._thumbnail(str(row.get("record_id")), row.get("metadata"))
        # One embedded copy, large enough to read an ECG: shown small in the card, full
        # size when clicked (a checkbox toggles it, so the page needs no script).
        image = (
            '<label class="zoom" title="click to enlarge, click again to close">'
            '<input type="checkbox" aria-label="enlarge image">'
            f'<img src="data:image/jpeg;base64,{thumb}" alt="image of record"></label>'
            if thumb
            else '<div class="noimg">image not available locally (medbatch report '
            "--images-root FOLDER)</div>"
        )
        text = _cell(row.get("text"))
        evidence = _cell(row.get("evidence"))
        answer = _highlight(str(text), str(evidence) if evidence else None) if text else ""
        error = _cell(row.get("error_message"))
        return (
            f'<div class="example {"right" if right else "wrong"}">{image}'
            f'<div class="id" title="{_e(row.get("record_id"))}">'
            f"{_e(_short_id(str(row.get('record_id'))))}</div>"
            f"<div>truth <b>{_e(truth)}</b><br>predicted <b>{_e(label or UNPARSED)}</b> "
            f'<span class="pill">{_e(status)}</span></div>'
            + (f"<div>evidence: <mark>{_e(evidence)}</mark></div>" if evidence else "")
            + (f'<div class="muted">error: {_e(error)}</div>' if error else "")
            + (
                f"<details><summary>raw answer</summary><pre>{answer}</pre></details>"
                if text
                else ""
            )
            + "</div>"
        )

    def _thumbnail(self, record_id: str, metadata: Any) -> str | None:
        path = _image_path(record_id, _json_cell(metadata), self.images_root)
        if path is None:
            return None
        from medbatch.errors import ImageLoadError
        from medbatch.images import thumbnail
        from medbatch.records import ImageRef

        try:
            # Refuses images over the pixel limit; shrinks before converting to RGB.
            picture = thumbnail(ImageRef.from_path(path), _FULL_SIDE)
            buffer = io.BytesIO()
            picture.save(buffer, format="JPEG", quality=78)
        except (ImageLoadError, OSError, ValueError):
            return None
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    def _records(self) -> str:
        frame = self.frame
        parts = ["<h2>Slowest and failed records</h2>"]
        if "latency_s" in frame.columns and frame["latency_s"].notna().any():
            slow = frame[frame["latency_s"].notna()].nlargest(5, "latency_s")
            rows = "".join(
                f'<tr><td class="id">{_e(r.record_id)}</td><td class="num">{r.latency_s:.2f} s'
                f'</td><td>{_e(r.status)}</td><td class="num">{_e(_int(r.completion_tokens))}'
                "</td></tr>"
                for r in slow.itertuples()
            )
            lat = self.ev.latency
            parts.append(
                f'<p class="sub">Latency per answer: median {_num(lat.median, 2)} s, 95th '
                f"percentile {_num(lat.p95, 2)} s, max {_num(lat.max, 2)} s (n={lat.n}). "
                "Batched runners report the batch's time for each of its records.</p>"
                '<table><tr><th>record</th><th class="num">latency</th><th>status</th>'
                f'<th class="num">answer tokens</th></tr>{rows}</table>'
            )
        status = frame["status"].astype(str) if not frame.empty else pd.Series(dtype=str)
        failed = frame[status != AnswerStatus.PARSED.value] if not frame.empty else frame
        if failed.empty:
            parts.append('<p class="muted">No failed or unparsed records.</p>')
        else:
            rows = "".join(
                f'<tr><td class="id">{_e(r.record_id)}</td><td>{_e(r.status)}</td>'
                f"<td>{_e(_cell(r.error_kind) or '')}</td>"
                f"<td>{_e(_cell(r.error_message) or _snippet(_cell(r.text)))}</td></tr>"
                for r in failed.head(50).itertuples()
            )
            more = (
                f'<p class="muted">{len(failed) - 50} more in predictions.parquet.</p>'
                if len(failed) > 50
                else ""
            )
            parts.append(
                f"<h3>Failed or unparsed ({len(failed)})</h3>"
                "<table><tr><th>record</th><th>status</th><th>error</th><th>detail</th></tr>"
                f"{rows}</table>{more}"
            )
        return "".join(parts)

    def _manifest(self) -> str:
        m = self.manifest
        ev = self.ev
        dup = ev.duplicates
        dup_text = (
            f"{dup.copies} records repeat another record's image ({dup.records} records, "
            f"{dup.distinct} distinct; {dup.conflicts} groups with conflicting truths); "
            + ("counted once each (dedupe)." if dup.deduped else "counted as they are.")
            if dup.copies
            else f"none ({dup.records} records, {dup.distinct} distinct images)"
        )
        support = ", ".join(f"{c.label}: {c.support}" for c in ev.per_class)
        items: list[tuple[str, str]] = []
        if m is not None:
            extra = dict(m.model_extra or {})
            items += [
                ("model", f"<code>{_e(m.model_id)}</code>"),
                ("runner", _facts(_redact(m.runner))),
                (
                    "task / prompt",
                    f"{_e(m.task)} · {_e(m.prompt_version)} · fingerprint "
                    f"<code>{_e(m.prompt_fingerprint)}</code>",
                ),
                ("constrained decoding", "yes" if m.constrained else "no"),
                ("generation parameters", _facts(m.params)),
                ("dataset", _facts(_redact(m.dataset))),
            ]
            for key in ("sampling", "demo", "images_root"):
                if key in extra:
                    items.append((key, _facts(_redact(extra[key]))))
            items += [
                ("status", _e(m.status)),
                (
                    "started / finished",
                    f"{_e(m.started_at)} → {_e(m.finished_at or '–')}"
                    + _duration(m.started_at, m.finished_at),
                ),
                ("medbatch", _e(m.medbatch_version)),
                (
                    "versions",
                    f"<code>{_e(', '.join(f'{k} {v}' for k, v in m.versions.items()))}</code>",
                ),
            ]
        items += [
            ("records", f"{ev.n} ({ev.n_with_truth} with ground truth)"),
            ("ground truth per class", _e(support)),
            ("duplicates", _e(dup_text)),
        ]
        rows = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in items)
        prompt = ""
        if m is not None and m.prompt_text:
            text = "\n\n".join(
                f"[{key}]\n{value}"
                for key, value in m.prompt_text.items()
                if isinstance(value, str)
            )
            prompt = f"<details><summary>prompt text</summary><pre>{_e(text)}</pre></details>"
        return f'<h2>Run manifest</h2><div class="panel"><dl class="kv">{rows}</dl>{prompt}</div>'

    def _footer(self) -> str:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return (
            f"<footer>Generated by medbatch at {_e(now)}. Research software, not a medical "
            "device. metrics.json beside this file holds every number shown here.</footer>"
        )


def _facts(value: Any) -> str:
    """A manifest entry as readable HTML: `key value · key value`, nested keys dotted."""
    if not isinstance(value, Mapping):
        return f"<code>{_e(value)}</code>" if value not in (None, "") else "–"
    flat: list[tuple[str, Any]] = []

    def walk(prefix: str, item: Any) -> None:
        if isinstance(item, Mapping) and item:
            for key in sorted(item, key=str):
                walk(f"{prefix}.{key}" if prefix else str(key), item[key])
        else:
            flat.append((prefix, item))

    walk("", value)
    shown = [
        f'<span class="fact"><span class="muted">{_e(key)}</span> '
        f"<code>{_e(json.dumps(item) if isinstance(item, (list, tuple)) else item)}</code></span>"
        for key, item in flat
        if item is not None
    ]
    return " · ".join(shown) or "–"


def _first(frame: pd.DataFrame, column: str) -> str | None:
    if column not in frame.columns or frame.empty:
        return None
    value = _cell(frame[column].iloc[0])
    return None if value is None else str(value)


def _short_id(record_id: str) -> str:
    """The last two path parts of a path-like record id (the full id is in a tooltip)."""
    parts = record_id.split("/")
    return "/".join(parts[-2:]) if len(parts) > 2 else record_id


def _int(value: Any) -> str:
    value = _cell(value)
    return "–" if value is None else str(int(value))


def _snippet(text: Any, limit: int = 160) -> str:
    if not text:
        return ""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _duration(start: str | None, end: str | None) -> str:
    try:
        if start and end:
            seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
            return f" ({seconds:.0f} s)"
    except ValueError:
        pass
    return ""


def _highlight(text: str, evidence: str | None) -> str:
    """The answer escaped, with the evidence span (last occurrence) wrapped in <mark>."""
    if not evidence:
        return _e(text)
    # The verdict is usually at the end: mark the last occurrence, as the parser reads it.
    at = text.rfind(evidence)
    if at < 0:
        return _e(text)
    end = at + len(evidence)
    return f"{_e(text[:at])}<mark>{_e(text[at:end])}</mark>{_e(text[end:])}"


def _image_path(record_id: str, metadata: Mapping[str, Any], root: Path | None) -> Path | None:
    """A local image for a record: a path in its metadata, else `root / record_id`."""
    candidates: list[Path] = []
    for key in _IMAGE_KEYS:
        value = metadata.get(key)
        if isinstance(value, str) and value:
            candidates.append(Path(value))
    if root is not None:
        base = root.resolve()
        candidate = (base / record_id).resolve()
        # A record id like "../../etc/x" must not read outside the images folder.
        if candidate.is_relative_to(base):
            candidates.append(candidate)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def headline_rows(ev: Evaluation) -> Sequence[tuple[str, str, str, str]]:
    """(metric, value, 95% CI, n) rows for terminal tables."""
    rows = []
    for name in HEADLINE_METRICS:
        estimate = ev.headline.get(name)
        if estimate is None:
            continue
        ci = (
            f"{estimate.low:.3f}–{estimate.high:.3f}"
            if estimate.low is not None and estimate.high is not None
            else "–"
        )
        rows.append((METRIC_NAMES[name], _num(estimate.value), ci, str(estimate.n)))
    if ev.binary is not None:
        for label, estimate in (
            (f"Sensitivity (any abnormal vs {ev.binary.negative_label})", ev.binary.sensitivity),
            (f"Specificity (any abnormal vs {ev.binary.negative_label})", ev.binary.specificity),
        ):
            ci = (
                f"{estimate.low:.3f}–{estimate.high:.3f}"
                if estimate.low is not None and estimate.high is not None
                else "–"
            )
            rows.append((label, _num(estimate.value), ci, str(estimate.n)))
    if ev.macro_roc_auc is not None:
        auc_ci = ev.macro_roc_auc_ci
        ci = f"{auc_ci[0]:.3f}–{auc_ci[1]:.3f}" if auc_ci is not None else "–"
        rows.append(("Macro ROC AUC (label scores)", _num(ev.macro_roc_auc), ci, str(ev.n)))
    return rows
