"""`compare`: two runs on the same records, paired accuracy difference and McNemar's test.

Must not import `core`, `metrics` or `scores`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medbatch.evaluation.bootstrap import _estimate, _Resamples
from medbatch.evaluation.models import Comparison, Disagreement
from medbatch.evaluation.rows import _clean, _load, _Rows

__all__ = ["compare"]


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
