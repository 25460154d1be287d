"""Markdown stripping for `FinalAnswerParser`, with the map back to the original offsets.

Holds `strip_markdown` (drops emphasis, code, heading, quote and table marks; returns the
cleaned text and an `Offsets` map), `original_span` and `original_evidence` (a span or
the sentence around it in the cleaned text, given back in the original answer's terms).

Must not import: the rest of `medbatch.parsing` or any label or cue vocabulary: it knows
markdown, not verdicts.
"""

from __future__ import annotations

import bisect
import itertools
import re

__all__ = [
    "EVIDENCE_CHARS",
    "Offsets",
    "blank_thinking",
    "original_evidence",
    "original_span",
    "strip_markdown",
]

# A reasoning model's scratchpad, closed or (cut off) still open: thinking, not the answer.
_THINK_BLOCK = re.compile(r"<think>.*?(?:</think>|\Z)", re.IGNORECASE | re.DOTALL)

EVIDENCE_CHARS = 240
"""The longest evidence string a result carries; longer evidence ends in an ellipsis."""
# What `strip_markdown` drops, but for quote marks: runs of `*`, backquote, `~` and `#`; the
# backslash of an escaped markup character; runs of underscores, except a single one between
# two letters/digits (POST_MI; `[^\W_]` is exactly `str.isalnum`). Written to start with one
# character class, which the regex engine scans for quickly (3x faster than an alternation,
# which is tried at every position), then told apart by the character just taken. One group,
# so that `split` returns the dropped runs between the kept text.
_ESCAPED_MARKUP = r"\\(?=[*_`#|\[\](){}~])"  # the backslash of an escaped markup char
_MARKUP = re.compile(
    r"([*`~#\\_](?:"
    r"(?<=[*`~#])[*`~#]*"  # a run of marks
    r"|(?<=\\)(?=[*_`#|\[\](){}~])"  # a backslash escaping markup
    r"|(?<=_)(?:_+|(?<![^\W_]_)|(?![^\W_]))"  # underscores, unless one inside a word
    r"))"
)
# A line start up to its last `>` quote mark, over characters that are dropped or blank.
_QUOTE_PREFIX = re.compile(r"^(?:[*`~#>_|]|" + _ESCAPED_MARKUP + r"|[^\S\n])*>", re.MULTILINE)


class Offsets:
    """Maps a position in the cleaned text to its position in the original answer.

    The cleaned text is the original with some runs of characters dropped, so it is a
    handful of kept segments; storing their starts is much cheaper than one int per
    character.
    """

    __slots__ = ("_clean_starts", "_length", "_origin_starts")

    def __init__(self, clean_starts: list[int], origin_starts: list[int], length: int) -> None:
        self._clean_starts = clean_starts  # where each kept segment starts in the cleaned text
        self._origin_starts = origin_starts  # ... and in the original
        self._length = length

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, position: int) -> int:
        segment = bisect.bisect_right(self._clean_starts, position) - 1
        return self._origin_starts[segment] + position - self._clean_starts[segment]


def blank_thinking(text: str) -> str:
    """`text` with every `<think>` block blanked: same length, so spans stay the original's."""
    if "<think>" not in text.lower():
        return text
    return _THINK_BLOCK.sub(lambda block: " " * len(block.group()), text)


def strip_markdown(text: str) -> tuple[str, Offsets]:
    """Remove emphasis, code, heading and table marks; keep a map to original offsets.

    Dropped: the marks `*`, backquote, `~` and `#` anywhere; a backslash escaping markup;
    underscores unless one sits between two letters/digits (POST_MI); `>` quote marks at
    the start of a line. Table bars become spaces.
    """
    quotes = _quote_marks(text) if ">" in text else []
    if not quotes:
        return _strip_inline_markup(text)
    drops = [match.span() for match in _MARKUP.finditer(text)] + quotes
    drops.sort()  # the spans never overlap: each kind drops different characters
    kept: list[str] = []
    clean_starts: list[int] = []
    origin_starts: list[int] = []
    length = 0
    position = 0
    for start, end in [*drops, (len(text), len(text))]:
        if start > position:
            clean_starts.append(length)
            origin_starts.append(position)
            kept.append(text[position:start])
            length += start - position
        position = end
    return "".join(kept).replace("|", " "), Offsets(clean_starts, origin_starts, length)


def _strip_inline_markup(text: str) -> tuple[str, Offsets]:
    """`strip_markdown` for a text without quote marks, with no Python loop over the marks.

    `split` alternates kept and dropped runs; the offsets of every kept run follow from
    running sums of their lengths. Empty kept runs are harmless: `Offsets` looks a
    position up in the last run starting at or before it, which is the non-empty one.
    """
    parts = _MARKUP.split(text)
    kept = parts[::2]
    origin_ends = list(itertools.accumulate(map(len, parts)))
    clean_starts = [0, *itertools.accumulate(map(len, kept[:-1]))]
    origin_starts = [0, *origin_ends[1::2]]
    clean = "".join(kept)
    return clean.replace("|", " "), Offsets(clean_starts, origin_starts, len(clean))


def _quote_marks(text: str) -> list[tuple[int, int]]:
    """Spans of the `>` marks that sit before any kept non-blank character of their line."""
    spans = []
    for prefix in _QUOTE_PREFIX.finditer(text):
        at = text.find(">", prefix.start(), prefix.end())
        while at >= 0:
            spans.append((at, at + 1))
            at = text.find(">", at + 1, prefix.end())
    return spans


def original_span(index: Offsets, start: int, end: int) -> tuple[int, int]:
    """`(start, end)` in the original answer of cleaned `[start:end]` (at least one char)."""
    if not index:
        return (0, 0)
    end = max(start + 1, end)
    return (index[min(start, len(index) - 1)], index[min(end, len(index)) - 1] + 1)


def original_evidence(text: str, index: Offsets, clean: str, start: int, end: int) -> str:
    """The sentence around `clean[start:end]`, from the original text, shortened."""
    line_start = clean.rfind("\n", 0, start) + 1
    line_end = clean.find("\n", end)
    line_end = len(clean) if line_end < 0 else line_end
    begin = max(line_start, start - 120)
    finish = min(line_end, end + 120)
    if begin >= finish:
        return ""
    original = text[index[begin] : index[finish - 1] + 1]
    original = " ".join(original.split())
    if len(original) > EVIDENCE_CHARS:
        original = original[: EVIDENCE_CHARS - 1] + "…"
    return original
