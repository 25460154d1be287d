"""FinalAnswerParser: the verdict, not the first label; measured on the answer corpus."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from medbatch.labels import Label, LabelSet
from medbatch.parsing.answer import TAIL_CHARS, FinalAnswerParser
from medbatch.parsing.base import LabelParser
from medbatch.records import AnswerStatus
from medbatch.tasks.ecg import ECG_LABELS, ECG_TASK
from medbatch.testing.contracts import ParserContract

CORPUS = Path(__file__).resolve().parents[2] / "data" / "parser_corpus.jsonl"


@pytest.fixture(scope="module")
def parser() -> FinalAnswerParser:
    return FinalAnswerParser(ECG_LABELS)


class TestFinalAnswerParserContract(ParserContract):
    """Every `LabelParser` promise, for the parser the ECG task ships."""

    @pytest.fixture
    def parser(self) -> LabelParser:
        return ECG_TASK.parser

    @pytest.fixture
    def answers(self) -> list[tuple[str, str | None]]:
        return [
            (item["text"], item["expected"])
            for item in _corpus()
            if item["finish_reason"] == "stop"
        ]


def _corpus() -> list[dict[str, Any]]:
    with CORPUS.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# --- the corpus ------------------------------------------------------------------------


def test_corpus_is_large_and_well_formed() -> None:
    items = _corpus()
    assert len(items) >= 90
    assert len({item["id"] for item in items}) == len(items)
    statuses = {item["expected_status"] for item in items}
    assert {"parsed", "ambiguous", "unparseable", "truncated", "refusal", "empty"} <= statuses
    for item in items:
        assert item["finish_reason"] in ("stop", "length")
        assert (item["expected"] is None) == (item["expected_status"] != "parsed")
        assert item["expected"] is None or item["expected"] in ECG_LABELS


def test_corpus_exact_match_and_wrong_label_targets(parser: FinalAnswerParser) -> None:
    items = _corpus()
    exact = wrong = 0
    misses = []
    for item in items:
        got = parser.parse(item["text"], finish_reason=item["finish_reason"]).label
        if got == item["expected"]:
            exact += 1
        else:
            misses.append((item["id"], item["trap"], got, item["expected"]))
            wrong += got is not None
    assert exact / len(items) >= 0.97, misses
    assert wrong / len(items) <= 0.01, misses


def test_corpus_statuses_match(parser: FinalAnswerParser) -> None:
    items = _corpus()
    agree = sum(
        parser.parse(item["text"], finish_reason=item["finish_reason"]).status
        == item["expected_status"]
        for item in items
    )
    assert agree / len(items) >= 0.95


# --- the generated corpora (tuning and held-out) ------------------------------------------

GENERATOR = CORPUS.parent / "generate_parser_answers.py"


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("generate_parser_answers", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def _load(name: str) -> list[dict[str, Any]]:
    with (CORPUS.parent / name).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def test_generated_sets_are_exactly_the_generators_output() -> None:
    # Nobody edits an expectation (or a held-out answer) by hand: the files are regenerated.
    generator = _generator()
    for name, arguments in generator.SETS.items():
        written = _load(name)
        assert written == json.loads(json.dumps(generator.generate(**arguments))), name
        assert len(written) >= 300
        assert len({item["id"] for item in written}) == len(written)
        for item in written:
            assert item["expected"] is None or item["expected"] in ECG_LABELS
            assert item["finish_reason"] in ("stop", "length", None)


def test_held_out_holds_phrasings_the_tuning_set_lacks() -> None:
    generator = _generator()
    only_b = [text for text, pool in generator.VERDICTS if pool == "B"]
    tuning = "\n".join(item["text"] for item in _load("parser_tuning.jsonl"))
    held_out = "\n".join(item["text"] for item in _load("parser_heldout.jsonl"))
    for verdict in only_b:
        marker = verdict.split("{V}")[0]
        assert marker not in tuning, marker
    assert sum(verdict.split("{V}")[0] in held_out for verdict in only_b) >= len(only_b) // 2


def test_tuning_set_targets(parser: FinalAnswerParser) -> None:
    # In-sample for the tuning set: the parser was tuned on it. The held-out figure is the
    # benchmark's (benchmarks/parser.py), on purpose not a test to tune against.
    items = _load("parser_tuning.jsonl")
    task_parser = ECG_TASK.parser
    exact = wrong = 0
    misses = []
    for item in items:
        got = task_parser.parse(item["text"], finish_reason=item["finish_reason"]).label
        exact += got == item["expected"]
        if got != item["expected"]:
            misses.append((item["id"], item["trap"], got, item["expected"]))
            wrong += got is not None
    assert exact / len(items) >= 0.97, misses
    assert wrong / len(items) <= 0.01, misses


# --- the rules, one by one ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FINAL CLASSIFICATION: ABNORMAL_HEARTBEAT", "ABNORMAL_HEARTBEAT"),  # NORMAL inside
        ("**FINAL CLASSIFICATION:** **post-MI**", "POST_MI"),
        ("## Final classification\n\n`Post MI`", "POST_MI"),
        ("| **Final classification** | *MYOCARDIAL_INFARCTION* |", "MYOCARDIAL_INFARCTION"),
        ("Final classification: __NORMAL__", "NORMAL"),
        ("FINAL CLASSIFICATION: Acute inferior STEMI.", "MYOCARDIAL_INFARCTION"),
        ("FINAL CLASSIFICATION: old inferior MI", "POST_MI"),  # modifier inside a synonym
        ("FINAL CLASSIFICATION: atrial fibrillation", "ABNORMAL_HEARTBEAT"),
    ],
)
def test_markdown_spelling_and_synonyms(
    parser: FinalAnswerParser, text: str, expected: str
) -> None:
    result = parser.parse(text)
    assert (result.label, result.status) == (expected, AnswerStatus.PARSED)
    assert result.method == "final-heading"


def test_restated_option_list_is_not_the_verdict(parser: FinalAnswerParser) -> None:
    text = (
        "FINAL CLASSIFICATION:\nClassify this ECG as ONE of:\n"
        "- **MYOCARDIAL_INFARCTION**: ST elevation\n- **POST_MI**: Q waves, no ST elevation\n"
        "- **ABNORMAL_HEARTBEAT**: irregular rhythm\n- **NORMAL**: all normal\n\n"
        "Given the Q waves, the answer is **POST_MI**."
    )
    result = parser.parse(text)
    assert result.label == "POST_MI"
    assert result.span is not None
    assert text[result.span[0] : result.span[1]] == "POST_MI"
    assert text.rindex("POST_MI") == result.span[0]


def test_inline_option_list_is_dropped(parser: FinalAnswerParser) -> None:
    text = "Options: MYOCARDIAL_INFARCTION, POST_MI, ABNORMAL_HEARTBEAT or NORMAL."
    assert parser.parse(text).status is AnswerStatus.UNPARSEABLE


@pytest.mark.parametrize(
    "text",
    [
        "FINAL CLASSIFICATION: not NORMAL; the rhythm is irregular: ABNORMAL_HEARTBEAT",
        "FINAL CLASSIFICATION: No ST elevation rules out MYOCARDIAL_INFARCTION. "
        "Irregular rhythm: ABNORMAL_HEARTBEAT.",
        "FINAL CLASSIFICATION: There is no evidence of POST_MI. ABNORMAL_HEARTBEAT.",
    ],
)
def test_negated_mentions_are_skipped(parser: FinalAnswerParser, text: str) -> None:
    assert parser.parse(text).label == "ABNORMAL_HEARTBEAT"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FINAL CLASSIFICATION: **not NORMAL** -> ABNORMAL_HEARTBEAT", "ABNORMAL_HEARTBEAT"),
        ("Conclusion: not NORMAL, POST_MI", "POST_MI"),
        ("Conclusion: neither NORMAL nor POST_MI; ABNORMAL_HEARTBEAT", "ABNORMAL_HEARTBEAT"),
        ("Conclusion: not MYOCARDIAL_INFARCTION or POST_MI. It is NORMAL.", "NORMAL"),
    ],
)
def test_negation_belongs_to_the_nearest_label(
    parser: FinalAnswerParser, text: str, expected: str
) -> None:
    assert parser.parse(text).label == expected


def test_negation_scope_ends_at_a_new_verb(parser: FinalAnswerParser) -> None:
    text = "Conclusion: Q waves without ST elevation indicate POST_MI."
    assert parser.parse(text).label == "POST_MI"


def test_hedged_verdict_takes_the_asserted_label(parser: FinalAnswerParser) -> None:
    text = (
        "FINAL CLASSIFICATION: most consistent with MYOCARDIAL_INFARCTION, although "
        "POST_MI cannot be excluded."
    )
    assert parser.parse(text).label == "MYOCARDIAL_INFARCTION"


def test_far_verdict_after_heading(parser: FinalAnswerParser) -> None:
    filler = "the rate, rhythm, intervals and the morphology of every complex " * 3
    text = f"FINAL CLASSIFICATION:\nAfter reviewing {filler}I place this ECG in POST_MI."
    assert text.index("POST_MI") - text.index("FINAL") > 100
    assert parser.parse(text).label == "POST_MI"


def test_verdict_first_then_analysis(parser: FinalAnswerParser) -> None:
    text = (
        "**Classification: ABNORMAL_HEARTBEAT**\n\nStep 5: the ST segments are normal. "
        "Hyperacute T waves, an early sign of acute MI, are absent."
    )
    assert parser.parse(text).label == "ABNORMAL_HEARTBEAT"


def test_last_final_heading_wins(parser: FinalAnswerParser) -> None:
    text = "FINAL CLASSIFICATION: NORMAL\n\nOn review, Q waves.\n\nFINAL CLASSIFICATION: POST_MI"
    assert parser.parse(text).label == "POST_MI"


@pytest.mark.parametrize(
    "text",
    [
        "FINAL CLASSIFICATION: MYOCARDIAL_INFARCTION and ABNORMAL_HEARTBEAT",
        "FINAL CLASSIFICATION: either POST_MI or MYOCARDIAL_INFARCTION",
    ],
)
def test_two_asserted_labels_are_ambiguous(parser: FinalAnswerParser, text: str) -> None:
    result = parser.parse(text)
    assert (result.label, result.status) == (None, AnswerStatus.AMBIGUOUS)
    assert result.evidence is not None
    assert "MYOCARDIAL_INFARCTION" in result.evidence


def test_truncated_before_verdict_is_not_guessed(parser: FinalAnswerParser) -> None:
    text = "STEP 5: ST elevation in II, III, aVF consistent with inferior STEMI.\nSTEP 6: T wa"
    # The back-end says the answer is complete: its last verdict-like sentence decides.
    assert parser.parse(text, finish_reason="stop").label == "MYOCARDIAL_INFARCTION"
    result = parser.parse(text, finish_reason="length")
    assert (result.label, result.status) == (None, AnswerStatus.TRUNCATED)
    # No finish reason, and the answer stops mid-word: read as cut off, no guess.
    result = parser.parse(text)
    assert (result.label, result.method) == (None, "cut-off")


def test_truncated_after_explicit_verdict_keeps_it(parser: FinalAnswerParser) -> None:
    text = "FINAL CLASSIFICATION: POST_MI\n\nRationale: the Q waves in II, III and"
    assert parser.parse(text, finish_reason="length").label == "POST_MI"


def test_truncated_inside_the_label_word(parser: FinalAnswerParser) -> None:
    result = parser.parse("FINAL CLASSIFICATION: NORMAL", finish_reason="length")
    assert result.status is AnswerStatus.TRUNCATED  # could have been "NORMAL_..." cut short


@pytest.mark.parametrize(
    ("text", "status"),
    [
        (None, AnswerStatus.EMPTY),
        ("", AnswerStatus.EMPTY),
        ("  \n ", AnswerStatus.EMPTY),
        ("I'm sorry, but I cannot provide a medical diagnosis.", AnswerStatus.REFUSAL),
        ("The tracing is abnormal.", AnswerStatus.UNPARSEABLE),
    ],
)
def test_no_verdict_statuses(parser: FinalAnswerParser, text: str | None, status: str) -> None:
    result = parser.parse(text)
    assert (result.label, result.status) == (None, status)


def test_exact_and_json_methods(parser: FinalAnswerParser) -> None:
    assert parser.parse(" POST_MI\n").method == "exact"
    result = parser.parse('```json\n{"reasoning": "not NORMAL", "label": "NORMAL"}\n```')
    assert (result.label, result.method) == ("NORMAL", "json")


def test_adjective_use_of_a_label_word_is_not_a_verdict(parser: FinalAnswerParser) -> None:
    text = "FINAL CLASSIFICATION: normal sinus rhythm with an old inferior MI"
    assert parser.parse(text).label == "POST_MI"


def test_parser_is_generic_over_label_sets() -> None:
    labels = LabelSet(
        labels=(
            Label(name="PNEUMONIA", synonyms=("consolidation",)),
            Label(name="NO_FINDING", synonyms=("normal chest x-ray",)),
            Label(name="EFFUSION", synonyms=("pleural effusion",)),
        )
    )
    parser = FinalAnswerParser(labels)
    text = "Impression: no pleural effusion. Right lower lobe consolidation."
    result = parser.parse(text)
    assert (result.label, result.status) == ("PNEUMONIA", AnswerStatus.PARSED)


def test_sole_mention_can_be_turned_off() -> None:
    text = "ST elevation in V1-V4 with tombstoning; STEMI."
    assert FinalAnswerParser(ECG_LABELS).parse(text).method == "sole-mention"
    strict = FinalAnswerParser(ECG_LABELS, allow_sole_mention=False)
    assert strict.parse(text).status is AnswerStatus.UNPARSEABLE


# --- a label only from a verdict (issue 15) ----------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "FINAL CLASSIFICATION: POST_MI if the Q waves are pathological, otherwise NORMAL.",
        "If the Q waves are pathological, this would be POST_MI; if not, NORMAL.",
        "Should the ST changes be acute, MYOCARDIAL_INFARCTION would be the answer; "
        "otherwise POST_MI.",
    ],
)
def test_a_conditional_verdict_is_no_verdict(parser: FinalAnswerParser, text: str) -> None:
    result = parser.parse(text, finish_reason="stop")
    assert (result.label, result.status) == (None, AnswerStatus.UNPARSEABLE)


def test_a_condition_ends_at_a_contrast(parser: FinalAnswerParser) -> None:
    text = (
        "FINAL CLASSIFICATION: If there were ST elevation this would be MYOCARDIAL_INFARCTION, "
        "but since all findings are within normal limits the answer is NORMAL."
    )
    assert parser.parse(text).label == "NORMAL"


def test_another_label_that_would_apply_does_not_replace_a_hedged_verdict(
    parser: FinalAnswerParser,
) -> None:
    text = (
        "**FINAL CLASSIFICATION:** Normal (most likely). MYOCARDIAL_INFARCTION would apply "
        "only if there were acute ST elevation."
    )
    assert parser.parse(text).label == "NORMAL"


@pytest.mark.parametrize(
    "closing",
    [
        "I cannot confidently assign a single classification to this ECG.",
        "Given the image quality, I am unable to determine a definitive classification.",
        "It could be either POST_MI or acute inferior STEMI; a prior ECG is needed.",
    ],
)
def test_findings_then_no_verdict_is_not_read_from_the_findings(
    parser: FinalAnswerParser, closing: str
) -> None:
    findings = (
        "STEP 1: Rate 110-130 bpm, irregularly irregular rhythm.\n"
        "STEP 4: Q waves in III, consistent with an old inferior MI.\n\n"
    )
    result = parser.parse(findings + closing, finish_reason="stop")
    assert result.label is None, result


def test_a_refusal_before_an_explicit_verdict_does_not_hide_it(parser: FinalAnswerParser) -> None:
    text = "As an AI I cannot give medical advice.\n\nFINAL CLASSIFICATION: POST_MI"
    assert parser.parse(text).label == "POST_MI"


def test_checklist_with_emoji_marks_then_answer(parser: FinalAnswerParser) -> None:
    text = (
        "**FINAL CLASSIFICATION:**\n"
        "- MYOCARDIAL_INFARCTION ❌\n- POST_MI ❌\n- ABNORMAL_HEARTBEAT ✅\n- NORMAL ❌\n\n"
        "**Answer: ABNORMAL_HEARTBEAT**"
    )
    assert parser.parse(text).label == "ABNORMAL_HEARTBEAT"


@pytest.mark.parametrize(
    "verdict",
    [
        "prior (healed) anterior myocardial infarction",
        "old (remote) inferior infarct",
        "history of inferior MI",
        "evidence of a previous heart attack",
    ],
)
def test_old_infarct_wordings_are_post_mi(parser: FinalAnswerParser, verdict: str) -> None:
    assert parser.parse(f"FINAL CLASSIFICATION: {verdict}.").label == "POST_MI"


def test_a_plain_word_counts_only_on_the_line_after_the_cue(parser: FinalAnswerParser) -> None:
    text = (
        "**Classification:** **acute myocardial infarction**\n\n"
        "Rationale: the findings fit this category best.\n\n- PR interval 160 ms (normal)."
    )
    assert parser.parse(text).label == "MYOCARDIAL_INFARCTION"


def test_the_ecg_is_not_normal_then_classification(parser: FinalAnswerParser) -> None:
    text = "The ECG is not NORMAL. Q waves in III and aVF.\n\nClassification: **POST_MI**"
    assert parser.parse(text).label == "POST_MI"


@pytest.mark.parametrize("text", ["Conclusion: no doubt POST_MI.", "Conclusion: not only POST_MI."])
def test_negation_exemptions(parser: FinalAnswerParser, text: str) -> None:
    # "no doubt" and "not only" affirm; without the exemption they would negate POST_MI.
    assert parser.parse(text).label == "POST_MI"


def test_short_abbreviations_match_only_in_capitals() -> None:
    labels = LabelSet(
        labels=(
            Label(name="MYOCARDIAL_INFARCTION", synonyms=("MI",)),
            Label(name="NORMAL"),
        )
    )
    parser = FinalAnswerParser(labels)
    assert parser.parse("Assessment: MI.").label == "MYOCARDIAL_INFARCTION"
    for text in ("Assessment: mi.", "Assessment: Mi."):
        assert parser.parse(text).label is None, text


# --- task vocabulary is injected, not built in ---------------------------------------------


def test_subject_nouns_are_the_tasks() -> None:
    labels = LabelSet.from_names(["PNEUMONIA", "NORMAL"])
    text = "Findings: opacity.\nThe {} shows PNEUMONIA.\nNo effusion."
    generic = FinalAnswerParser(labels)
    assert generic.parse(text.format("image")).label == "PNEUMONIA"
    assert generic.parse(text.format("ECG")).label is None
    assert generic.parse(text.format("radiograph")).label is None
    chest = FinalAnswerParser(labels, subject_nouns=("radiograph", "chest x-ray"))
    assert chest.parse(text.format("radiograph")).label == "PNEUMONIA"
    assert chest.parse(text.format("chest X-ray")).label == "PNEUMONIA"


def test_the_ecg_task_names_its_nouns() -> None:
    assert "tracing" in ECG_TASK.parser.subject_nouns  # type: ignore[attr-defined]
    text = "Findings: Q waves.\nThe tracing shows POST_MI.\nNo arrhythmia."
    assert ECG_TASK.parser.parse(text).label == "POST_MI"


@pytest.mark.parametrize("nouns", [(), ("ECG?",), ("a|b",)])
def test_bad_subject_nouns_are_refused(nouns: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="subject_nouns"):
        FinalAnswerParser(ECG_LABELS, subject_nouns=nouns)


# --- size (issue 17) ---------------------------------------------------------------------------


def test_only_the_tail_of_a_long_answer_is_read(parser: FinalAnswerParser) -> None:
    filler = "- the rhythm was reviewed again and nothing new was found.\n" * 4000
    assert len(filler) > 4 * TAIL_CHARS
    text = "FINAL CLASSIFICATION: NORMAL\n" + filler + "FINAL CLASSIFICATION: **POST_MI**\n"
    result = parser.parse(text)
    assert (result.label, result.method) == ("POST_MI", "final-heading (last 32 KiB)")
    assert result.span is not None
    assert text[result.span[0] : result.span[1]] == "POST_MI"
    # A verdict only at the start of a long answer is out of reach, and says so.
    result = parser.parse("FINAL CLASSIFICATION: NORMAL\n" + filler)
    assert result.label is None
    assert result.method.endswith("(last 32 KiB)")


def test_a_huge_answer_is_parsed_in_bounded_time(parser: FinalAnswerParser) -> None:
    # Was ~14 s at 2 MB: searches for a sentence end ran to the end of the text each time.
    text = "consistent with old MI, " * 90_000
    started = time.perf_counter()
    parser.parse(text)
    assert time.perf_counter() - started < 5.0


def test_a_task_file_passes_its_subject_nouns(tmp_path: Path) -> None:
    from medbatch.tasks.config import load_task_file

    source = (Path(__file__).resolve().parents[3] / "examples" / "skin_lesion_task.toml").read_text(
        encoding="utf-8"
    )
    path = tmp_path / "task.toml"
    path.write_text(source + '\n[parser]\nsubject_nouns = ["lesion"]\n', encoding="utf-8")
    text = "Symmetric, two colours.\nThe lesion shows MELANOMA.\nFollow up advised."
    assert load_task_file(path).parser.parse(text).label == "MELANOMA"
    plain = tmp_path / "plain.toml"
    plain.write_text(source, encoding="utf-8")
    assert load_task_file(plain).parser.parse(text).label is None  # "lesion" is not a default


def test_a_declined_classification_is_no_verdict(parser: FinalAnswerParser) -> None:
    # "the classification" is what the sentence declines, not a cue; and the finding named
    # last ("irregularly irregular rhythm") is no verdict in an answer that declines.
    text = (
        "I cannot determine the classification from this image. "
        "Findings: irregularly irregular rhythm, no P waves."
    )
    result = parser.parse(text)
    assert (result.label, result.status) == (None, AnswerStatus.REFUSAL)


def test_a_verdict_after_a_declining_sentence_still_counts(parser: FinalAnswerParser) -> None:
    text = "I cannot determine the axis reliably.\n\nClassification: POST_MI"
    assert parser.parse(text).label == "POST_MI"


def test_an_open_think_block_cut_off_has_no_verdict(parser: FinalAnswerParser) -> None:
    text = "<think>\nQ waves in V1-V3, ST isoelectric. So the answer is probably POST_MI, but"
    result = parser.parse(text, finish_reason="length")
    assert (result.label, result.status) == (None, AnswerStatus.TRUNCATED)


def test_the_answer_after_a_think_block_decides(parser: FinalAnswerParser) -> None:
    text = "<think>Maybe the answer is NORMAL.</think>\n\nST elevation V2-V4; STEMI."
    result = parser.parse(text)
    assert result.label == "MYOCARDIAL_INFARCTION"
    assert result.span is not None
    assert text[result.span[0] : result.span[1]] == "STEMI"


@pytest.mark.parametrize("ending", ["## Classification\n\n", "**Final classification:** "])
def test_an_answer_cut_off_at_its_verdict_cue_has_no_verdict(
    parser: FinalAnswerParser, ending: str
) -> None:
    text = f"## Summary\n\n- Rate: normal\n- Rhythm: regular\n\n{ending}"
    result = parser.parse(text, finish_reason="length")
    assert (result.label, result.status) == (None, AnswerStatus.TRUNCATED)


def test_an_answer_cut_off_after_its_verdict_keeps_it(parser: FinalAnswerParser) -> None:
    text = "## Classification\n\nPOST_MI\n\n## Reasoning\n\nQ waves in III and"
    assert parser.parse(text, finish_reason="length").label == "POST_MI"


@pytest.mark.parametrize(
    ("text", "label"),
    [
        (
            "POST_MI\n\nReasoning: Q waves in II, III, aVF; no ST elevation. No arrhythmia.",
            "POST_MI",
        ),
        ("NORMAL.\n\nRegular sinus rhythm. This is not MYOCARDIAL_INFARCTION.", "NORMAL"),
        # Every option on its own line is a list, not a verdict.
        ("NORMAL\nABNORMAL_HEARTBEAT\nPOST_MI\n\nLooking at lead II, the rhythm", None),
        ("NORMAL\n\nPOST_MI\n\nQ waves in III; hard to say.", None),
        # A verdict first is still no verdict in an answer that declines.
        ("POST_MI\n\nI cannot confidently assign a single classification.", None),
    ],
)
def test_a_label_alone_on_the_first_line_is_the_verdict(
    parser: FinalAnswerParser, text: str, label: str | None
) -> None:
    assert parser.parse(text).label == label
