"""Properties of FinalAnswerParser that must hold for any text."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medbatch.labels import Label, LabelSet
from medbatch.parsing.answer import FinalAnswerParser, _strip_markdown, _Text
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


# --- the fast path equals the slow path ---------------------------------------------------

# Abbreviations (MI, AF, WNL) only match in capitals; modifiers may sit between a synonym's
# words, bracketed or not. Both are where the fast path (first-word index, lower-cased text
# without IGNORECASE) could part from the plain IGNORECASE scan.
_ABBREVIATING = LabelSet(
    labels=(
        Label(
            name="MYOCARDIAL_INFARCTION",
            synonyms=("MI", "STEMI", "acute MI", "myocardial infarction", "heart attack"),
        ),
        Label(name="POST_MI", synonyms=("old MI", "prior myocardial infarction", "history of MI")),
        Label(name="ATRIAL_FIBRILLATION", synonyms=("AF", "AFib", "atrial fibrillation")),
        Label(name="NORMAL", synonyms=("WNL", "normal ECG", "within normal limits")),
    )
)
_DIFFERENTIAL_WORDS = st.sampled_from(
    [
        *("mi", "Mi", "MI", "mI", "af", "Af", "AF", "wnl", "WNL", "Wnl", "afib", "AFIB"),
        *("stemi", "Stemi", "STEMI", "acute", "old", "prior", "(healed)", "(remote)", "history"),
        *("of", "inferior", "myocardial", "infarction", "heart", "attack", "atrial"),
        *("fibrillation", "normal", "NORMAL", "ECG", "within", "limits", "POST_MI", "post-mi"),
        *("Assessment:", "FINAL", "CLASSIFICATION:", "not", "no", "if", "otherwise", "likely"),
        *("\u0130", "\u0131", "\u017f", "\u212a", "é", "ß", "**", "_", "-", ",", ".", "\n"),
    ]
)
_MODIFIERS = ["(healed)", "inferior", "(remote)", "old", "not", "of", "12-lead", "(", ")"]


@st.composite
def _synonym_with_modifiers(draw: st.DrawFn) -> str:
    """A name or synonym of a label, with up to two modifiers between its words, in context."""
    label = draw(st.sampled_from([*_ABBREVIATING.labels, *ECG_LABELS.labels]))
    phrase = draw(st.sampled_from([label.name, *label.synonyms]))
    words: list[str] = []
    for word in phrase.replace("_", " ").split():
        if words:
            words.extend(draw(st.lists(st.sampled_from(_MODIFIERS), max_size=2)))
        words.append(draw(st.sampled_from([word, word.lower(), word.upper(), word.title()])))
    before = draw(st.lists(_DIFFERENTIAL_WORDS, max_size=6))
    after = draw(st.lists(_DIFFERENTIAL_WORDS, max_size=6))
    return " ".join([*before, *words, *after])


_DIFFERENTIAL_TEXT = st.one_of(
    _synonym_with_modifiers(),
    st.lists(_DIFFERENTIAL_WORDS, max_size=40).map(" ".join),
    st.lists(_DIFFERENTIAL_WORDS, max_size=40).map("".join),
    st.text(alphabet="mMiIaAfFwWnNlL \n.-_()\u0130\u0131\u017f\u212a", max_size=80),
)


def _fast_and_slow(labels: LabelSet) -> tuple[FinalAnswerParser, FinalAnswerParser]:
    fast = FinalAnswerParser(labels)
    slow = FinalAnswerParser(labels)
    slow._fast_mentions = False  # the full IGNORECASE scan of every alternative
    return fast, slow


_PAIRS = [_fast_and_slow(_ABBREVIATING), _fast_and_slow(ECG_LABELS)]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_DIFFERENTIAL_TEXT, pair=st.sampled_from(_PAIRS))
def test_fast_and_slow_paths_give_the_same_result(
    text: str, pair: tuple[FinalAnswerParser, FinalAnswerParser]
) -> None:
    fast, slow = pair
    assert fast.parse(text) == slow.parse(text), text


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_DIFFERENTIAL_TEXT, pair=st.sampled_from(_PAIRS))
def test_fast_and_slow_paths_find_the_same_mentions(
    text: str, pair: tuple[FinalAnswerParser, FinalAnswerParser]
) -> None:
    # Finer than the results: most random texts hold no verdict, whatever their mentions.
    fast, slow = pair
    clean, _ = _strip_markdown(text)
    cleaned = _Text.of(clean, fast._grammars)
    assert fast._find_mentions(cleaned) == slow._find_mentions(cleaned), text
