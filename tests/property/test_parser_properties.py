"""Properties of FinalAnswerParser that must hold for any text."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medbatch.parsing.answer import FinalAnswerParser
from medbatch.records import AnswerStatus
from medbatch.tasks.ecg import ECG_LABELS

PARSER = FinalAnswerParser(ECG_LABELS)
NAMES = list(ECG_LABELS.names)

# Text built from the words the parser reacts to, so that generated answers exercise its
# rules rather than being random noise.
_WORDS = st.sampled_from(
    [
        *NAMES,
        "normal",
        "not",
        "no",
        "FINAL",
        "CLASSIFICATION:",
        "classification",
        "is",
        "consistent",
        "with",
        "**",
        "`",
        "#",
        "|",
        "-",
        "\n",
        "\n\n",
        "old",
        "MI",
        "STEMI",
        "prior",
        "atrial",
        "fibrillation",
        "cannot",
        "be",
        "excluded",
        "or",
        "and",
        ",",
        ".",
        "{",
        "}",
        '"label":',
        '"',
        "ONE",
        "of:",
        "Impression:",
        "likely",
        "_",
        "\\",
    ]
)
ANSWERS = st.one_of(st.text(max_size=400), st.lists(_WORDS, max_size=60).map(" ".join))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=ANSWERS, finish_reason=st.sampled_from([None, "stop", "length"]))
def test_never_raises_and_label_is_in_the_set(text: str, finish_reason: str | None) -> None:
    result = PARSER.parse(text, finish_reason=finish_reason)
    assert result.method != "internal-error", result.evidence
    assert result.label is None or result.label in ECG_LABELS
    assert (result.label is not None) == (result.status is AnswerStatus.PARSED)
    if result.span is not None:
        assert 0 <= result.span[0] <= result.span[1] <= len(text)


_DECORATIONS = st.sampled_from(
    ["{}", "**{}**", "*{}*", "__{}__", "_{}_", "`{}`", "***{}***", "# {}", "| {} |", '"{}"']
)
_CASES = st.sampled_from([str.upper, str.lower, str.title, lambda s: s])
_SPELLINGS = st.sampled_from(["{}", "sep-hyphen", "sep-space"])
_PREAMBLE = st.sampled_from(
    [
        "",
        "STEP 5: no ST elevation, which rules out MYOCARDIAL_INFARCTION.\n\n",
        "Options: NORMAL, ABNORMAL_HEARTBEAT, MYOCARDIAL_INFARCTION, POST_MI.\n\n",
        "The rhythm is not NORMAL.\n\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    label=st.sampled_from(NAMES),
    decoration=_DECORATIONS,
    case=_CASES,
    spelling=_SPELLINGS,
    heading=_DECORATIONS,
    preamble=_PREAMBLE,
)
def test_verdict_is_invariant_to_markdown_and_case(
    label: str, decoration: str, case: object, spelling: str, heading: str, preamble: str
) -> None:
    written = label
    if spelling == "sep-hyphen":
        written = label.replace("_", "-")
    elif spelling == "sep-space":
        written = label.replace("_", " ")
    assert callable(case)
    written = case(written)
    text = f"{preamble}{heading.format('FINAL CLASSIFICATION:')} {decoration.format(written)}"
    result = PARSER.parse(text)
    assert result.label == label, text
    assert result.status is AnswerStatus.PARSED


@settings(max_examples=200, deadline=None)
@given(first=st.sampled_from(NAMES), second=st.sampled_from(NAMES))
def test_two_asserted_labels_are_never_a_parsed_guess(first: str, second: str) -> None:
    result = PARSER.parse(f"FINAL CLASSIFICATION: {first} and {second}")
    if first == second:
        assert result.label == first
    else:
        assert (result.label, result.status) == (None, AnswerStatus.AMBIGUOUS)
