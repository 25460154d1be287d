"""`mention_table`: cheap to build, its patterns compiled only when an answer needs them."""

from __future__ import annotations

import re

import pytest

from medbatch.labels import Label, LabelSet
from medbatch.parsing.cues import Text
from medbatch.parsing.mentions import mention_table
from medbatch.tasks.ecg import ECG_LABELS, ECG_TASK

# Abbreviations in and out of capitals, names with varied separators, gap words.
TEXTS = [
    "Old inferior MI; mi is not a word here, nor Mi. post-MI changes.",
    "FINAL CLASSIFICATION: POST_MI (prior anterior MI), not NORMAL sinus rhythm",
    "afib vs AF vs Atrial Fibrillation; myocardial infarction, acute STEMI",
    "normal ecg. Abnormal heartbeat? ABNORMAL_HEARTBEAT",
    "an svt or Svt is not SVT: only capitals name it (SVT)",
]


def _labels() -> LabelSet:
    return LabelSet(
        labels=(
            Label(name="NORMAL", synonyms=("plain sinus rhythm", "no findings")),
            Label(name="MI", synonyms=("old heart attack",)),
        )
    )


def test_building_a_table_compiles_only_the_start_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[str] = []
    real_compile = re.compile

    def counting(pattern: str, flags: int = 0) -> re.Pattern[str]:
        compiled.append(pattern)
        return real_compile(pattern, flags)

    monkeypatch.setattr(re, "compile", counting)
    table = mention_table.__wrapped__(_labels())  # past the cache: built here
    # The start scan and the bare-label bound; no alternation of phrases yet.
    assert len(compiled) == 2
    text = Text.of("the answer: old heart attack", ECG_TASK.parser._grammars)
    assert [table.group_label[group] for group, _, _ in table.matches(text)] == ["MI"]
    assert len(compiled) == 3  # the one first word the answer met ("old")


def test_lazy_patterns_read_like_the_eager_ones() -> None:
    table = mention_table(ECG_LABELS)
    assert set(table.by_first_word) == set(table.folded_by_first_word)
    assert len(table.by_first_word) > 10
    for word in table.by_first_word:
        assert table.by_first_word[word].flags & re.IGNORECASE
        assert not table.folded_by_first_word[word].flags & re.IGNORECASE
        assert table.folded_by_first_word[word] is table.folded_by_first_word[word]
    assert table.pattern.flags & re.IGNORECASE
    assert table.pattern is table.pattern


@pytest.mark.parametrize("answer", TEXTS)
def test_fast_matches_equal_the_full_scan(answer: str) -> None:
    table = mention_table(ECG_LABELS)
    text = Text.of(answer, ECG_TASK.parser._grammars)
    reference = [
        (found.lastgroup, found.start(), found.end()) for found in table.pattern.finditer(answer)
    ]
    assert list(table.matches(text)) == reference
    assert list(table.matches(text, fast=False)) == reference
    assert reference  # every text names some label
