"""Evaluation metrics against hand-computed values on small confusion matrices."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, f1_score

from medbatch.datasets.sample import load_ecg_sample
from medbatch.evaluation import (
    UNPARSED,
    compare,
    evaluate,
    score_matrix,
    summarize,
)
from medbatch.evaluation.metrics import _confusion_stats
from medbatch.pipeline import classify
from medbatch.store import PREDICTION_COLUMNS
from medbatch.tasks.registry import get_task

Row = tuple[str | None, str | None]  # (truth, predicted label or None for unparsed)


def make_frame(
    rows: Sequence[Row],
    *,
    sha: Sequence[str | None] | None = None,
    scores: Sequence[dict[str, float] | None] | None = None,
    ids: Sequence[str] | None = None,
    status: Sequence[str] | None = None,
) -> pd.DataFrame:
    records: list[dict[str, Any]] = []
    for i, (truth, label) in enumerate(rows):
        records.append(
            {
                "record_id": ids[i] if ids else f"r{i}",
                "image_sha256": (sha[i] if sha else f"sha{i}"),
                "truth": truth,
                "label": label,
                "status": status[i] if status else ("parsed" if label else "unparseable"),
                "label_scores": json.dumps(scores[i]) if scores and scores[i] else None,
                "latency_s": 0.1 * (i + 1),
            }
        )
    return pd.DataFrame(records)


# A→A, A→A, A→B, A→unparsed, B→B, B→B, B→A, C→C, C→B, C→C
#            A  B  C  unparsed
# truth A  [ 2, 1, 0, 1 ]
# truth B  [ 1, 2, 0, 0 ]
# truth C  [ 0, 1, 2, 0 ]
EXAMPLE: list[Row] = [
    ("A", "A"),
    ("A", "A"),
    ("A", "B"),
    ("A", None),
    ("B", "B"),
    ("B", "B"),
    ("B", "A"),
    ("C", "C"),
    ("C", "B"),
    ("C", "C"),
]


def value(ev: Any, name: str) -> float | None:
    result: float | None = ev.headline[name].value
    return result


class TestHandComputed:
    def test_confusion_matrix_keeps_unparsed(self) -> None:
        ev = evaluate(make_frame(EXAMPLE), labels=["A", "B", "C"], n_bootstrap=0)
        assert ev.confusion.columns == ("A", "B", "C", UNPARSED)
        assert ev.confusion.counts == ((2, 1, 0, 1), (1, 2, 0, 0), (0, 1, 2, 0))
        assert int(np.sum(ev.confusion.counts)) == len(EXAMPLE)

    def test_headline(self) -> None:
        ev = evaluate(make_frame(EXAMPLE), labels=["A", "B", "C"], n_bootstrap=0)
        assert value(ev, "accuracy") == pytest.approx(0.6)
        assert value(ev, "balanced_accuracy") == pytest.approx(11 / 18)
        assert value(ev, "macro_f1") == pytest.approx(68 / 105)
        assert value(ev, "weighted_f1") == pytest.approx(0.64)
        # po = 0.6; pe = (4·3 + 3·4 + 3·2 + 0·1) / 100 = 0.3
        assert value(ev, "kappa") == pytest.approx(3 / 7)
        assert value(ev, "coverage") == pytest.approx(0.9)
        assert value(ev, "accuracy_parsed") == pytest.approx(6 / 9)
        assert ev.headline["accuracy"].n == 10
        assert ev.headline["accuracy_parsed"].n == 9
        assert ev.n_parsed == 9
        assert ev.status_counts["unparseable"] == 1
        assert ev.status_counts["parsed"] == 9

    def test_per_class(self) -> None:
        ev = evaluate(make_frame(EXAMPLE), labels=["A", "B", "C"], n_bootstrap=0)
        a, b, c = ev.per_class
        assert (a.tp, a.fp, a.fn, a.tn, a.support, a.predicted) == (2, 1, 2, 5, 4, 3)
        assert a.sensitivity == pytest.approx(0.5)
        assert a.specificity == pytest.approx(5 / 6)
        assert a.ppv == pytest.approx(2 / 3)
        assert a.npv == pytest.approx(5 / 7)
        assert a.f1 == pytest.approx(4 / 7)
        assert (b.tp, b.fp, b.fn, b.tn) == (2, 2, 1, 5)
        assert b.sensitivity == pytest.approx(2 / 3)
        assert b.specificity == pytest.approx(5 / 7)
        assert b.ppv == pytest.approx(0.5)
        assert b.npv == pytest.approx(5 / 6)
        assert b.f1 == pytest.approx(4 / 7)
        assert (c.tp, c.fp, c.fn, c.tn) == (2, 0, 1, 7)
        assert c.specificity == pytest.approx(1.0)
        assert c.ppv == pytest.approx(1.0)
        assert c.npv == pytest.approx(7 / 8)
        assert c.f1 == pytest.approx(0.8)

    def test_binary_view_counts_unparsed_as_wrong(self) -> None:
        ev = evaluate(make_frame(EXAMPLE), labels=["A", "B", "C"], negative_label="C")
        binary = ev.binary
        assert binary is not None
        assert binary.positive_labels == ("A", "B")
        # The unparsed A record is a missed positive, not dropped.
        assert (binary.tp, binary.fn, binary.tn, binary.fp) == (6, 1, 2, 1)
        assert binary.unparsed == 1
        assert binary.sensitivity.value == pytest.approx(6 / 7)
        assert binary.specificity.value == pytest.approx(2 / 3)
        assert binary.sensitivity.n == 7
        assert binary.ppv == pytest.approx(6 / 7)
        assert binary.npv == pytest.approx(2 / 3)

    def test_no_label_name_is_a_default_negative(self) -> None:
        # A bare table says nothing about which label is the reference: NORMAL is not
        # guessed (the run directory's manifest, or negative_label=, says it).
        frame = make_frame([("NORMAL", "NORMAL"), ("POST_MI", "NORMAL")])
        assert evaluate(frame, n_bootstrap=0).binary is None
        ev = evaluate(frame, negative_label="NORMAL", n_bootstrap=0)
        assert ev.binary is not None
        assert ev.binary.negative_label == "NORMAL"

    def test_unknown_negative_label_is_refused(self) -> None:
        with pytest.raises(ValueError, match="negative label 'X'"):
            evaluate(make_frame(EXAMPLE), negative_label="X")

    def test_agrees_with_sklearn(self) -> None:
        ev = evaluate(make_frame(EXAMPLE), labels=["A", "B", "C"], n_bootstrap=0)
        y_true = [t for t, _ in EXAMPLE]
        y_pred = [p or UNPARSED for _, p in EXAMPLE]
        with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
            expected = balanced_accuracy_score(y_true, y_pred)
        assert value(ev, "balanced_accuracy") == pytest.approx(expected)
        assert value(ev, "kappa") == pytest.approx(cohen_kappa_score(y_true, y_pred))
        assert value(ev, "macro_f1") == pytest.approx(
            f1_score(y_true, y_pred, labels=["A", "B", "C"], average="macro")
        )


class TestEdgeCases:
    def test_class_with_zero_support_and_no_predictions(self) -> None:
        ev = evaluate(make_frame(EXAMPLE), labels=["A", "B", "C", "D"], n_bootstrap=200)
        d = ev.per_class[3]
        assert (d.support, d.predicted) == (0, 0)
        assert d.sensitivity is None
        assert d.ppv is None
        assert d.f1 is None
        assert d.sensitivity_ci is None
        assert d.ppv_ci is None  # never predicted: no PPV, so no interval either
        assert d.npv_ci is not None
        assert d.specificity == pytest.approx(1.0)
        # Undefined, so left out of the means: the same as without D.
        assert value(ev, "macro_f1") == pytest.approx(68 / 105)
        assert value(ev, "balanced_accuracy") == pytest.approx(11 / 18)
        assert ev.confusion.counts[3] == (0, 0, 0, 0, 0)

    def test_class_with_zero_support_but_predicted(self) -> None:
        frame = make_frame([("A", "A"), ("A", "D"), ("B", "B"), ("B", "B")])
        ev = evaluate(frame, labels=["A", "B", "D"], n_bootstrap=0)
        d = ev.per_class[2]
        assert (d.support, d.predicted, d.fp) == (0, 1, 1)
        assert d.sensitivity is None
        assert d.ppv == 0.0
        assert d.f1 == 0.0  # 2·0 / (0 + 1 + 0): a false alarm counts against the mean
        assert value(ev, "macro_f1") == pytest.approx((2 / 3 + 1 + 0) / 3)
        assert value(ev, "balanced_accuracy") == pytest.approx(0.75)

    def test_nothing_parsed(self) -> None:
        frame = make_frame([("A", None), ("A", None), ("B", None)])
        ev = evaluate(frame, labels=["A", "B"], negative_label="B", n_bootstrap=100)
        assert value(ev, "accuracy") == 0.0
        assert value(ev, "coverage") == 0.0
        assert value(ev, "balanced_accuracy") == 0.0
        assert value(ev, "macro_f1") == 0.0
        assert value(ev, "kappa") == 0.0
        assert value(ev, "accuracy_parsed") is None
        assert ev.headline["accuracy_parsed"].n == 0
        assert ev.confusion.counts == ((0, 0, 2), (0, 0, 1))
        assert all(c.ppv is None for c in ev.per_class)
        assert ev.binary is not None
        assert ev.binary.sensitivity.value == 0.0
        assert ev.binary.specificity.value == 0.0
        assert ev.status_counts["unparseable"] == 3
        assert any("No answer was parsed" in note for note in ev.notes)
        json.loads(ev.to_json())

    def test_no_ground_truth(self) -> None:
        ev = evaluate(make_frame([(None, "A"), (None, None)]), n_bootstrap=100)
        assert ev.n == 2
        assert ev.n_with_truth == 0
        assert value(ev, "accuracy") is None
        assert ev.headline["accuracy"].low is None
        assert value(ev, "coverage") == pytest.approx(0.5)
        assert ev.n_bootstrap == 0

    def test_empty_frame(self) -> None:
        ev = evaluate(pd.DataFrame(columns=PREDICTION_COLUMNS), n_bootstrap=100)
        assert ev.n == 0
        assert value(ev, "coverage") is None
        assert value(ev, "accuracy") is None
        assert ev.labels == ()
        json.loads(ev.to_json())

    def test_labels_outside_the_set_are_added_not_dropped(self) -> None:
        ev = evaluate(make_frame([("A", "A"), ("Z", "A")]), labels=["A"], n_bootstrap=0)
        assert ev.labels == ("A", "Z")
        assert any("Z" in note for note in ev.notes)

    def test_undefined_kappa_is_none(self) -> None:
        ev = evaluate(make_frame([("A", "A"), ("A", "A")]), labels=["A"], n_bootstrap=0)
        assert value(ev, "kappa") is None
        assert value(ev, "accuracy") == 1.0


class TestBootstrap:
    def test_seeded_and_contains_the_point_estimate(self) -> None:
        frame = make_frame(EXAMPLE * 5)
        first = evaluate(frame, labels=["A", "B", "C"], n_bootstrap=500, seed=3)
        again = evaluate(frame, labels=["A", "B", "C"], n_bootstrap=500, seed=3)
        other = evaluate(frame, labels=["A", "B", "C"], n_bootstrap=500, seed=4)
        assert first.headline == again.headline
        assert first.headline != other.headline
        for name, estimate in first.headline.items():
            assert estimate.value is not None, name
            assert estimate.low is not None
            assert estimate.high is not None
            assert estimate.low <= estimate.value <= estimate.high, name
            assert estimate.high - estimate.low < 0.6, name
        assert first.headline["accuracy"].n == 50
        sens_ci = first.per_class[0].sensitivity_ci
        assert sens_ci is not None
        assert sens_ci[0] <= 0.5 <= sens_ci[1]

    def test_no_bootstrap_no_intervals(self) -> None:
        ev = evaluate(make_frame(EXAMPLE), n_bootstrap=0)
        assert ev.headline["accuracy"].low is None
        assert ev.per_class[0].sensitivity_ci is None
        assert ev.per_class[0].ppv_ci is None
        assert ev.per_class[0].npv_ci is None

    def test_vectorised_formulas_match_sklearn(self) -> None:
        rng = np.random.default_rng(0)
        labels = ["A", "B", "C", "D"]
        for _ in range(20):
            y_true = list(rng.choice(labels, size=30))
            y_pred = list(rng.choice([*labels, UNPARSED], size=30))
            index = {label: i for i, label in enumerate([*labels, UNPARSED])}
            counts = np.zeros((4, 5), dtype=np.int64)
            for t, p in zip(y_true, y_pred, strict=True):
                counts[index[t], index[p]] += 1
            stats = _confusion_stats(counts)
            with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
                balanced = balanced_accuracy_score(y_true, y_pred)
            assert float(stats["balanced_accuracy"]) == pytest.approx(balanced)
            assert float(stats["kappa"]) == pytest.approx(cohen_kappa_score(y_true, y_pred))
            for average in ("macro", "weighted"):
                expected = f1_score(
                    y_true, y_pred, labels=labels, average=average, zero_division=np.nan
                )
                assert float(stats[f"{average}_f1"]) == pytest.approx(expected)

    def test_large_run_stays_fast(self) -> None:
        rng = np.random.default_rng(1)
        labels = ["A", "B", "C", "D"]
        rows = list(
            zip(
                rng.choice(labels, 20_000),
                rng.choice(np.array([*labels, None], dtype=object), 20_000),
                strict=True,
            )
        )
        ev = evaluate(make_frame(rows), labels=labels, n_bootstrap=300)
        assert ev.headline["accuracy"].n == 20_000


class TestScores:
    SCORES = (
        {"A": 0.95, "B": 0.05},
        {"A": 0.85, "B": 0.15},
        {"A": 0.25, "B": 0.75},
        {"A": 0.65, "B": 0.35},
    )
    ROWS: tuple[Row, ...] = (("A", "A"), ("A", "A"), ("B", "B"), ("B", "A"))

    def test_roc_auc_and_calibration(self) -> None:
        ev = evaluate(make_frame(self.ROWS, scores=self.SCORES), labels=["A", "B"])
        assert ev.roc_auc == {"A": 1.0, "B": 1.0}
        assert ev.macro_roc_auc == 1.0
        # Perfectly separated in every resample that has both classes.
        assert ev.roc_auc_ci == {"A": (1.0, 1.0), "B": (1.0, 1.0)}
        assert ev.macro_roc_auc_ci == (1.0, 1.0)
        calibration = ev.calibration
        assert calibration is not None
        assert calibration.n == 4
        # |1 - .95| + |1 - .85| + |1 - .75| + |0 - .65|, over 4 records
        assert calibration.ece == pytest.approx(0.275)
        filled = [b for b in calibration.bins if b.count]
        assert [b.count for b in filled] == [1, 1, 1, 1]
        assert filled[0].accuracy == 0.0  # the 0.65 record was wrong

    def test_log_probabilities_are_normalised(self) -> None:
        logs = [{k: math.log(v) for k, v in s.items()} for s in self.SCORES]
        ev = evaluate(make_frame(self.ROWS, scores=logs), labels=["A", "B"])
        assert ev.calibration is not None
        assert ev.calibration.ece == pytest.approx(0.275)
        probs, has = score_matrix([{"A": -1.0, "B": -1.0}, None], ["A", "B"])
        assert probs[0].tolist() == pytest.approx([0.5, 0.5])
        assert has.tolist() == [True, False]

    def test_auc_undefined_without_negatives(self) -> None:
        ev = evaluate(make_frame(list(self.ROWS[:2]), scores=self.SCORES[:2]), labels=["A", "B"])
        assert ev.roc_auc == {"A": None, "B": None}
        assert ev.roc_auc_ci == {"A": None, "B": None}
        assert ev.macro_roc_auc is None
        assert ev.macro_roc_auc_ci is None

    def test_no_scores_no_roc(self) -> None:
        ev = evaluate(make_frame(self.ROWS), labels=["A", "B"])
        assert ev.roc_auc is None
        assert ev.roc_auc_ci is None
        assert ev.calibration is None


class TestDuplicates:
    def test_reported_and_deduped(self) -> None:
        rows: list[Row] = [("A", "A"), ("A", "A"), ("A", "A"), ("B", "A")]
        sha = ["x", "x", "x", "y"]
        counted = evaluate(make_frame(rows, sha=sha), labels=["A", "B"], n_bootstrap=0)
        assert counted.duplicates.copies == 2
        assert counted.duplicates.groups == (("r0", "r1", "r2"),)
        assert not counted.duplicates.deduped
        assert counted.n == 4
        assert value(counted, "accuracy") == pytest.approx(0.75)
        assert any("dedupe" in note for note in counted.notes)

        once = evaluate(make_frame(rows, sha=sha), labels=["A", "B"], n_bootstrap=0, dedupe=True)
        assert once.duplicates.deduped
        assert once.n == 2
        assert value(once, "accuracy") == pytest.approx(0.5)

    def test_conflicting_truths_are_counted(self) -> None:
        rows: list[Row] = [("A", "A"), ("B", "A")]
        ev = evaluate(make_frame(rows, sha=["x", "x"]), labels=["A", "B"], n_bootstrap=0)
        assert ev.duplicates.conflicts == 1

    def test_records_without_hash_are_kept(self) -> None:
        rows: list[Row] = [("A", None), ("A", None)]
        ev = evaluate(make_frame(rows, sha=[None, None]), labels=["A"], dedupe=True)
        assert ev.n == 2
        assert ev.duplicates.copies == 0


class TestCompare:
    def test_mcnemar_hand_example(self) -> None:
        truth = ["A"] * 10
        # Both right on r1-r4, only A right on r0, only B right on r5-r9.
        labels_a = ["A", "A", "A", "A", "A", "B", "B", "B", "B", "B"]
        labels_b = ["B", "A", "A", "A", "A", "A", "A", "A", "A", "A"]
        run_a = make_frame(list(zip(truth, labels_a, strict=True)))
        run_b = make_frame(list(zip(truth, labels_b, strict=True)))
        result = compare(run_a, run_b, n_bootstrap=300)
        assert (result.a_only_correct, result.b_only_correct) == (1, 5)
        # Two-sided exact binomial on 6 discordant pairs: 2 · P(X ≥ 5) = 2 · 7/64
        assert result.mcnemar_p == pytest.approx(14 / 64)
        assert result.accuracy_a == pytest.approx(0.5)
        assert result.accuracy_b == pytest.approx(0.9)
        assert result.difference.value == pytest.approx(0.4)
        assert result.difference.low is not None
        assert result.difference.low <= 0.4 <= (result.difference.high or 0)
        assert [d.record_id for d in result.disagreements] == [
            "r0",
            "r5",
            "r6",
            "r7",
            "r8",
            "r9",
        ]
        assert result.disagreements_frame().shape == (6, 8)

    def test_no_discordant_pairs(self) -> None:
        frame = make_frame(EXAMPLE)
        result = compare(frame, frame)
        assert result.mcnemar_p == 1.0
        assert result.difference.value == 0.0
        assert result.disagreements == ()

    def test_pairs_on_record_ids_only(self) -> None:
        run_a = make_frame([("A", "A"), ("A", "B")], ids=["x", "y"])
        run_b = make_frame([("A", "A"), ("A", "A")], ids=["y", "z"])
        result = compare(run_a, run_b)
        assert (result.n_paired, result.unpaired_a, result.unpaired_b) == (1, 1, 1)
        assert result.b_only_correct == 1

    def test_refuses_unrelated_runs(self) -> None:
        with pytest.raises(ValueError, match="share no record"):
            compare(make_frame(EXAMPLE, ids=list("abcdefghij")), make_frame(EXAMPLE))
        with pytest.raises(ValueError, match="different ground truths"):
            compare(make_frame([("A", "A")]), make_frame([("B", "A")]))


def test_summarize_stays_cheap_and_consistent() -> None:
    frame = make_frame(EXAMPLE)
    summary = summarize(frame)
    assert summary["accuracy"] == pytest.approx(0.6)
    assert summary["coverage"] == pytest.approx(0.9)
    assert summary["accuracy_parsed"] == pytest.approx(6 / 9)


def test_from_run_directory(tmp_path: Path) -> None:
    dataset, runner = load_ecg_sample()
    result = classify(dataset, get_task("ecg"), runner, store=tmp_path, progress=False)
    ev = evaluate(tmp_path, n_bootstrap=200)
    assert ev.labels == get_task("ecg").labels.names
    assert ev.n == len(result.predictions) == 16
    assert value(ev, "accuracy") == pytest.approx(result.metrics["accuracy"])
    assert value(ev, "coverage") == pytest.approx(result.metrics["coverage"])
    assert ev.binary is not None
    assert ev.binary.negative_label == "NORMAL"
    assert ev.latency.n == 0 or ev.latency.median is not None
    payload = json.loads(ev.to_json())
    assert "NaN" not in ev.to_json()
    assert payload["headline"]["accuracy"]["n"] == 16


def _rewrite_manifest(run_dir: Path, **changes: Any) -> None:
    path = run_dir / "manifest.json"
    manifest = json.loads(path.read_text("utf-8"))
    for key, new in changes.items():
        if new is None:
            manifest.pop(key, None)
        else:
            manifest[key] = new
    path.write_text(json.dumps(manifest), "utf-8")


def test_labels_and_negative_come_from_the_manifest(tmp_path: Path) -> None:
    dataset, runner = load_ecg_sample()
    classify(dataset, get_task("ecg"), runner, store=tmp_path, progress=False)
    recorded = json.loads((tmp_path / "manifest.json").read_text("utf-8"))
    assert recorded["labels"] == list(get_task("ecg").labels.names)
    assert recorded["negative_label"] == "NORMAL"
    # The manifest, not today's registry, is what the run was: a changed order and
    # reference label in it are followed.
    order = ["NORMAL", "POST_MI", "ABNORMAL_HEARTBEAT", "MYOCARDIAL_INFARCTION"]
    _rewrite_manifest(tmp_path, labels=order, negative_label="POST_MI")
    ev = evaluate(tmp_path, n_bootstrap=0)
    assert ev.labels == tuple(order)
    assert ev.binary is not None
    assert ev.binary.negative_label == "POST_MI"
    assert not any("older run directory" in note for note in ev.notes)


def test_an_old_manifest_falls_back_to_the_registry_and_says_so(tmp_path: Path) -> None:
    dataset, runner = load_ecg_sample()
    classify(dataset, get_task("ecg"), runner, store=tmp_path, progress=False)
    _rewrite_manifest(tmp_path, labels=None, negative_label=None)
    ev = evaluate(tmp_path, n_bootstrap=0)
    assert ev.labels == get_task("ecg").labels.names
    assert ev.binary is not None
    assert ev.binary.negative_label == "NORMAL"
    assert any("older run directory" in note for note in ev.notes)


def test_roc_points_are_part_of_the_evaluation() -> None:
    from sklearn.metrics import roc_curve

    rows = [("A", "A"), ("A", "B"), ("B", "B"), ("B", "A"), ("A", "A"), ("B", "B")]
    p_a = [0.9, 0.4, 0.2, 0.6, 0.7, 0.1]
    scores = [{"A": p, "B": 1 - p} for p in p_a]
    ev = evaluate(make_frame(rows, scores=scores), n_bootstrap=0)
    assert ev.roc_curves is not None
    curves = {curve.label: curve for curve in ev.roc_curves}
    assert set(curves) == {"A", "B"}
    truth = np.array([t for t, _ in rows])
    fpr, tpr, _ = roc_curve(truth == "A", p_a)
    assert curves["A"].fpr == pytest.approx(fpr.tolist())
    assert curves["A"].tpr == pytest.approx(tpr.tolist())
    assert json.loads(ev.to_json())["roc_curves"][0]["label"] == "A"
    assert evaluate(make_frame(rows), n_bootstrap=0).roc_curves is None
