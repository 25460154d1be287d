"""Are the 95% intervals right? Coverage of known values, and agreement with scipy.

Two checks that the hand-computed tests in `test_evaluation.py` cannot make: an interval
that is too narrow or too wide (the 25th-75th percentile, or the estimate ± 0.05) passes
every point-estimate test.

- Coverage: data simulated from a model whose true sensitivity, PPV, AUC, ... are known in
  closed form; over a few hundred simulated runs each 95% interval must contain the true
  value about 95% of the time.
- Agreement: on small runs, each interval must match `scipy.stats.bootstrap` (percentile
  method) computed from the metric's textbook definition, within Monte Carlo error.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from scipy.stats import bootstrap, norm, rankdata
from sklearn.metrics import roc_auc_score

import medbatch.evaluation.bootstrap as bootstrap_engine
import medbatch.evaluation.scores as scores
from medbatch.evaluation import evaluate
from medbatch.evaluation.bootstrap import _interval, _Resamples
from medbatch.evaluation.metrics import _binary_view, _Codes, _confusion_stats
from medbatch.evaluation.rows import _Rows
from medbatch.evaluation.scores import _auc_intervals

LABELS = ("NORMAL", "MI")

# -- the simulation model ---------------------------------------------------------------------
# A record is MI with probability PREVALENCE. Its answer is a draw from CALLS[truth]: the
# probabilities of answering MI, NORMAL, or nothing parseable. Its MI score is
# sigmoid(x), x ~ Normal(SEPARATION if MI else 0, 1), independent of the answer.
PREVALENCE = 0.4
CALLS = {"MI": (0.75, 0.15, 0.10), "NORMAL": (0.12, 0.80, 0.08)}
SEPARATION = 1.2


def _true_values() -> dict[str, float]:
    """Each metric's value in the population, from the model above (not from samples)."""
    pi = PREVALENCE
    mi_mi, _, _ = CALLS["MI"]
    normal_mi, normal_normal, _ = CALLS["NORMAL"]
    auc = float(norm.cdf(SEPARATION / math.sqrt(2)))  # P(x_MI > x_NORMAL)
    return {
        "accuracy": pi * mi_mi + (1 - pi) * normal_normal,
        # MI against the rest: an unparsed answer is a false negative of its own class only.
        "mi_sensitivity": mi_mi,
        "mi_specificity": 1 - normal_mi,
        "mi_ppv": pi * mi_mi / (pi * mi_mi + (1 - pi) * normal_mi),
        "mi_npv": (1 - pi) * (1 - normal_mi) / ((1 - pi) * (1 - normal_mi) + pi * (1 - mi_mi)),
        # Screening: an unparsed answer is wrong whatever the truth (a miss or a false alarm).
        "screen_sensitivity": mi_mi,
        "screen_specificity": normal_normal,
        "screen_ppv": pi * mi_mi / (pi * mi_mi + (1 - pi) * (1 - normal_normal)),
        "screen_npv": (1 - pi) * normal_normal / ((1 - pi) * normal_normal + pi * (1 - mi_mi)),
        "mi_auc": auc,
        "macro_auc": auc,  # NORMAL's score is 1 - MI's: the same AUC
    }


def _simulated_frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    truth = np.where(rng.random(n) < PREVALENCE, "MI", "NORMAL")
    labels: list[str | None] = []
    for t in truth:
        call = rng.choice(3, p=CALLS[str(t)])
        labels.append(("MI", "NORMAL", None)[call])
    x = rng.normal(np.where(truth == "MI", SEPARATION, 0.0), 1.0)
    mi_score = 1.0 / (1.0 + np.exp(-x))
    frame: pd.DataFrame = pd.DataFrame(
        {
            "record_id": [f"r{i}" for i in range(n)],
            "truth": truth,
            "label": labels,
            "status": ["parsed" if lab else "unparseable" for lab in labels],
            "label_scores": [
                json.dumps({"MI": float(s), "NORMAL": float(1 - s)}) for s in mi_score
            ],
        }
    )
    return frame


def _intervals_of(frame: pd.DataFrame, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """The intervals `evaluate` reports, through the same functions, without scikit-learn's
    point estimates (which cost ~0.1 s a call and are checked elsewhere)."""
    rows = _Rows.from_frame(frame)
    seeds = np.random.SeedSequence(seed).spawn(2)
    boot = _Resamples.of(rows.n, n_bootstrap, seeds[0])
    codes = _Codes(rows, LABELS)
    tensors = codes.bootstrap_confusion(boot)
    assert tensors is not None
    stats = _confusion_stats(tensors)
    mi = LABELS.index("MI")
    binary = _binary_view(rows, LABELS, "NORMAL", boot)
    auc, macro_auc = _auc_intervals(rows, LABELS, n_bootstrap, seeds[1])
    assert auc is not None
    return {
        "accuracy": _interval(stats["accuracy"]),
        "mi_sensitivity": _interval(stats["sensitivity"][:, mi]),
        "mi_specificity": _interval(stats["specificity"][:, mi]),
        "mi_ppv": _interval(stats["ppv"][:, mi]),
        "mi_npv": _interval(stats["npv"][:, mi]),
        "screen_sensitivity": (binary.sensitivity.low, binary.sensitivity.high),
        "screen_specificity": (binary.specificity.low, binary.specificity.high),
        "screen_ppv": binary.ppv_ci,
        "screen_npv": binary.npv_ci,
        "mi_auc": auc["MI"],
        "macro_auc": macro_auc,
    }


REPETITIONS = 300
RECORDS = 120
# With 300 runs the observed coverage of a true 95% interval has a standard error of 1.3
# points, and the percentile bootstrap runs a point or two under nominal at n = 120;
# 0.91-0.985 leaves room for both. An interval of half the right width covers ~70%.
COVERAGE_RANGE = (0.91, 0.985)


def test_95_percent_intervals_cover_the_true_value_95_percent_of_the_time() -> None:
    truths = _true_values()
    rng = np.random.default_rng(2026)
    hits = dict.fromkeys(truths, 0)
    started = time.perf_counter()
    for repetition in range(REPETITIONS):
        intervals = _intervals_of(_simulated_frame(rng, RECORDS), 1000, seed=repetition)
        for name, truth in truths.items():
            low, high = intervals[name] or (None, None)
            assert low is not None, name
            assert high is not None, name
            hits[name] += low <= truth <= high
    coverage = {name: count / REPETITIONS for name, count in hits.items()}
    print(f"coverage over {REPETITIONS} runs ({time.perf_counter() - started:.1f} s):", coverage)
    low, high = COVERAGE_RANGE
    wrong = {name: c for name, c in coverage.items() if not low <= c <= high}
    assert not wrong, f"coverage outside {COVERAGE_RANGE}: {wrong}"


# -- agreement with scipy.stats.bootstrap ------------------------------------------------------

N_RESAMPLES = 10_000
THREE = ("NORMAL", "MI", "STTC")


def _small_run(n: int, seed: int) -> tuple[pd.DataFrame, npt.NDArray[np.int64], Any, Any]:
    """A 3-class run: truth and answer codes (-1 = unparsed) and per-class scores."""
    rng = np.random.default_rng(seed)
    t = np.repeat(np.arange(3), n // 3)
    right = rng.random(t.size) < 0.7
    p = np.where(right, t, rng.integers(0, 3, t.size))
    p[rng.random(t.size) < 0.1] = -1
    logits = rng.normal(0.0, 1.0, (t.size, 3)) + 1.5 * np.eye(3)[t]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    frame = pd.DataFrame(
        {
            "record_id": [f"r{i}" for i in range(t.size)],
            "truth": [THREE[i] for i in t],
            "label": [THREE[i] if i >= 0 else None for i in p],
            "status": ["parsed" if i >= 0 else "unparseable" for i in p],
            "label_scores": [
                json.dumps(dict(zip(THREE, map(float, row), strict=True))) for row in probs
            ],
        }
    )
    return frame, t, p, probs


def _scipy_interval(data: tuple[Any, ...], statistic: Callable[..., Any]) -> tuple[float, float]:
    """scipy's paired percentile bootstrap; `statistic(*resampled, axis)` is vectorised."""
    result = bootstrap(
        data,
        statistic,
        paired=True,
        vectorized=True,
        axis=-1,
        n_resamples=N_RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(7),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _scipy_share(hit: Any, counted: Any) -> tuple[float, float]:
    """Interval of sum(hit) / sum(counted), two per-record indicators resampled together."""
    return _scipy_interval(
        (hit, counted), lambda h, c, axis: np.sum(h, axis=axis) / np.sum(c, axis=axis)
    )


def _auc(scores: Any, positive: Any, axis: int) -> Any:
    """Mann-Whitney AUC from mid-ranks (scipy), as `roc_auc_score` defines it with ties."""
    ranks = rankdata(scores, axis=axis)
    n_pos = np.sum(positive, axis=axis)
    n_neg = positive.shape[axis] - n_pos
    return (np.sum(ranks * positive, axis=axis) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


@pytest.mark.parametrize("seed", [0, 1])
def test_intervals_match_scipy_bootstrap_on_small_runs(seed: int) -> None:
    frame, t, p, probs = _small_run(60, seed)
    ev = evaluate(frame, labels=list(THREE), negative_label="NORMAL", n_bootstrap=N_RESAMPLES)
    accuracy = ev.headline["accuracy"]
    ours: dict[str, Any] = {"accuracy": (accuracy.low, accuracy.high)}
    theirs = {"accuracy": _scipy_share(t == p, np.ones_like(t))}
    assert ev.roc_auc is not None
    assert ev.roc_auc_ci is not None
    for i, label in enumerate(THREE):
        metrics = ev.per_class[i]
        ours[f"{label} sensitivity"] = metrics.sensitivity_ci
        ours[f"{label} ppv"] = metrics.ppv_ci
        ours[f"{label} npv"] = metrics.npv_ci
        ours[f"{label} auc"] = ev.roc_auc_ci[label]
        theirs[f"{label} sensitivity"] = _scipy_share((t == i) & (p == i), t == i)
        theirs[f"{label} ppv"] = _scipy_share((t == i) & (p == i), p == i)
        # A negative call for class i is anything else, unparsed included (a false negative).
        theirs[f"{label} npv"] = _scipy_share((t != i) & (p != i), p != i)
        theirs[f"{label} auc"] = _scipy_interval((probs[:, i], t == i), _auc)
        assert ev.roc_auc[label] == pytest.approx(_auc(probs[:, i], t == i, axis=0))
    ours["macro auc"] = ev.macro_roc_auc_ci
    theirs["macro auc"] = _scipy_interval(
        (*probs.T, t),
        lambda *columns, axis: np.mean(
            [_auc(score, columns[-1] == i, axis) for i, score in enumerate(columns[:-1])], axis=0
        ),
    )
    # Screening, NORMAL negative: an unparsed answer is a miss or a false alarm, never right.
    assert ev.binary is not None
    positive = t != 0
    hit = np.where(positive, p > 0, p == 0)
    ours["screen ppv"] = ev.binary.ppv_ci
    ours["screen npv"] = ev.binary.npv_ci
    theirs["screen ppv"] = _scipy_share(positive & hit, positive == hit)
    theirs["screen npv"] = _scipy_share(~positive & hit, positive != hit)

    # Two independent sets of 10,000 resamples: the 2.5% and 97.5% points differ by Monte
    # Carlo error (~0.005 here) plus, for counts over ~20 records, one step of their grid.
    far = {
        name: (ours[name], theirs[name])
        for name in theirs
        if ours[name] is None or not np.allclose(ours[name], theirs[name], atol=0.035, rtol=0)
    }
    assert not far, far


def test_auc_resample_formula_is_sklearns_auc(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the identity "resample" the counting formula gives sklearn's AUC, ties included."""
    frame, t, _, probs = _small_run(30, 3)
    probs = np.round(probs, 1)  # many tied scores
    frame["label_scores"] = [
        json.dumps(dict(zip(THREE, map(float, row), strict=True))) for row in probs
    ]

    class Identity(_Resamples):
        def chunks(self) -> Iterator[npt.NDArray[np.int64]]:
            yield np.arange(self.n, dtype=np.int64)[None, :]

    monkeypatch.setattr(scores, "_Resamples", Identity)
    per_label, macro = _auc_intervals(_Rows.from_frame(frame), THREE, 1, np.random.SeedSequence(0))
    assert per_label is not None
    assert macro is not None
    normalised = probs / probs.sum(axis=1, keepdims=True)
    expected = [roc_auc_score(t == i, normalised[:, i]) for i in range(3)]
    for i, label in enumerate(THREE):
        assert per_label[label] == pytest.approx((expected[i], expected[i]))
    assert macro == pytest.approx((np.mean(expected), np.mean(expected)))


def test_bootstrap_memory_is_bounded_by_the_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The resample indices are drawn and reduced chunk by chunk, never held whole."""
    import tracemalloc

    chunk = 400_000
    monkeypatch.setattr(bootstrap_engine, "_BOOTSTRAP_CHUNK", chunk)
    n, n_bootstrap = 100_000, 200
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "record_id": [f"r{i}" for i in range(n)],
            "truth": rng.choice(["A", "B", "C", "D"], n),
            "label": rng.choice(["A", "B", "C", "D"], n),
            "status": "parsed",
        }
    )
    codes = _Codes(_Rows.from_frame(frame), ("A", "B", "C", "D"))
    boot = _Resamples(n, n_bootstrap, np.random.SeedSequence(0))
    tracemalloc.start()
    try:
        tensors = codes.bootstrap_confusion(boot)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tensors is not None
    assert tensors.shape == (n_bootstrap, 4, 5)
    assert (tensors.sum(axis=(1, 2)) == n).all()
    # A chunk of int64 indices and two temporaries of its size; the whole (B, n) index
    # array would be 160 MB, and the unchunked code peaked at three times that.
    assert peak < 4 * chunk * 8, f"peak {peak / 1e6:.0f} MB"
    # The chunks are the same resamples as one big draw.
    whole = np.random.default_rng(boot.seed).integers(0, n, size=(n_bootstrap, n), dtype=np.int64)
    cells = codes.t * codes.kc + codes.p
    first = np.bincount(cells[whole[0]], minlength=20).reshape(4, 5)
    assert (tensors[0] == first).all()
