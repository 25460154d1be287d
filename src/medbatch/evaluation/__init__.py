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

The package, one module per job:

| module | holds |
| --- | --- |
| `models` | the result models (`Evaluation`, `Estimate`, `Comparison`, ...) |
| `summary` | `summarize`, the cheap figures printed after every run |
| `guardrails` | `Guardrails` and `guardrail_summary` |
| `bootstrap` | the resampling engine and percentile intervals |
| `rows` | loading and cleaning the predictions table, the label order |
| `metrics` | confusion-matrix, per-class and screening metrics |
| `scores` | ROC AUC, ROC points and calibration from label scores |
| `core` | `evaluate` |
| `comparison` | `compare` |

Nothing here imports `medbatch.report`, the pipeline or a runner: evaluation reads a
predictions table and a manifest, nothing else.
"""

from __future__ import annotations

from medbatch.evaluation.comparison import compare
from medbatch.evaluation.core import evaluate
from medbatch.evaluation.guardrails import Guardrails, guardrail_summary
from medbatch.evaluation.models import (
    HEADLINE_METRICS,
    UNPARSED,
    BinaryView,
    Calibration,
    CalibrationBin,
    ClassMetrics,
    Comparison,
    ConfusionMatrix,
    Disagreement,
    DuplicateSummary,
    Estimate,
    Evaluation,
    LatencySummary,
    RocCurve,
)
from medbatch.evaluation.scores import score_matrix
from medbatch.evaluation.summary import summarize

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
    "RocCurve",
    "compare",
    "evaluate",
    "guardrail_summary",
    "score_matrix",
    "summarize",
]
