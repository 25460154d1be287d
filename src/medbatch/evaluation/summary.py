"""`summarize`: the cheap headline figures the pipeline prints after every run.

Must not import the rest of `medbatch.evaluation` (the pipeline imports this at start-up:
no scikit-learn, no bootstrap).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from medbatch.records import AnswerStatus

__all__ = ["summarize"]


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
