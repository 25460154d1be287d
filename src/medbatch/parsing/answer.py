"""`FinalAnswerParser`: read the final verdict of a free-text answer, not its first label.

How an answer is read, in order (the first rule that decides wins):

1. **empty**: no text → `empty`; only `<think>` blocks (a scratchpad) → no verdict.
2. **exact**: the whole answer is one label (constrained `choice` decoding) → that label.
3. **json**: a JSON object with a `label` field (`JSONLabelParser`) → that label.
4. **verdict zones** in the markdown-stripped text, strongest tier first:

   ```
   tier   cue (examples)                                    zone read
   final  "FINAL CLASSIFICATION", "final diagnosis",        to the next final cue
          "final read"
   stated "classification:", "I would classify it as",      ~300 characters
          "impression", "conclusion", "label",
          "Interpretation:", "Read:" (report headings)
   phrase "consistent with", "most likely", "the <noun> is"  to the end of the sentence
   ```

   Within a zone the verdict is the first sentence holding an *asserted* label mention.
   Mentions are names and synonyms of the `LabelSet` (longest first, word-boundary aware,
   so NORMAL never matches inside ABNORMAL_HEARTBEAT), and are dropped when they sit in a
   restated option list, are negated ("not NORMAL", "rules out MI"), are conditioned ("X
   if the Q waves are pathological, otherwise Y"), or are used as an adjective ("normal
   sinus rhythm"). A plain lower-case word ("normal") counts only on the line its cue
   introduces. Hedged mentions ("Y cannot be excluded", "possible Y", "Q waves suggesting
   Y", "either X or Y") only decide when nothing is asserted outright; two labels set
   against each other ("X versus Y") are both hedged, so they decide nothing between them
   ("X (vs. Y)" hedges only Y). Of several zones of the same tier the last wins (models
   restate, then conclude); for the weak "phrase" tier all zones must agree.
5. **sole mention**: no cue at all, but exactly one label is asserted, on the last line;
   else a first line that is one label and nothing else, with the reasons after it (not
   when another line is a bare label too: that is the options listed).

A label comes only from a verdict. Two labels asserted in the deciding sentence →
`ambiguous`. An answer that declines after its findings ("I cannot confidently assign a
single classification") has no verdict unless an explicit, outright one came first; a
hedged verdict has none when the answer declines anywhere ("I can't give a diagnosis, but
the features could suggest X"), nor has a sole mention when the answer declines
anywhere; a cue that the sentence declines ("I cannot determine the classification") is
no cue. No verdict in an answer cut off by `max_tokens` →
`truncated`; only explicit verdicts (final/stated tiers, JSON) are trusted in such an
answer, and in one with no finish reason that stops mid-sentence (`cut-off`); one cut off
right after a verdict cue ("## Classification") has none. A refusal
phrase without a verdict → `refusal`. Anything else → `unparseable`: a wrong label
silently corrupts accuracy, an unparsed one is counted.

Only the last `TAIL_CHARS` (32 KiB) of an answer are read: the verdict is at the end, and
the time one answer takes stays bounded.

Nothing here is specific to one task: every pattern about labels is built from the
`LabelSet` given to the parser, what answers call the thing classified ("the ECG shows",
"the radiograph shows") from its `subject_nouns`, and the other cue words are ordinary
English. Domain phrasings of a verdict ("old inferior MI") are label synonyms.

This module holds the decision (zones, tiers, verdicts) and the parser. What it reads
with lives next to it, each module importing only those before it:
`medbatch.parsing.markdown` (stripping, offset maps), `medbatch.parsing.cues` (the cue
vocabulary), `medbatch.parsing.mentions` (label mentions), `medbatch.parsing.scope`
(negated, hedged, option-list and conditional mentions). Must not import: runners,
pipeline, store or report code; the parser is a pure function of text and labels.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from medbatch.labels import LabelSet
from medbatch.parsing.base import LabelParser
from medbatch.parsing.cues import (
    DEFAULT_SUBJECT_NOUNS,
    NOT_A_NOUN,
    SUBJECT_NOUN,
    ZONE_LEAD,
    Text,
    grammars,
)
from medbatch.parsing.json import JSONLabelParser
from medbatch.parsing.markdown import (
    EVIDENCE_CHARS,
    Offsets,
    blank_thinking,
    original_evidence,
    original_span,
    strip_markdown,
)
from medbatch.parsing.mentions import (
    NEXT_WORD,
    SEPARATOR_CHAR,
    Mention,
    MentionTable,
    bare_first_line,
    looks_cut_off,
    mention_table,
)
from medbatch.parsing.scope import (
    conditional_positions,
    option_positions,
    polarities,
    versus_positions,
)
from medbatch.records import AnswerStatus, ParseResult

__all__ = ["DEFAULT_SUBJECT_NOUNS", "TAIL_CHARS", "FinalAnswerParser"]

# Names this module held before it was split, still imported by tests.
_strip_markdown = strip_markdown
_Text = Text


class _Tier(IntEnum):
    """How explicit a verdict cue is; higher decides first."""

    SOLE = 0
    PHRASE = 1
    STATED = 2
    FINAL = 3


_METHOD = {
    _Tier.SOLE: "sole-mention",
    _Tier.PHRASE: "verdict-phrase",
    _Tier.STATED: "stated-verdict",
    _Tier.FINAL: "final-heading",
}

TAIL_CHARS = 32 * 1024
"""How much of an answer's end `FinalAnswerParser` reads: about eight times the longest
answer of `max_tokens=1024`, and a bound on the time one answer can take."""
_STATED_ZONE_CHARS = 300
_PHRASE_ZONE_CHARS = 120
_FINAL_ZONE_CHARS = 2500
_CUE_TAIL = " \t\r\n:*#_-=>→|"  # what may follow a verdict cue that ends a cut-off answer


@dataclass(frozen=True)
class _Verdict:
    """What one zone says."""

    tier: _Tier
    labels: tuple[str, ...]  # distinct labels asserted in the deciding sentence
    weak: bool  # decided only by hedged mentions
    start: int  # deciding span in the cleaned text
    end: int


class FinalAnswerParser(LabelParser):
    """Reads the final verdict of a free-text (markdown) answer. Generic over any LabelSet.

    Args:
        labels: The task's labels; names and synonyms are what is searched for.
        use_json: Try `JSONLabelParser` first (answers like `{"label": ...}`).
        allow_sole_mention: When no verdict cue exists, accept a label that is the only one
            asserted on the answer's last line ("...; STEMI."). Turn off to accept explicit
            verdicts only.
        subject_nouns: What answers of this task call the thing they classify, for cues
            such as "the ECG shows X" or "I would classify this tracing as X"; lower-case
            words or phrases. Default: `DEFAULT_SUBJECT_NOUNS` (image, study, scan, ...).

    Example:
        >>> parser = FinalAnswerParser(LabelSet.from_names(["NORMAL", "ABNORMAL_HEARTBEAT"]))
        >>> result = parser.parse("Not NORMAL.\\n\\n**FINAL CLASSIFICATION:** ABNORMAL_HEARTBEAT")
        >>> result.label, result.status, result.method
        ('ABNORMAL_HEARTBEAT', <AnswerStatus.PARSED: 'parsed'>, 'final-heading')
    """

    def __init__(
        self,
        labels: LabelSet,
        *,
        use_json: bool = True,
        allow_sole_mention: bool = True,
        subject_nouns: Sequence[str] = DEFAULT_SUBJECT_NOUNS,
    ) -> None:
        super().__init__(labels)
        nouns = tuple(dict.fromkeys(" ".join(noun.lower().split()) for noun in subject_nouns))
        bad = [noun for noun in nouns if not SUBJECT_NOUN.fullmatch(noun)]
        if bad or not nouns:
            raise ValueError(
                f"subject_nouns must be words of letters and digits, e.g. ('ecg', 'tracing'); "
                f"got {list(subject_nouns)!r}"
            )
        self.subject_nouns = nouns
        self._json = JSONLabelParser(labels) if use_json else None
        self._allow_sole_mention = allow_sole_mention
        self._grammars = grammars(nouns)
        self._not_a_noun = NOT_A_NOUN | {word for noun in nouns for word in noun.split()}
        # The differential tests turn this off to compare with the plain full scan.
        self._fast_mentions = True

    @functools.cached_property
    def _mentions(self) -> MentionTable:
        # Built on the first parse, not with the task: `medbatch tasks` and anything else that
        # only lists tasks skips ~80 regex compilations. Two threads racing build it twice
        # (the table is cached per label set anyway), which is harmless.
        return mention_table(self.labels)

    # --- the contract ----------------------------------------------------------------

    def parse(self, text: str | None, *, finish_reason: str | None = None) -> ParseResult:
        """Read the final verdict; see the module docstring for the rules. Never raises.

        Only the last `TAIL_CHARS` characters of a longer answer are read (the verdict is
        at the end), so parsing time has a bound whatever the answer's size; the method
        of such a result ends in `(last 32 KiB)` and its span counts from the answer's start.
        """
        if text is None or not text.strip():
            return ParseResult(status=AnswerStatus.EMPTY, method="empty")
        try:
            if len(text) <= TAIL_CHARS:
                return self._parse(text, finish_reason=finish_reason)
            return self._parse_tail(text, finish_reason=finish_reason)
        except Exception as exc:
            return ParseResult(method="internal-error", evidence=repr(exc)[:EVIDENCE_CHARS])

    def _parse_tail(self, text: str, *, finish_reason: str | None) -> ParseResult:
        cut = len(text) - TAIL_CHARS
        # Start at a line start when one is near: a half line may begin inside a word.
        newline = text.find("\n", cut, cut + 2048)
        cut = cut if newline < 0 else newline + 1
        result = self._parse(text[cut:], finish_reason=finish_reason)
        span = None if result.span is None else (result.span[0] + cut, result.span[1] + cut)
        method = f"{result.method} (last {TAIL_CHARS // 1024} KiB)"
        return result.model_copy(update={"span": span, "method": method})

    # --- steps -----------------------------------------------------------------------

    def _parse(  # noqa: PLR0911 - each early return is one rule of the module docstring
        self, text: str, *, finish_reason: str | None
    ) -> ParseResult:
        truncated = finish_reason == "length"
        text = blank_thinking(text)
        if not text.strip():  # it only thought (empty answers returned before this)
            status = AnswerStatus.TRUNCATED if truncated else AnswerStatus.UNPARSEABLE
            return ParseResult(status=status, method="thinking-only")
        exact = None
        if not self._mentions.bare_label_too_long.match(text):
            exact = self.labels.normalize(text)
        if exact is not None:
            start = text.find(text.strip())
            return ParseResult(
                label=exact,
                status=AnswerStatus.PARSED,
                method="exact",
                evidence=text.strip()[:EVIDENCE_CHARS],
                span=(start, start + len(text.strip())),
            )
        if self._json is not None and "{" in text:  # no brace, no JSON object
            from_json = self._json.parse(text)
            if from_json.status is AnswerStatus.PARSED:
                return from_json

        clean, index = strip_markdown(text)
        cleaned = Text.of(clean, self._grammars)
        mentions = self._find_mentions(cleaned)
        # Without a finish reason, an answer that stops mid-sentence was most likely cut.
        cut_off = finish_reason is None and looks_cut_off(clean, mentions)
        verdict = self._decide(cleaned, mentions, truncated=truncated or cut_off)
        if (
            verdict is not None
            and (verdict.weak or verdict.tier < _Tier.STATED)
            and cleaned.rx.decline.search(
                cleaned.folded,
                0 if verdict.weak or verdict.tier is _Tier.SOLE else verdict.start,
            )
        ):
            # "... findings ... I cannot confidently assign a single classification": only
            # an outright explicit verdict outweighs a refusal said after it. A hedged one
            # does not outweigh a refusal anywhere ("I can't give a diagnosis, but the
            # features could suggest X"), nor does a label that is merely the last thing
            # named ("I cannot determine the classification. Findings: ... AFib.").
            verdict = None
        if verdict is not None:
            return self._result(text, clean, index, verdict)
        if truncated:
            return ParseResult(status=AnswerStatus.TRUNCATED, method="truncated")
        if cut_off:
            return ParseResult(status=AnswerStatus.UNPARSEABLE, method="cut-off")
        return self._no_verdict(text, cleaned, index)

    @staticmethod
    def _no_verdict(text: str, cleaned: Text, index: Offsets) -> ParseResult:
        """A refusal when the answer says it declines, else `unparseable`."""
        refusal = cleaned.rx.refusal.search(cleaned.folded)
        if refusal is None:
            return ParseResult(status=AnswerStatus.UNPARSEABLE, method="none")
        start, end = refusal.span()
        return ParseResult(
            status=AnswerStatus.REFUSAL,
            method="refusal",
            evidence=original_evidence(text, index, cleaned.clean, start, end),
            span=original_span(index, start, end),
        )

    def _result(self, text: str, clean: str, index: Offsets, verdict: _Verdict) -> ParseResult:
        evidence = original_evidence(text, index, clean, verdict.start, verdict.end)
        span = original_span(index, verdict.start, verdict.end)
        method = _METHOD[verdict.tier] + ("-hedged" if verdict.weak else "")
        if len(verdict.labels) == 1:
            return ParseResult(
                label=verdict.labels[0],
                status=AnswerStatus.PARSED,
                method=method,
                evidence=evidence,
                span=span,
            )
        return ParseResult(
            status=AnswerStatus.AMBIGUOUS, method=method, evidence=evidence, span=span
        )

    # --- mentions --------------------------------------------------------------------

    def _find_mentions(self, text: Text) -> list[Mention]:
        table = self._mentions
        clean = text.clean
        raw: list[tuple[str, int, int, bool]] = []
        plain: list[bool] = []
        for group, start, end in table.matches(text, fast=self._fast_mentions):
            matched = clean[start:end]
            is_plain = not matched.isupper() and not SEPARATOR_CHAR.search(matched)
            if is_plain and self._is_adjective(clean, end, self._not_a_noun):
                continue
            canonical = table.group_is_name[group] and (matched.isupper() or "_" in matched)
            raw.append((table.group_label[group], start, end, canonical))
            plain.append(is_plain)
        polarity = polarities(text, raw)
        # Negated mentions ("- NORMAL: excluded") cannot make a line look like an option.
        in_options = option_positions(
            text, [m for m, (negated, _) in zip(raw, polarity, strict=True) if not negated]
        )
        conditional = conditional_positions(text, raw)
        # "X versus Y": both are candidates, as hedged as "possibly X".
        versus = versus_positions(text, raw, polarity)
        return [
            Mention(
                label,
                start,
                end,
                canonical,
                # Set against another label, a plain word ("normal") is a label too.
                is_plain and start not in versus,
                negated,
                weak or start in versus,
                start in in_options,
                start in conditional,
            )
            for (label, start, end, canonical), is_plain, (negated, weak) in zip(
                raw, plain, polarity, strict=True
            )
        ]

    @staticmethod
    def _is_adjective(clean: str, end: int, not_a_noun: frozenset[str]) -> bool:
        """`normal sinus rhythm`: a one-word label in lower case (`plain`) followed by a noun."""
        following = NEXT_WORD.match(clean, end)
        return following is not None and following.group(1).lower() not in not_a_noun

    # --- zones and the decision ------------------------------------------------------

    def _decide(  # noqa: PLR0911 - one return per tier reads better than a flag
        self, text: Text, mentions: list[Mention], *, truncated: bool
    ) -> _Verdict | None:
        considered = [m for m in mentions if m.considered]
        if not considered:
            return None
        starts = [m.start for m in considered]
        clean, folded, rx = text.clean, text.folded, text.rx

        final_cues = [c for c in rx.final_cue.finditer(folded) if not text.declines(c.start())]
        zone_ends = [cue.start() for cue in final_cues[1:]] + [len(clean)]
        final_zones = [
            (cue.end(), min(zone_end, cue.end() + _FINAL_ZONE_CHARS))
            for cue, zone_end in zip(final_cues, zone_ends, strict=False)
        ]
        stated_cues = [c for c in rx.stated_cue.finditer(folded) if not text.declines(c.start())]
        if truncated and any(
            not clean[cue.end() :].strip(_CUE_TAIL) for cue in (*final_cues, *stated_cues)
        ):
            return None  # cut at its verdict ("## Classification\n\n"): the rest is findings
        verdict = self._last_zone_verdict(_Tier.FINAL, final_zones, considered, starts, text)
        if verdict is not None:
            return self._accept(verdict, text, truncated)

        stated_zones = [
            (cue.end(), min(len(clean), cue.end() + _STATED_ZONE_CHARS)) for cue in stated_cues
        ]
        verdict = self._last_zone_verdict(_Tier.STATED, stated_zones, considered, starts, text)
        if verdict is not None:
            return self._accept(verdict, text, truncated)
        if truncated:
            # An answer cut short may still be weighing options; only explicit verdicts count.
            return None

        phrase_zones = [
            (
                cue.end(),
                text.sentence_end(cue.end(), min(len(clean), cue.end() + _PHRASE_ZONE_CHARS)),
            )
            for cue in rx.phrase_cue.finditer(folded)
        ]
        verdicts = [
            v
            for zone in phrase_zones
            if (v := _zone_verdict(_Tier.PHRASE, zone, considered, starts, text))
        ]
        # A weak cue with a hedged mention ("consistent with T waves, an early sign of X")
        # is a description of findings, not a verdict.
        strong = [v for v in verdicts if not v.weak]
        if strong:
            distinct = {label for v in strong for label in v.labels}
            last = strong[-1]
            if len(distinct) == 1:
                return last
            return _Verdict(_Tier.PHRASE, tuple(sorted(distinct)), last.weak, last.start, last.end)

        if self._allow_sole_mention:
            # Without any cue, only specific mentions on the last line count: "PR interval
            # normal." is not a verdict, nor is "irregularly irregular rhythm" among the
            # findings; "...; STEMI." at the end may be.
            last_line = clean.rstrip().rfind("\n") + 1
            strong_mentions = [
                m for m in considered if not m.weak and not m.plain and m.start >= last_line
            ]
            distinct = {m.label for m in strong_mentions}
            if len(distinct) == 1:
                first = strong_mentions[0]
                return _Verdict(_Tier.SOLE, (first.label,), False, first.start, first.end)
            first_line = bare_first_line(clean, self.labels)
            if first_line is not None:
                return _Verdict(_Tier.SOLE, (first_line[2],), False, *first_line[:2])
        return None

    @staticmethod
    def _accept(verdict: _Verdict, text: Text, truncated: bool) -> _Verdict | None:
        # In a cut-off answer the verdict word itself may be cut ("POST" of "POST_MI"); trust
        # it only when the answer went on after it.
        if truncated and not text.clean[verdict.end :].strip():
            return None
        return verdict

    @staticmethod
    def _last_zone_verdict(
        tier: _Tier,
        zones: list[tuple[int, int]],
        considered: list[Mention],
        starts: list[int],
        text: Text,
    ) -> _Verdict | None:
        """The last zone's verdict, preferring zones that assert a label outright."""
        verdicts = [
            v for zone in zones if (v := _zone_verdict(tier, zone, considered, starts, text))
        ]
        strong = [v for v in verdicts if not v.weak]
        if strong:
            return strong[-1]
        return verdicts[-1] if verdicts else None


def _zone_verdict(
    tier: _Tier,
    zone: tuple[int, int],
    considered: list[Mention],
    starts: list[int],
    text: Text,
) -> _Verdict | None:
    """The verdict of one zone: its first sentence holding an asserted (else hedged) label."""
    low = bisect.bisect_left(starts, zone[0])
    high = bisect.bisect_left(starts, zone[1])
    inside = considered[low:high]
    if tier >= _Tier.STATED:
        # A plain word ("normal") is a verdict on the line the cue introduces, not among
        # the findings on the lines after it.
        lead = ZONE_LEAD.match(text.clean, zone[0], zone[1])
        head_end = text.clean.find("\n", zone[0] if lead is None else lead.end(), zone[1])
        head_end = zone[1] if head_end < 0 else head_end
        inside = [m for m in inside if not m.plain or m.start < head_end]
    if not inside:
        return None
    strong = [m for m in inside if not m.weak]
    # Specific mentions (POST_MI, "old inferior MI") before plain words ("normal"), asserted
    # before hedged.
    pool = (
        [m for m in strong if not m.plain] or strong or [m for m in inside if not m.plain] or inside
    )
    first = pool[0]
    sentence_end = text.sentence_end(first.start, zone[1])
    sentence = [m for m in pool if m.start < sentence_end]
    distinct = tuple(dict.fromkeys(m.label for m in sentence))
    if len(distinct) > 1 and strong:
        # "POST_MI (old inferior MI, no acute STEMI)" - a canonical spelling beats the
        # descriptive phrases around it, when it is asserted ("old MI vs NORMAL" is not).
        canonical = tuple(dict.fromkeys(m.label for m in sentence if m.canonical))
        if len(canonical) == 1:
            distinct = canonical
    return _Verdict(tier, distinct, not strong, first.start, sentence[-1].end)
