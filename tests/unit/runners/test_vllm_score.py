"""VLLMRunner in `score` mode on the fake engine: labels by likelihood from `prompt_logprobs`.

The fake's `prompt_logprobs` follow vLLM 0.34.0's shape (checked against the wheel's own
`vllm.logprobs` functions in test_vllm_wheel.py); here the runner's arithmetic is checked
against a table of token log-probabilities the fake model is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

import medbatch.runners.vllm as vllm_module
from medbatch import classify, get_task
from medbatch.datasets.synthetic import SyntheticECGDataset
from medbatch.records import ChatMessage, GenerationParams, LabelConstraint
from medbatch.runners.vllm import VLLMRunner
from medbatch.testing.contracts import make_request
from medbatch.testing.fake_vllm import default_token_logprob, fake_vllm

MEDGEMMA = "google/medgemma-4b-it"
LABELS = ("ST-ELEVATION", "NORMAL", "ST")
SCORE = LabelConstraint(labels=LABELS, mode="score")

# log p(token | previous token) inside the assistant turn; the fake tokenises ST-ELEVATION
# as ST, -, ELEVATION, and ends every turn with <end>.
TABLE = {
    ("<assistant>", "ST"): -0.1,
    ("<assistant>", "NORMAL"): -1.0,
    ("ST", "-"): -1.5,
    ("ST", "<end>"): -2.0,
    ("-", "ELEVATION"): -0.2,
    ("ELEVATION", "<end>"): -0.1,
    ("NORMAL", "<end>"): -0.3,
}
# Sums: ST-ELEVATION -1.9, NORMAL -1.3, ST -2.1. Taking the best token instead of the sum
# would answer ST-ELEVATION (-0.1); dropping the end-of-turn token would answer ST (-0.1).
SUMS = {"ST-ELEVATION": -1.9, "NORMAL": -1.3, "ST": -2.1}


def _table(before: Sequence[str], token: str) -> float:
    if before and (before[-1], token) in TABLE:
        return TABLE[(before[-1], token)]
    return default_token_logprob(before, token)


def _softmax(sums: dict[str, float]) -> dict[str, float]:
    total = sum(math.exp(v) for v in sums.values())
    return {label: math.exp(v) / total for label, v in sums.items()}


def test_score_mode_answers_the_label_whose_tokens_sum_highest() -> None:
    request = make_request("a").model_copy(update={"constraint": SCORE})
    with fake_vllm(token_logprob=_table) as fake, VLLMRunner(model=MEDGEMMA) as runner:
        (response,) = runner.run([request])
    assert response.error is None
    assert response.text == "NORMAL"
    assert response.label_scores is not None
    assert list(response.label_scores) == list(LABELS)
    assert response.label_scores == pytest.approx(_softmax(SUMS), rel=1e-9)
    assert response.usage is not None
    assert response.usage.completion_tokens == 0
    # The prompt's tokens: everything up to and including the assistant role token.
    assert response.usage.prompt_tokens is not None
    assert response.usage.prompt_tokens > 256  # the image
    # The prompt once (to fill the prefix cache), then one prompt per label, each asking
    # for prompt log-probabilities only, from near the end of the prompt.
    first, call = fake.chat_calls
    assert first.conversations == [call.conversations[0][:-1]]
    assert first.kwargs.get("add_generation_prompt", True) is True
    assert call.kwargs["add_generation_prompt"] is False
    assert call.kwargs["continue_final_message"] is False
    assert [conv[-1] for conv in call.conversations] == [
        {"role": "assistant", "content": label} for label in LABELS
    ]
    assert all(conv[:-1] == call.conversations[0][:-1] for conv in call.conversations)
    for params in call.sampling_params:
        assert (params.prompt_logprobs, params.max_tokens, params.temperature) == (0, 1, 0.0)
        # Scored from 16 tokens before the end of the prompt: the image is read from cache.
        assert params.prompt_logprob_start == response.usage.prompt_tokens - 16
        assert params.skip_reading_prefix_cache is False
        assert params.structured_outputs is None


def test_score_mode_follows_the_model_not_the_label_order() -> None:
    flipped = dict(TABLE)
    flipped[("<assistant>", "NORMAL")] = -3.0  # NORMAL now sums to -3.3: ST-ELEVATION wins

    def model(before: Sequence[str], token: str) -> float:
        if before and (before[-1], token) in flipped:
            return flipped[(before[-1], token)]
        return default_token_logprob(before, token)

    request = make_request("a").model_copy(update={"constraint": SCORE})
    with fake_vllm(token_logprob=model), VLLMRunner(model=MEDGEMMA) as runner:
        (response,) = runner.run([request])
    assert response.text == "ST-ELEVATION"
    expected = _softmax({**SUMS, "NORMAL": -3.3})
    assert response.label_scores == pytest.approx(expected, rel=1e-9)


def test_score_requests_share_a_chunk_with_generated_ones() -> None:
    requests = [
        make_request("score1").model_copy(update={"constraint": SCORE}),
        make_request("choice").model_copy(
            update={"constraint": LabelConstraint(labels=LABELS), "params": GenerationParams()}
        ),
        make_request("score2").model_copy(update={"constraint": SCORE}),
        make_request("free"),
    ]
    with (
        fake_vllm(lambda conversation, params: "ST", token_logprob=_table) as fake,
        VLLMRunner(model=MEDGEMMA) as runner,
    ):
        responses = {r.record_id: r for r in runner.run(requests)}
    assert sorted(responses) == ["choice", "free", "score1", "score2"]
    assert responses["score1"].text == responses["score2"].text == "NORMAL"
    assert responses["choice"].text == "ST"
    usage = responses["choice"].usage
    assert usage is not None
    assert usage.completion_tokens == 1
    assert [len(call.conversations) for call in fake.chat_calls] == [2, 2, 2 * len(LABELS)]


def test_a_rejected_score_prompt_fails_only_its_record() -> None:
    poison = make_request("poison").model_copy(
        update={"constraint": SCORE, "messages": (ChatMessage.text("user", "poison prompt"),)}
    )
    good = [make_request(f"ok{i}").model_copy(update={"constraint": SCORE}) for i in range(3)]
    with (
        fake_vllm(token_logprob=_table, fail_on=lambda conv: "poison" in str(conv)),
        VLLMRunner(model=MEDGEMMA) as runner,
    ):
        responses = {r.record_id: r for r in runner.run([good[0], poison, *good[1:]])}
    assert sorted(responses) == ["ok0", "ok1", "ok2", "poison"]
    error = responses["poison"].error
    assert error is not None
    assert error.kind == "runner_error"
    assert all(responses[f"ok{i}"].text == "NORMAL" for i in range(3))


def test_classify_takes_score_mode_on_vllm() -> None:
    dataset = SyntheticECGDataset(3, seed=2, size=(220, 160))
    task = get_task("ecg")
    with fake_vllm():
        result = classify(
            dataset,
            task,
            VLLMRunner(model=MEDGEMMA),
            constrained=task.constraint(mode="score"),
            canary=0,
            limit=3,
        )
    assert len(result.predictions) == 3
    for row in result.predictions.itertuples():
        assert row.status == "parsed"
        assert row.completion_tokens == 0
        assert row.label in task.labels.names


def test_a_labels_log_probability_counts_only_its_own_tokens() -> None:
    # The prompt's tokens add the same constant to every label, which the normalisation
    # cancels; the raw sums show whether they were counted.
    from medbatch.runners.vllm import _label_logprobs

    conversation = [{"role": "user", "content": "Classify this ECG."}]
    with fake_vllm(token_logprob=_table) as fake:
        llm = fake.module.LLM(model=MEDGEMMA)
        params = fake.sampling_params_class(max_tokens=1, prompt_logprobs=0)
        outputs = llm.chat(
            [[*conversation, {"role": "assistant", "content": label}] for label in LABELS],
            sampling_params=params,
            add_generation_prompt=False,
        )
    sums, shared = _label_logprobs(LABELS, outputs)
    assert sums == pytest.approx(SUMS, abs=1e-12)
    # <user> Classify _ this _ ECG . <end> <assistant> (spaces are tokens): what they share.
    assert shared == 9


def test_each_prompt_is_prefilled_about_once() -> None:
    requests = [make_request(f"r{i}").model_copy(update={"constraint": SCORE}) for i in range(4)]
    with fake_vllm(token_logprob=_table) as fake, VLLMRunner(model=MEDGEMMA) as runner:
        responses = list(runner.run(requests))
    assert [r.text for r in responses] == ["NORMAL"] * 4
    prompts = sum(r.usage.prompt_tokens for r in responses if r.usage and r.usage.prompt_tokens)
    # The K=3 continuations read the cached prompt: each computes its label tokens plus at
    # most the 16-token margin, not the prompt and its 256 image tokens again.
    assert fake.prefilled_tokens < prompts + 4 * len(LABELS) * (16 + 5)


def test_labels_diverging_before_the_scored_rows_are_scored_again_in_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As with a chat template whose label turn differs from its generation prompt: scoring
    # is asked to start (margin -5) after the labels' first, differing, tokens.
    monkeypatch.setattr(vllm_module, "_SCORE_START_MARGIN", -5)
    long_labels = ("A" + " x" * 10, "B" + " x" * 10)
    constraint = LabelConstraint(labels=long_labels, mode="score")

    def model(before: Sequence[str], token: str) -> float:
        if token in ("A", "B") and before[-1] == "<assistant>":
            return -2.0 if token == "A" else -0.1
        return -0.5

    request = make_request("a").model_copy(update={"constraint": constraint})
    with fake_vllm(token_logprob=model) as fake, VLLMRunner(model=MEDGEMMA) as runner:
        (response,) = runner.run([request])
    assert response.error is None
    assert response.text == long_labels[1]
    assert response.label_scores == pytest.approx(
        _softmax({long_labels[0]: -2.0, long_labels[1]: -0.1}), rel=1e-9
    )
    # prompt; continuations scored too late; continuations scored in full
    assert [len(call.conversations) for call in fake.chat_calls] == [1, 2, 2]
    assert fake.chat_calls[2].sampling_params[0].prompt_logprob_start is None
