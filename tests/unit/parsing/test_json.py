"""JSONLabelParser: label fields in JSON answers, fenced or not."""

from __future__ import annotations

import pytest

from medbatch.parsing.json import JSONLabelParser
from medbatch.records import AnswerStatus
from medbatch.tasks.ecg import ECG_LABELS


@pytest.fixture(scope="module")
def parser() -> JSONLabelParser:
    return JSONLabelParser(ECG_LABELS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"label": "POST_MI"}', "POST_MI"),
        ('```json\n{"reasoning": "Q waves", "label": "post-MI"}\n```', "POST_MI"),
        (
            'Answer:\n```\n{"Classification": "atrial fibrillation"}\n```\nDone.',
            "ABNORMAL_HEARTBEAT",
        ),
        (
            '{"label": "NORMAL"} ... corrected: {"label": "MYOCARDIAL_INFARCTION"}',
            "MYOCARDIAL_INFARCTION",
        ),
        ('{"reasoning": "{nested braces}", "label": "NORMAL", "confidence": 0.9}', "NORMAL"),
    ],
)
def test_reads_label_fields(parser: JSONLabelParser, text: str, expected: str) -> None:
    result = parser.parse(text)
    assert (result.label, result.status, result.method) == (expected, AnswerStatus.PARSED, "json")
    assert result.span is not None


def test_span_points_at_the_value(parser: JSONLabelParser) -> None:
    text = '{"reasoning": "NORMAL is excluded", "label": "POST_MI"}'
    result = parser.parse(text)
    assert result.span is not None
    assert text[result.span[0] : result.span[1]] == "POST_MI"


@pytest.mark.parametrize(
    "text",
    ['{"label": "LBBB"}', '{"reasoning": "cut off', "no json here", '{"label": null}', "[1, 2]"],
)
def test_no_usable_label(parser: JSONLabelParser, text: str) -> None:
    result = parser.parse(text)
    assert result.label is None
    assert result.status is AnswerStatus.UNPARSEABLE


def test_empty(parser: JSONLabelParser) -> None:
    assert parser.parse(None).status is AnswerStatus.EMPTY
