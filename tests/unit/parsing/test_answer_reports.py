"""Report-style answers (pool C): headings, candidates, declines, and its generated set."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from medbatch.parsing.answer import FinalAnswerParser
from medbatch.records import AnswerStatus
from medbatch.tasks.ecg import ECG_LABELS, ECG_TASK

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def parser() -> FinalAnswerParser:
    return ECG_TASK.parser  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Rhythm: sawtooth waves.\n\nInterpretation: *atrial flutter*", "ABNORMAL_HEARTBEAT"),
        ("Regular sinus rhythm.\n\n**Interpretation:** Normal", "NORMAL"),
        ("Sinus rhythm, normal axis.\n\nFINAL READ: Normal.", "NORMAL"),
        ("Q waves in III and aVF.\n\nRead: **old MI**.", "POST_MI"),
    ],
)
def test_report_headings_introduce_the_verdict(
    parser: FinalAnswerParser, text: str, label: str
) -> None:
    assert parser.parse(text, finish_reason="stop").label == label


def test_interpretation_without_a_colon_is_no_heading(parser: FinalAnswerParser) -> None:
    # "an interpretation of" names the task, not the verdict: the later verdict decides.
    text = "Here is my interpretation of the tracing; NORMAL P waves.\n\nThe rhythm shows AFib"
    assert parser.parse(text, finish_reason="stop").label == "ABNORMAL_HEARTBEAT"


@pytest.mark.parametrize(
    "text",
    [
        "Impression: old MI versus NORMAL; comparison with a prior tracing needed.",
        "Impression: **Normal** versus `Abnormal heartbeat`; comparison needed.",
        "Impression: Normal versus acute ST-elevation MI; comparison needed.",
        "Impression: atrial fibrillation with rapid ventricular response vs. POST_MI.",
    ],
)
def test_labels_set_against_each_other_are_candidates(parser: FinalAnswerParser, text: str) -> None:
    result = parser.parse(text, finish_reason="stop")
    assert result.label is None
    assert result.status is AnswerStatus.AMBIGUOUS


def test_a_ruled_out_candidate_leaves_the_other(parser: FinalAnswerParser) -> None:
    text = "Impression: POST_MI (vs. acute MI, less likely)."
    assert parser.parse(text, finish_reason="stop").label == "POST_MI"


def test_a_decline_voids_a_hedged_verdict_said_after_it(parser: FinalAnswerParser) -> None:
    text = "I can't give a diagnosis, but the features could suggest atrial fibrillation."
    assert parser.parse(text, finish_reason="stop").label is None
    # An outright explicit verdict still outweighs it.
    text = "I can't give a diagnosis with certainty.\n\nFINAL CLASSIFICATION: POST_MI"
    assert parser.parse(text, finish_reason="stop").label == "POST_MI"


def test_a_negation_after_the_words_qualifying_a_label(parser: FinalAnswerParser) -> None:
    text = (
        "Q waves in III.\n\nAssessment: atrial fibrillation with rapid ventricular "
        "response ruled out; **healed MI**."
    )
    assert parser.parse(text, finish_reason="stop").label == "POST_MI"


# --- pool C --------------------------------------------------------------------------------


def _generator() -> Any:
    path = DATA / "generate_parser_pool_c.py"
    spec = importlib.util.spec_from_file_location("generate_parser_pool_c", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _load() -> list[dict[str, Any]]:
    with (DATA / "parser_pool_c.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def test_pool_c_is_exactly_its_generators_output() -> None:
    written = _load()
    assert written == json.loads(json.dumps(_generator().generate()))
    assert len(written) >= 300
    assert len({item["id"] for item in written}) == len(written)
    for item in written:
        assert item["expected"] is None or item["expected"] in ECG_LABELS
    # Every kind of answer is in it, verdicts and abstentions alike.
    assert {item["trap"] for item in written} == {t.__name__ for t, _ in _generator().TEMPLATES}
    assert sum(item["expected"] is None for item in written) >= 50


def test_pool_c_targets(parser: FinalAnswerParser) -> None:
    # A tuning set: the parser was changed on its misses (held-out figures: the benchmark).
    items = _load()
    exact = wrong = 0
    misses = []
    for item in items:
        got = parser.parse(item["text"], finish_reason=item["finish_reason"]).label
        exact += got == item["expected"]
        if got != item["expected"]:
            misses.append((item["id"], item["trap"], got, item["expected"]))
            wrong += got is not None
    assert exact / len(items) >= 0.97, misses
    assert wrong / len(items) <= 0.01, misses
