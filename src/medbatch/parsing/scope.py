"""What a mention's context says for `FinalAnswerParser`: negated, hedged, restated in an
option list, or inside a conditional clause.

Holds `polarities` (negation/hedge before and after a mention, carried over "X or Y"),
`option_positions` (inline label runs, bullet blocks, checklists with one line marked)
and `conditional_positions` (clauses with "if", "unless", "otherwise").

Must not import: `medbatch.parsing.answer` (the decision), `medbatch.parsing.mentions`
or `medbatch.parsing.markdown`: it works on positions in a cue module `Text`, given as
plain `(label, start, end, canonical)` tuples.
"""

from __future__ import annotations

import bisect
import itertools
import re

from medbatch.parsing.cues import BULLET, Text

__all__ = ["conditional_positions", "option_positions", "polarities", "versus_positions"]

_LAST_MARK = re.compile(r"(?s:.*)[,;:.!?()\[\]—–→⇒]")  # up to the last one-character break
_CLAUSE_REACH = 400  # how far a condition's clause may reach either way


def option_positions(text: Text, raw: list[tuple[str, int, int, bool]]) -> set[int]:
    """Starts of mentions that belong to a restated option list."""
    clean, folded, rx = text.clean, text.folded, text.rx
    positions: set[int] = set()
    if len({label for label, _, _, _ in raw}) < 2:  # no list has enough labels
        return positions
    # Inline runs: "MYOCARDIAL_INFARCTION, POST_MI, ABNORMAL_HEARTBEAT or NORMAL".
    run: list[tuple[str, int, int, bool]] = []
    for mention in [*raw, ("", len(clean) + 1, len(clean) + 1, False)]:
        if run and mention[0] and rx.list_separator.fullmatch(folded, run[-1][2], mention[1]):
            run.append(mention)
            continue
        if len({m[0] for m in run}) >= 3:
            positions.update(m[1] for m in run)
        run = [mention] if mention[0] else []
    return positions | _option_block_positions(text, raw)


def _option_block_positions(text: Text, raw: list[tuple[str, int, int, bool]]) -> set[int]:
    """Bullet blocks: consecutive lines that each start with a label ("- **POST_MI**: If").

    Lines are named by the position they start at, found from the few mentions rather than
    from a list of every line.
    """
    clean = text.clean
    positions: set[int] = set()
    first_on_line: dict[int, tuple[str, int]] = {}  # in order of position: raw is sorted
    for label, start, _end, _canonical in raw:
        first_on_line.setdefault(clean.rfind("\n", 0, start) + 1, (label, start))
    option_lines: list[int] = []
    for line, (_label, start) in first_on_line.items():
        bullet = BULLET.match(clean, line)
        if bullet is not None and bullet.end() == start:
            option_lines.append(line)
    blocks: list[list[int]] = []
    for line in option_lines:
        # Consecutive means only blank lines between this option line and the previous one.
        if blocks and _only_one_content_line(clean[blocks[-1][-1] : line]):
            blocks[-1].append(line)
        else:
            blocks.append([line])
    for block in blocks:
        labels = {first_on_line[line][0] for line in block}
        intro = text.folded[_line_above(clean, _line_above(clean, block[0])) : block[0]]
        needed = 2 if text.rx.options_intro.search(intro) else 3
        if len(labels) < needed:
            continue
        chosen = _checked_line(text, block, first_on_line, raw)
        for line in block:
            end = clean.find("\n", line) + 1 or len(clean)
            if line != chosen:
                positions.update(s for _, s, _, _ in raw if line <= s < end)
    return positions


def _line_above(clean: str, line: int) -> int:
    """Start of the line before the one starting at `line` (0 for the first line)."""
    return clean.rfind("\n", 0, line - 1) + 1 if line > 0 else 0


def _checked_line(
    text: Text,
    block: list[int],
    first_on_line: dict[int, tuple[str, int]],
    raw: list[tuple[str, int, int, bool]],
) -> int | None:
    """In a checklist ("- POST_MI: Yes", "- NORMAL ✗"), the one line marked positive."""
    folded, rx = text.folded, text.rx
    ends = {start: end for _, start, end, _ in raw}
    positive = []
    for line in block:
        start = first_on_line[line][1]
        line_end = folded.find("\n", start)
        rest = folded[ends[start] : len(folded) if line_end < 0 else line_end]
        if rx.check_yes.match(rest):
            positive.append(line)
        elif not rx.check_no.match(rest):
            return None  # an unmarked line: a plain option list, not a checklist
    return positive[0] if len(positive) == 1 else None


def _only_one_content_line(gap: str) -> bool:
    """True when `gap` (from one line start to another) is that one line plus blank lines."""
    lines = gap.split("\n")
    return sum(1 for line in lines[1:] if line.strip()) == 0


def versus_positions(
    text: Text, raw: list[tuple[str, int, int, bool]], polarity: list[tuple[bool, bool]]
) -> set[int]:
    """Starts of two labels set against each other as candidates ("X versus Y", "X vs. Y").

    A side that is negated ("X, vs. Y ruled out") is no candidate, and leaves the other
    side asserted; so does a bracketed alternative ("X (vs. Y)"), which alone is hedged.
    """
    positions: set[int] = set()
    for (first, second), ((first_negated, _), (second_negated, _)) in zip(
        itertools.pairwise(raw), itertools.pairwise(polarity), strict=True
    ):
        gap = text.folded[first[2] : second[1]]
        if first[0] == second[0] or first_negated or second_negated:
            continue
        if text.rx.versus.match(gap):
            bracketed = "(" in gap or "[" in gap
            positions.update((second[1],) if bracketed else (first[1], second[1]))
    return positions


def conditional_positions(text: Text, raw: list[tuple[str, int, int, bool]]) -> set[int]:
    """Starts of mentions in a clause that holds a condition ("if", "unless", "otherwise").

    A clause runs between sentence ends and contrast words ("but since ..."): in "If there
    were ST elevation this would be X, but since all is normal the answer is Y" only X is
    conditioned. Clauses are found around the few conditions, not over the whole text.
    """
    rx, folded = text.rx, text.folded
    if not raw:
        return set()
    starts = [start for _, start, _, _ in raw]
    positions: set[int] = set()
    for condition in rx.conditional.finditer(folded):
        window = max(0, condition.start() - _CLAUSE_REACH)
        before = _last(rx.condition_break, folded[window : condition.start()])
        clause_start = window if before is None else window + before.end()
        after = rx.condition_break.search(folded, condition.end(), condition.end() + _CLAUSE_REACH)
        clause_end = condition.end() + _CLAUSE_REACH if after is None else after.start()
        low = bisect.bisect_left(starts, clause_start)
        high = bisect.bisect_left(starts, clause_end)
        positions.update(starts[low:high])
    return positions


def polarities(text: Text, raw: list[tuple[str, int, int, bool]]) -> list[tuple[bool, bool]]:
    """`(negated, weak)` of each mention in `raw`."""
    polarity: list[tuple[bool, bool]] = []
    previous_end = 0
    nexts = [start for _, start, _, _ in raw[1:]] + [len(text.folded)] * bool(raw)
    for (_, start, end, _), next_start in zip(raw, nexts, strict=True):
        negated, weak = _polarity(text, start, end, previous_end)
        # "X with rapid ventricular response ruled out": the words qualifying X come
        # between it and its negation (never another label, nor a clause break).
        if not negated and not weak:
            negated = text.rx.ruled_out_later.match(text.folded, end, next_start) is not None
        # "not MI or POST_MI": a negation carries over a list of labels; so does a hedge
        # ("could be either X or Y").
        if (
            polarity
            and not weak
            and not negated
            and (polarity[-1][0] or polarity[-1][1])
            and text.rx.negated_list.match(text.folded[previous_end:start])
        ):
            negated, weak = polarity[-1]
        polarity.append((negated, weak))
        previous_end = end
    return polarity


def _polarity(text: Text, start: int, end: int, floor: int) -> tuple[bool, bool]:
    """`(negated, weak)` for the mention at `clean[start:end]`.

    Cues are looked for after `floor` (the end of the previous mention): in "not NORMAL ->
    ABNORMAL_HEARTBEAT" the "not" belongs to NORMAL.
    """
    folded, rx = text.folded, text.rx
    # Matched in place, bounded like the 60-character slice it replaces (no copy): the
    # pattern has no `^` and never looks before its start.
    after = rx.after.match(folded, end, end + 60)
    if after is not None:
        return after.lastgroup == "negation", after.lastgroup == "hedge"
    before = _clause_before(text, start, floor)
    if rx.before.search(before) is None:  # most clauses: nothing to weigh
        return False, False
    negation = _last(rx.negation_before, before)
    if negation is not None and rx.not_a_negation.match(before, negation.start()):
        negation = None
    if negation is not None:
        gap = before[negation.end() :]
        # "no ST elevation indicates X" asserts X: a new verb ends the negation's scope.
        if not rx.scope_terminator.search(gap) and len(gap.split()) <= 4:
            # "cannot exclude X" is a hedge, not a negation.
            hedged = rx.double_negative.match(before, negation.start()) is not None
            return (not hedged), hedged
    hedge = _last(rx.hedge_before, before)
    if hedge is not None and len(before[hedge.end() :].split()) <= 5:
        return False, True
    return False, False


def _clause_before(text: Text, start: int, floor: int) -> str:
    """The current clause before `start` in `text.folded`: at most ~80 characters, after `floor`."""
    window = text.folded[max(0, floor, start - 80) : start]
    # Only the last break matters. A punctuation mark is always a break of its own (no
    # longer break contains one), so the search can start right after the last mark.
    mark = _LAST_MARK.match(window)
    last = mark.end() if mark is not None else 0
    for found in text.rx.clause_break.finditer(window, last):
        last = found.end()
    return window[last:]


def _last(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    found = None
    for found in pattern.finditer(text):  # noqa: B007 - we want the last match
        pass
    return found
