"""Exact label scores from token log-probabilities."""

from __future__ import annotations

import math

import pytest

from medbatch.scoring import (
    label_probabilities,
    label_scores_from_top_logprobs,
    logsumexp,
    sequence_logprob,
)


def test_softmax_over_labels_with_variants() -> None:
    probs = label_probabilities(
        {"NORMAL": [math.log(0.2), math.log(0.1)], "POST_MI": math.log(0.3)}
    )
    # 0.3 (two spellings of NORMAL) vs 0.3 (POST_MI) -> one half each.
    assert probs == pytest.approx({"NORMAL": 0.5, "POST_MI": 0.5})
    assert list(probs) == ["NORMAL", "POST_MI"]


def test_impossible_label_gets_zero_and_sum_is_one() -> None:
    probs = label_probabilities({"A": -0.1, "B": -math.inf, "C": []})
    assert probs["B"] == 0.0
    assert probs["C"] == 0.0
    assert sum(probs.values()) == pytest.approx(1.0)


def test_sequence_logprob_sums_tokens_and_rejects_positive() -> None:
    assert sequence_logprob([-0.5, -0.25]) == pytest.approx(-0.75)
    with pytest.raises(ValueError, match="<= 0"):
        sequence_logprob([0.1])


def test_stability_with_very_negative_values() -> None:
    probs = label_probabilities({"A": -1000.0, "B": -1001.0})
    assert probs["A"] == pytest.approx(1 / (1 + math.exp(-1)))
    assert logsumexp([]) == -math.inf


def test_errors() -> None:
    with pytest.raises(ValueError, match="no labels"):
        label_probabilities({})
    with pytest.raises(ValueError, match="-inf"):
        label_probabilities({"A": -math.inf})


def _item(token: str, logprob: float, top: list[tuple[str, float]]) -> dict[str, object]:
    return {
        "token": token,
        "logprob": logprob,
        "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top],
    }


def test_top_logprobs_first_token_choice() -> None:
    content = [
        _item(
            "POST",
            math.log(0.6),
            [("POST", math.log(0.6)), ("NOR", math.log(0.3)), ("The", math.log(0.1))],
        ),
        _item("_MI", 0.0, [("_MI", 0.0)]),
    ]
    scores = label_scores_from_top_logprobs(content, ["NORMAL", "POST_MI", "ABNORMAL_HEARTBEAT"])
    assert scores == pytest.approx({"NORMAL": 1 / 3, "POST_MI": 2 / 3, "ABNORMAL_HEARTBEAT": 0.0})


def test_top_logprobs_in_json_answer() -> None:
    tokens = ['{"', "label", '":', ' "', "NORMAL", '"}']
    content = [_item(t, -0.01, [(t, -0.01)]) for t in tokens]
    content[4] = _item("NORMAL", math.log(0.9), [("NORMAL", math.log(0.9)), ("AB", math.log(0.1))])
    scores = label_scores_from_top_logprobs(content, ["NORMAL", "ABNORMAL_HEARTBEAT"])
    assert scores == pytest.approx({"NORMAL": 0.9, "ABNORMAL_HEARTBEAT": 0.1})


def test_top_logprobs_ambiguous_prefix_returns_none() -> None:
    content = [_item("POST", -0.1, [("POST", -0.1)])]
    assert label_scores_from_top_logprobs(content, ["POST_MI", "POST_CABG"]) is None
    assert label_scores_from_top_logprobs([], ["A"]) is None
    assert label_scores_from_top_logprobs([_item("Hi", -0.1, [("Hi", -0.1)])], ["A"]) is None
