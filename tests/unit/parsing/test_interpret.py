"""A constrained answer cut off by max_tokens is truncated, not an ignored constraint."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from medbatch import AnswerStatus, ImageRef, ListDataset, Record, classify, get_task
from medbatch.canary import CanaryFailedError
from medbatch.parsing.interpret import interpret_response
from medbatch.records import InferenceRequest, InferenceResponse, LabelConstraint, Usage
from medbatch.runners import RunnerCapabilities
from medbatch.testing import FunctionRunner

TASK = get_task("ecg")
LABELS = TASK.labels.names
JSON = LabelConstraint(labels=LABELS, mode="json", reasoning=True)
CHOICE = LabelConstraint(labels=LABELS)


def _response(text: str, finish_reason: str) -> InferenceResponse:
    return InferenceResponse(record_id="r", text=text, finish_reason=finish_reason)


@pytest.mark.parametrize(
    ("text", "constraint"),
    [
        ('{"reasoning": "The rhythm is regular and the ST segment', JSON),
        ('{"reasoning": "Q waves in II, III.", "label": "POST', JSON),
        ("POST", CHOICE),  # a label's first token, then max_tokens
    ],
)
def test_a_cut_off_constrained_answer_is_truncated(text: str, constraint: LabelConstraint) -> None:
    result, ignored = interpret_response(_response(text, "length"), TASK.parser, constraint)
    assert result.status is AnswerStatus.TRUNCATED
    assert result.label is None
    assert ignored is False


def test_a_complete_answer_outside_the_labels_is_still_an_ignored_constraint() -> None:
    response = _response("It looks NORMAL to me.", "stop")
    result, ignored = interpret_response(response, TASK.parser, CHOICE)
    assert ignored is True
    assert result.method.startswith("fallback:")


@pytest.mark.parametrize("constraint", [CHOICE, JSON])
def test_free_text_cut_off_under_a_constraint_is_an_ignored_constraint(
    constraint: LabelConstraint,
) -> None:
    # A server that ignores the constraint and runs into max_tokens writes prose, which no
    # constrained decoder could have produced: that is the back-end's fault, not a cut label.
    response = _response("The rhythm is regular and the ST segment", "length")
    result, ignored = interpret_response(response, TASK.parser, constraint)
    assert ignored is True
    assert result.status is not AnswerStatus.TRUNCATED or result.method.startswith("fallback")


def test_a_cut_off_answer_that_completed_its_label_is_read() -> None:
    text = '{"reasoning": "Regular.", "label": "NORMAL"}'
    result, ignored = interpret_response(_response(text, "length"), TASK.parser, JSON)
    assert (result.label, result.status, ignored) == ("NORMAL", AnswerStatus.PARSED, False)


def _png(i: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (i % 256, 7, 9)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_canary_says_truncated_not_ignored() -> None:
    def cut_off(request: InferenceRequest) -> InferenceResponse:
        return InferenceResponse(
            record_id=request.record_id,
            text='{"reasoning": "The rhythm is regular and',
            finish_reason="length",
            usage=Usage(prompt_tokens=300 * len(request.images) + 10, completion_tokens=8),
        )

    runner = FunctionRunner(
        cut_off,
        capabilities=RunnerCapabilities(expensive=True, constrained_decoding=True),
    )
    records = [
        Record(id=f"r{i:03d}", image=ImageRef.from_bytes(_png(i)), label=LABELS[i % 4])
        for i in range(80)
    ]
    with pytest.raises(CanaryFailedError) as failure:
        classify(ListDataset(records, labels=TASK.labels), TASK, runner, constrained=True)
    message = str(failure.value)
    assert "ignores the constraint" not in message
    assert "cut off by max_tokens" in message
    assert failure.value.report.constraint_validity is None
