"""Label mentions for `FinalAnswerParser`: where an answer names a label or a synonym.

Holds `Mention` (one found mention and what its context says) and `MentionTable` (one
regex alternation over a `LabelSet`'s names and synonyms, plus the first-word index and
lower-case compilation that find exactly the same matches faster; the differential
property tests hold the two to each other), built once per label set by `mention_table`.

Must not import: `medbatch.parsing.answer` (the decision) or `medbatch.parsing.scope`;
only the cue module's `Text`, and `medbatch.labels`.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from medbatch.labels import LabelSet, fold_label_text
from medbatch.parsing.cues import Text

__all__ = [
    "NEXT_WORD",
    "SEPARATOR_CHAR",
    "Mention",
    "MentionTable",
    "bare_first_line",
    "looks_cut_off",
    "mention_table",
]

# A non-empty line, without its surrounding blanks.
_LINE = re.compile(r"[^\S\n]*(\S[^\n]*?)[^\S\n]*$", re.MULTILINE)

_SEPARATORS = r"[ \t_\-]"
SEPARATOR_CHAR = re.compile(r"[\s_\-]")
NEXT_WORD = re.compile(r"[ \t]+([A-Za-z][A-Za-z\-]*)")
# Possessive quantifiers spare the engine backtracking; Python 3.10's `re` lacks them. The
# classes they follow are disjoint from what comes next, so plain ones match the same text.
_POSSESSIVE = "+" if sys.version_info >= (3, 11) else ""
# Up to two modifier words between the words of a synonym ("old *inferior* MI"), but never a
# word that changes its meaning.
_GAP_WORD = (
    # A modifier may sit in brackets: "prior (healed) anterior MI".
    r"(?:\(?(?!(?:and|or|with|without|no|not|new|but|vs|versus|than|of|is|are|was|were|the|"
    r"an?|to|in|on|at|from|by|as|indicat\w*|suggest\w*|consistent|show\w*)\b)"
    r"[A-Za-z0-9][A-Za-z0-9'/\-]*" + _POSSESSIVE + r"\)?[ \t]+" + _POSSESSIVE + ")"
)


class Mention(NamedTuple):
    """A label mention in the cleaned text (a tuple: built several times per answer)."""

    label: str
    start: int
    end: int
    canonical: bool  # written as the label name in capitals / with underscores
    plain: bool  # one ordinary lower-case word ("normal"), the least specific kind
    negated: bool
    weak: bool
    in_options: bool
    conditional: bool  # in a clause with "if", "unless", "otherwise": not asserted

    @property
    def considered(self) -> bool:
        return not self.negated and not self.in_options and not self.conditional


class _LazyPatterns(Mapping[str, re.Pattern[str]]):
    """Regexes by key, each compiled on first use.

    Building a label set's table compiled ~80 alternations (~0.1 s, a fifth of the client
    time of a 2,000-answer run) although an answer corpus meets only a few first words, and
    the cased patterns serve only the rare abbreviation written in the wrong case.
    """

    def __init__(self, sources: Mapping[str, str], flags: int) -> None:
        self._sources = dict(sources)
        self._flags = flags
        self._compiled: dict[str, re.Pattern[str]] = {}

    def __getitem__(self, key: str) -> re.Pattern[str]:
        compiled = self._compiled.get(key)
        if compiled is None:
            # Two threads may both compile a pattern; both results are equal.
            compiled = self._compiled[key] = re.compile(self._sources[key], self._flags)
        return compiled

    def __iter__(self) -> Iterator[str]:
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)


@dataclass(frozen=True)
class MentionTable:
    """Everything the parser needs to find a `LabelSet`'s mentions, built once per set.

    `pattern` is one alternation over every name and synonym, longest first, in named
    groups. Trying its ~70 alternatives at every position of a long answer was the parser's
    main cost, so when the set allows it `starts` finds the few word starts where the
    lower-cased text begins with the first word of some phrase, and only the alternatives
    that can begin with that word (`by_first_word`, same order, same group names) are
    tried there, on the lower-cased text without IGNORECASE (much cheaper per alternative).
    """

    pattern_source: str  # the regex of `pattern`, compiled when first asked for
    group_label: Mapping[str, str]
    group_is_name: Mapping[str, bool]
    starts: re.Pattern[str] | None  # over " " + clean.lower(); None: use `pattern` alone
    by_first_word: Mapping[str, re.Pattern[str]]  # by the first word `starts` found
    folded_by_first_word: Mapping[str, re.Pattern[str]]  # the same, for lower-cased text
    abbreviations: Mapping[str, str]  # group -> the capitals it must be written in ("MI")
    bare_label_too_long: re.Pattern[str]  # matches text with more letters than any phrase
    _pattern: _LazyPatterns = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Only the reference scan and label sets without `starts` need the full alternation.
        lazy = _LazyPatterns({"": self.pattern_source}, re.IGNORECASE)
        object.__setattr__(self, "_pattern", lazy)

    @property
    def pattern(self) -> re.Pattern[str]:
        """The alternation over every name and synonym (compiled on first use)."""
        return self._pattern[""]

    def matches(self, text: Text, *, fast: bool = True) -> Iterator[tuple[str, int, int]]:
        """`(group, start, end)` of exactly the matches of `pattern.finditer(text.clean)`.

        `fast=False` runs that full scan itself: the reference the fast path must equal.
        """
        clean = text.clean
        if not fast or self.starts is None or not text.lowered:
            for match in self.pattern.finditer(clean):
                if match.lastgroup is not None:
                    yield match.lastgroup, match.start(), match.end()
            return
        resume = 0  # finditer never reports overlapping matches
        # The leading space lets a mention start at 0; `found.start()` is then its position
        # in `clean`.
        for found in self.starts.finditer(" " + text.folded):
            position = found.start()
            if position < resume:
                continue
            mention = self._match_at(text, found.group(1), position)
            if mention is not None:
                resume = mention.end()
                if mention.lastgroup is not None:  # always: every alternative is a named group
                    yield mention.lastgroup, position, mention.end()

    def _match_at(self, text: Text, word: str, position: int) -> re.Match[str] | None:
        """`pattern.match(text.clean, position)`, knowing the text there starts with `word`."""
        match = self.folded_by_first_word[word].match(text.folded, position)
        group = None if match is None else match.lastgroup
        if match is None or group is None or group not in self.abbreviations:
            return match
        if text.clean[position : match.end()] == self.abbreviations[group]:
            return match
        # Lower-cased text cannot tell "MI" from "mi"; the cased pattern can. Every other
        # alternative matches alike in both, so only this case needs asking again.
        return self.by_first_word[word].match(text.clean, position)


@functools.lru_cache(maxsize=64)
def mention_table(labels: LabelSet) -> MentionTable:
    """The mention patterns of `labels` (cached: a parser may be built per task or run)."""
    entries: list[tuple[str, str, bool]] = []
    for label in labels:
        entries.append((label.name, label.name, True))
        entries.extend((synonym, label.name, False) for synonym in label.synonyms)
    entries.sort(key=lambda entry: len(entry[0]), reverse=True)
    alternatives: list[tuple[str, str]] = []  # (lower-cased first word, named group)
    folded_alternatives: list[str] = []  # the same groups, for lower-cased text
    group_label: dict[str, str] = {}
    group_is_name: dict[str, bool] = {}
    abbreviations: dict[str, str] = {}
    # What may follow each first word: a non-letter (one-word phrases), else what leads to
    # the second word (see `_second_word_ahead`).
    follows: dict[str, set[str]] = {}
    ascii_words = True
    for number, (phrase, name, is_name) in enumerate(entries):
        pattern = _phrase_pattern(phrase, is_name=is_name)
        if pattern is None:
            continue
        group = f"p{number}"
        group_label[group] = name
        group_is_name[group] = is_name
        words = [word.lower() for word in _phrase_words(phrase)]
        ascii_words = ascii_words and all(word.isascii() for word in words)
        alternatives.append((words[0], f"(?P<{group}>{pattern})"))
        folded = _phrase_pattern(phrase, is_name=is_name, folded=True)
        folded_alternatives.append(f"(?P<{group}>{folded})")
        if _is_abbreviation(phrase, is_name=is_name):
            abbreviations[group] = _phrase_words(phrase)[0]
        after = follows.setdefault(words[0], set())
        after.add("(?![a-z0-9])" if len(words) == 1 else _second_word_ahead(words, is_name=is_name))
    starts = None
    by_first_word: dict[str, str] = {}  # regex sources, compiled on first use
    folded_by_first_word: dict[str, str] = {}
    if alternatives and ascii_words:
        # Longest word first, so the group that matches names the longest first word the
        # text starts with; every phrase that can match there starts with a prefix of that
        # word. The character before a start is not a letter or digit (the lookbehind).
        first_words = sorted(follows, key=len, reverse=True)
        starts = re.compile(r"[^a-z0-9](?=(" + _by_first_letter(first_words, follows) + "))")
        for word in first_words:
            chosen = [n for n, (first, _) in enumerate(alternatives) if word.startswith(first)]
            by_first_word[word] = _alternation_source([alternatives[n][1] for n in chosen])
            folded_by_first_word[word] = _alternation_source(
                [folded_alternatives[n] for n in chosen]
            )
    return MentionTable(
        pattern_source=_alternation_source([alt for _, alt in alternatives]),
        group_label=group_label,
        group_is_name=group_is_name,
        starts=starts,
        by_first_word=_LazyPatterns(by_first_word, re.IGNORECASE),
        folded_by_first_word=_LazyPatterns(folded_by_first_word, 0),
        abbreviations=abbreviations,
        bare_label_too_long=_more_letters_than(labels),
    )


def _by_first_letter(words: list[str], follows: Mapping[str, set[str]]) -> str:
    """An alternation of `words`, each followed by a lookahead of what may follow it.

    Nested by first letter (`a(?:cute(?=...)|bnormal(?=...))|n(?:ormal...)`), keeping the
    order of `words` within each letter: the regex engine rejects an alternative by its
    first literal character, so this tries ~15 letters at each start instead of ~40 words.
    One unnamed group around it all, as named groups would prevent that quick rejection.
    """
    by_letter: dict[str, list[str]] = {}
    for word in words:
        ahead = "(?=" + "|".join(sorted(follows[word])) + ")"
        by_letter.setdefault(word[0], []).append(re.escape(word[1:]) + ahead)
    return "|".join(
        f"{re.escape(letter)}(?:{'|'.join(rests)})" for letter, rests in by_letter.items()
    )


def _second_word_ahead(words: list[str], *, is_name: bool) -> str:
    """What follows the first word of a phrase up to its second, in lower-cased text.

    `_phrase_pattern` without the modifier-word exclusions, so it holds wherever the
    phrase matches. Checking it while scanning for starts spares the full alternation at
    the many starts that only share a first word ("ST segment" for "ST elevation MI").
    """
    second = re.escape(words[1])
    if is_name:
        return f"{_SEPARATORS}*{second}"
    return rf"(?:{_SEPARATORS}+|[ \t]+(?:\(?[a-z0-9][a-z0-9'/\-]*\)?[ \t]+){{1,2}}){second}"


def _alternation_source(alternatives: list[str]) -> str:
    return r"(?<![A-Za-z0-9])(?:" + "|".join(alternatives) + r")(?![A-Za-z0-9])"


def _more_letters_than(labels: LabelSet) -> re.Pattern[str]:
    """A pattern matching text with more letters and digits than any name or synonym has.

    `LabelSet.normalize` folds the whole answer before looking it up, as costly on a long
    answer as the rest of a parse. It only drops punctuation, spaces and markup (and
    lower-casing never turns a letter or digit into something else; checked over all of
    Unicode), so an answer with more letters and digits than the longest phrase is not a
    bare label. `[^\\W_]` is exactly `str.isalnum`.
    """
    most = max(
        sum(char.isalnum() for char in fold_label_text(phrase))
        for label in labels
        for phrase in (label.name, *label.synonyms)
    )
    return re.compile(rf"(?:[\W_]*[^\W_]){{{most + 1}}}")


def _phrase_words(phrase: str) -> list[str]:
    return [w for w in re.split(r"[\s_\-]+", phrase.strip()) if w]


def _is_abbreviation(phrase: str, *, is_name: bool) -> bool:
    """Short abbreviations ("MI", "AF") match only in capitals: "mi" or "af" are other words."""
    words = _phrase_words(phrase)
    return len(words) == 1 and not is_name and len(words[0]) <= 3 and words[0].isupper()


def _phrase_pattern(phrase: str, *, is_name: bool, folded: bool = False) -> str | None:
    """The regex of one name or synonym; `folded`: for lower-cased text, without IGNORECASE.

    A folded abbreviation also matches other spellings ("mi"); the caller checks the case.
    """
    words = _phrase_words(phrase)
    if not words:
        return None
    if folded:
        words = [word.lower() for word in words]
    if _is_abbreviation(phrase, is_name=is_name):
        return re.escape(words[0]) if folded else f"(?-i:{re.escape(words[0])})"
    # Names are canonical spellings: separators may vary ("post-MI", "PostMI") but nothing
    # may come between the words. Synonyms tolerate modifiers ("old inferior MI").
    separator = f"{_SEPARATORS}*" if is_name else f"(?:{_SEPARATORS}+|[ \t]+{_GAP_WORD}{{1,2}})"
    return separator.join(re.escape(word) for word in words)


def bare_first_line(clean: str, labels: LabelSet) -> tuple[int, int, str] | None:
    """`(start, end, label)` of a first line that is one label and nothing else ("POST_MI").

    None when another line is a bare label too: that is a list of the options.
    """
    bare = [
        (line.start(), label)
        for line in _LINE.finditer(clean)
        if (label := labels.normalize(line.group())) is not None
    ]
    first = _LINE.search(clean)
    if len(bare) != 1 or first is None or bare[0][0] != first.start():
        return None
    return first.start(), first.end(), bare[0][1]


def looks_cut_off(clean: str, mentions: list[Mention]) -> bool:
    """Whether the answer stops mid-sentence: not after a closing mark, nor on a label."""
    tail = clean.rstrip()
    if not tail or (mentions and mentions[-1].end >= len(tail)):
        return False
    return tail[-1].isalnum() or tail[-1] in ",:(-–—/"
