"""FakeSnowflake itself: its `response_format` modes and the real errors it raises."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("snowflake.ml.model")

from snowflake.snowpark.exceptions import SnowparkSQLException

from medbatch.constraints import to_snowflake_response_format
from medbatch.records import LabelConstraint
from medbatch.testing.snowflake import FakeSnowflake, honour_response_format

CHOICE = to_snowflake_response_format(LabelConstraint(labels=("MI", "POST_MI", "NORMAL")))
JSON = to_snowflake_response_format(
    LabelConstraint(labels=("MI", "POST_MI"), mode="json", reasoning=True)
)


def test_honoured_answer_is_a_document_of_the_schema() -> None:
    text = "Q waves in III.\n\nFINAL CLASSIFICATION: POST_MI"
    assert json.loads(honour_response_format(text, CHOICE)) == {"label": "POST_MI"}
    both = json.loads(honour_response_format(text, JSON))
    assert list(both) == ["reasoning", "label"]
    assert both["label"] == "POST_MI"


def test_honoured_answer_keeps_a_conforming_document_verbatim() -> None:
    assert honour_response_format('{"label": "NORMAL"}', CHOICE) == '{"label": "NORMAL"}'
    # An extra property breaks strict mode, so it is rebuilt from the text.
    rebuilt = honour_response_format('{"label": "NORMAL", "why": "x"}', CHOICE)
    assert json.loads(rebuilt) == {"label": "NORMAL"}


def test_honoured_answer_names_a_label_even_when_the_text_does_not() -> None:
    assert json.loads(honour_response_format("no idea", CHOICE)) == {"label": "MI"}


def test_unknown_response_format_is_not_guessed() -> None:
    with pytest.raises(NotImplementedError):
        honour_response_format("x", {"type": "json_object"})


def test_get_job_raises_the_real_not_found_error() -> None:
    fake = FakeSnowflake(answer=lambda m, p: "x")
    with pytest.raises(SnowparkSQLException) as raised:
        fake.get_job("DB.PUBLIC.NO_SUCH_JOB")
    assert raised.value.sql_error_code == 2003
