"""`FinalAnswerParser`: read the final verdict of a free-text answer, not its first label.

How an answer is read, in order (the first rule that decides wins):

1. **empty**: no text → `empty`.
2. **exact**: the whole answer is one label (constrained `choice` decoding) → that label.
3. **json**: a JSON object with a `label` field (`JSONLabelParser`) → that label.
4. **verdict zones** in the markdown-stripped text, strongest tier first:

   ```
   tier   cue (examples)                                    zone read
   final  "FINAL CLASSIFICATION", "final diagnosis"          to the next final cue
   stated "classification:", "I would classify it as",      ~300 characters
          "impression", "conclusion", "therefore", "label"
   phrase "consistent with", "most likely", "the ECG is"     to the end of the sentence
   ```

   Within a zone the verdict is the first sentence holding an *asserted* label mention.
   Mentions are names and synonyms of the `LabelSet` (longest first, word-boundary aware,
   so NORMAL never matches inside ABNORMAL_HEARTBEAT), and are dropped when they sit in a
   restated option list, are negated ("not NORMAL", "rules out MI"), or are used as an
   adjective ("normal sinus rhythm"). Hedged mentions ("Y cannot be excluded", "possible
   Y", "Q waves suggesting Y") only decide when nothing is asserted outright. Of several
   zones of the same tier the last wins (models restate, then conclude); for the weak
   "phrase" tier all zones must agree.
5. **sole mention**: no cue at all, but exactly one label is asserted anywhere.

Two labels asserted in the deciding sentence → `ambiguous`. No verdict in an answer cut off
by `max_tokens` → `truncated`; only explicit verdicts (final/stated tiers, JSON) are trusted
in such an answer. A refusal phrase without a verdict → `refusal`. Anything else →
`unparseable`: a wrong label silently corrupts accuracy, an unparsed one is counted.

Nothing here is specific to one task: every pattern about labels is built from the
`LabelSet` given to the parser; the cue words are ordinary English.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum

from medbatch.labels import LabelSet, fold_label_text
from medbatch.parsing.base import LabelParser
from medbatch.parsing.json import JSONLabelParser
from medbatch.records import AnswerStatus, ParseResult

__all__ = ["FinalAnswerParser"]


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

_EVIDENCE_CHARS = 240
_STATED_ZONE_CHARS = 300
_PHRASE_ZONE_CHARS = 120
_FINAL_ZONE_CHARS = 2500

# --- cue phrases (plain English, task-independent) ---------------------------------------

_FINAL_CUE = re.compile(
    r"\bfinal\s+(?:ecg\s+|overall\s+)?(?:classification|diagnosis|answer|verdict|"
    r"interpretation|impression|assessment|conclusion|category|label|result|decision)\b",
    re.IGNORECASE,
)
_STATED_CUE = re.compile(
    r"\b(?:"
    r"(?<!differential\s)classification"
    r"|classif(?:y|ied|ying)(?:\s+(?:this|the|it|as))?(?:\s+(?:ecg|ekg|tracing|image|study))?"
    r"(?:\s+as)?"
    r"|categori[sz](?:e|ed)\s+as|best\s+(?:described|categori[sz]ed)\s+as"
    r"|falls?\s+(?:into|under)|(?<!differential\s)diagnosis|impression|conclusion"
    r"|in\s+summary|summary|verdict|answer|assessment"
    r"|boxed|label|category"
    r")\b",
    re.IGNORECASE,
)
_PHRASE_CUE = re.compile(
    r"\b(?:consistent\s+with|suggestive\s+of|indicative\s+of|compatible\s+with|"
    r"diagnostic\s+of|in\s+keeping\s+with|represents?|most\s+likely|likely|probably|"
    r"overall|therefore|thus|hence|(?:best\s+)?(?:fits?|matches)|"
    r"appears\s+to\s+be|(?:this|the|it)\s+(?:(?:ecg|ekg|tracing|image|study|rhythm)\s+)?"
    r"(?:is|shows|demonstrates|represents))\b",
    re.IGNORECASE,
)

# Words that end the scope of a negation or hedge looking backwards from a mention.
_CLAUSE_BREAK = re.compile(
    r"[,;:.!?()\[\]\n—–→⇒]|\s-\s|->|=>|\b(?:but|however|although|though|whereas|while|yet)\b",
    re.IGNORECASE,
)
_LAST_MARK = re.compile(r"(?s:.*)[,;:.!?()\[\]—–→⇒]")  # up to the last one-character break
# Verbs that start a new assertion: "no ST elevation [indicates] POST_MI" is not a negation
# of POST_MI.
_SCOPE_TERMINATOR = re.compile(
    r"\b(?:indicat\w*|suggest\w*|consistent|compatible|represent\w*|show\w*|demonstrat\w*|"
    r"mean\w*|point\w*|favou?r\w*|support\w*|confirm\w*|is|are|was|were|so|thus|therefore|"
    r"hence|which|making|leaving|leaves)\b",
    re.IGNORECASE,
)
_NEGATION_BEFORE = re.compile(
    r"\b(?:not|no|never|without|nor|neither|against|(?:rules?|ruled|ruling)\s+out|"
    r"exclud(?:e|es|ed|ing)|absence\s+of|absent|lack(?:s|ing)?(?:\s+of)?|negative\s+for|"
    r"free\s+of|rather\s+than|instead\s+of|other\s+than|over|unlikely|less\s+likely|"
    r"isn'?t|aren'?t|doesn'?t|don'?t|didn'?t|cannot|can'?t)\b"
    # The negation phrase swallows its own continuation ("not consistent with", "no
    # evidence of", "does not meet criteria for", "do not think this is") so that those
    # verbs are not read as the start of a new assertion.
    r"(?:\s+(?:be|been|is|it|this|that|a|an|the|any|evidence|signs?|features?|of|for|"
    r"consistent|compatible|suggestive|indicative|diagnostic|with|meets?|criteria|show|"
    r"shows|support|supports|suggest|suggests|indicate|indicates|represent|represents|"
    r"classified|classify|as|acute|definite|clear|typical|think|believe|feel|consider|"
    r"seen|present|appear|appears|to|fit|fits|qualify|qualifies))*",
    re.IGNORECASE,
)
_NOT_A_NEGATION = re.compile(r"\b(?:no\s+(?:doubt|question)|not\s+(?:only|just))\b", re.I)
_DOUBLE_NEGATIVE = re.compile(
    r"(?:cannot|can\s*not|can'?t|could\s+not|couldn'?t)\s+(?:be\s+)?(?:exclude|rule\s+out|ruled\s+out)",
    re.IGNORECASE,
)
_HEDGE_BEFORE = re.compile(
    r"\b(?:possibl[ey]|may\s+(?:also\s+)?(?:be|represent|have)|might|could\s+(?:also\s+)?be|"
    r"differential|cannot\s+(?:exclude|rule\s+out)|can'?t\s+(?:exclude|rule\s+out)|"
    r"alternatively|also\s+consider|borderline|questionable|"
    # Descriptive uses: a finding that *suggests* a label is evidence, not the verdict.
    r"suggest(?:s|ing|ed)?|indicat(?:e|es|ing|ed)|(?:seen|found)\s+in|typical(?:ly)?\s+(?:of|for|in)|"
    r"characteristic\s+of|signs?\s+of|features?\s+of|criteria\s+for|associated\s+with|"
    r"would\s+(?:be|indicate|suggest|mean|favou?r|point\s+to)|if|when|such\s+as|e\.g\.|"
    r"for\s+example|raises?\s+(?:concern|suspicion)\s+for|concern\s+for|suspicious\s+for|"
    r"assess(?:ing)?\s+for|look(?:ing)?\s+for|check(?:ing)?\s+for|hallmark\s+of)\b",
    re.IGNORECASE,
)
_NEGATION_AFTER = re.compile(
    r"^[ \t\"')\]]*[:\-–—]?[ \t]*(?:is|are|was|were|has\s+been|seems?|appears?)?[ \t]*"
    r"(?:not\b|ruled\s+out|excluded|unlikely|less\s+likely|absent|inappropriate)",
    re.IGNORECASE,
)
_HEDGE_AFTER = re.compile(
    r"^[ \t\"')\]]*,?[ \t]*(?:(?:cannot|can\s*not|can'?t)\s+be\s+"
    r"(?:entirely\s+|completely\s+|fully\s+)?(?:excluded|ruled\s+out)|(?:is|are|remains?)\s+(?:also\s+)?(?:possible|a\s+possibility)|"
    r"(?:should|could|may|might)\s+(?:also\s+)?be\s+considered|was\s+considered|"
    r"in\s+the\s+differential|pattern|changes|criteria)",
    re.IGNORECASE,
)
_LIST_SEPARATOR = re.compile(
    r"^[\s,;/|()\[\]\"'.:\-–—]*(?:(?:or|and|and/or|vs\.?|versus)[\s,;/|()\[\]\"'.:\-–—]*)?$",
    re.IGNORECASE,
)
_NEGATED_LIST = re.compile(r"[ \t]*(?:/|or|nor|and/or)[ \t]*$", re.IGNORECASE)
_BULLET = re.compile(r"[ \t]*(?:[-+•●▪◦]|\d{1,2}[.)]|[a-dA-D][.)])?[ \t]*[\"'(\[]?")
_OPTIONS_INTRO = re.compile(
    r"\b(?:one\s+of|following|options?|categories|choices|possible\s+(?:labels|classes))\b",
    re.IGNORECASE,
)
_CHECK_YES = re.compile(r"[\s:=\-–—|]*(?:yes\b|✓|✔|☑|\[x\]|\(x\))", re.IGNORECASE)
_CHECK_NO = re.compile(r"[\s:=\-–—|]*(?:no\b|✗|✘|☐|❌|\[ \]|\( \))", re.IGNORECASE)
# A newline, or one of .!?; followed by a space. Written to start with a character class,
# which the regex engine scans for quickly, rather than as an alternation.
_SENTENCE_END = re.compile(r"[\n.!?;](?:(?<=\n)|(?=\s))")
_REFUSAL = re.compile(
    r"\b(?:I(?:'m|\s+am)\s+(?:sorry|unable|not\s+able)|I\s+(?:cannot|can'?t|can\s+not|"
    r"won'?t|will\s+not)\s+(?:provide|interpret|classify|determine|make|give|offer|help|"
    r"analy[sz]e|assess|diagnose)|unable\s+to\s+(?:interpret|classify|determine|provide|"
    r"analy[sz]e|assess|read|make)|as\s+an\s+ai\b|not\s+(?:able|qualified)\s+to\s+"
    r"(?:provide|give|make|diagnose)|cannot\s+provide\s+(?:a\s+)?(?:medical\s+)?diagnos[ie]s|"
    r"consult\s+(?:a|with\s+a|your)\s+(?:qualified|medical|healthcare|licensed|cardiologist|"
    r"physician|doctor))",
    re.IGNORECASE,
)
# After a single-word label ("normal"), these words do not make it an adjective.
_NOT_A_NOUN = frozenset(
    [
        "with",
        "and",
        "or",
        "in",
        "on",
        "is",
        "was",
        "are",
        "were",
        "for",
        "as",
        "of",
        "at",
        "but",
        "given",
        "because",
        "since",
        "due",
        "based",
        "overall",
        "here",
        "there",
        "this",
        "that",
        "which",
        "ecg",
        "ekg",
        "tracing",
        "study",
        "image",
        "classification",
        "category",
        "label",
    ]
)
_SEPARATORS = r"[ \t_\-]"
_SEPARATOR_CHAR = re.compile(r"[\s_\-]")
_NEXT_WORD = re.compile(r"[ \t]+([A-Za-z][A-Za-z\-]*)")
# What `_strip_markdown` drops. Each pattern starts with a fixed character or class so the
# regex engine can skip to candidates quickly (one combined pattern with lookbehinds was
# tried at every position and cost more than the rest of a parse).
_MARKS = re.compile(r"[*`~#]+")
_ESCAPED_MARKUP = r"\\(?=[*_`#|\[\](){}~])"  # the backslash of an escaped markup char
_ESCAPES = re.compile(_ESCAPED_MARKUP)
_UNDERSCORES = re.compile(r"_+")
# A line start up to its last `>` quote mark, over characters that are dropped or blank.
_QUOTE_PREFIX = re.compile(r"^(?:[*`~#>_|]|" + _ESCAPED_MARKUP + r"|[^\S\n])*>", re.MULTILINE)
# Characters that re.IGNORECASE equates with an ASCII letter but `str.lower()` does not map
# onto one: İ ı ſ and the Kelvin sign (found by testing every code point).
_FOLDS_ONTO_ASCII = re.compile("[\u0130\u0131\u017f\u212a]")
# Up to two modifier words between the words of a synonym ("old *inferior* MI"), but never a
# word that changes its meaning.
_GAP_WORD = (
    r"(?:(?!(?:and|or|with|without|no|not|new|but|vs|versus|than|of|is|are|was|were|the|an?|"
    r"to|in|on|at|from|by|as|indicat\w*|suggest\w*|consistent|show\w*)\b)"
    r"[A-Za-z0-9][A-Za-z0-9'/\-]*[ \t]+)"
)


# --- working values ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Mention:
    """A label mention in the cleaned text."""

    label: str
    start: int
    end: int
    canonical: bool  # written as the label name in capitals / with underscores
    plain: bool  # one ordinary lower-case word ("normal"), the least specific kind
    negated: bool
    weak: bool
    in_options: bool

    @property
    def considered(self) -> bool:
        return not self.negated and not self.in_options


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
            asserted anywhere in the answer. Turn off to accept explicit verdicts only.

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
    ) -> None:
        super().__init__(labels)
        self._json = JSONLabelParser(labels) if use_json else None
        self._allow_sole_mention = allow_sole_mention
        self._mentions = _mention_table(labels)

    # --- the contract ----------------------------------------------------------------

    def parse(self, text: str | None, *, finish_reason: str | None = None) -> ParseResult:
        """Read the final verdict; see the module docstring for the rules. Never raises."""
        if text is None or not text.strip():
            return ParseResult(status=AnswerStatus.EMPTY, method="empty")
        try:
            return self._parse(text, truncated=finish_reason == "length")
        except Exception as exc:
            return ParseResult(method="internal-error", evidence=repr(exc)[:_EVIDENCE_CHARS])

    # --- steps -----------------------------------------------------------------------

    def _parse(self, text: str, *, truncated: bool) -> ParseResult:
        exact = None
        if not self._mentions.bare_label_too_long.match(text):
            exact = self.labels.normalize(text)
        if exact is not None:
            start = text.find(text.strip())
            return ParseResult(
                label=exact,
                status=AnswerStatus.PARSED,
                method="exact",
                evidence=text.strip()[:_EVIDENCE_CHARS],
                span=(start, start + len(text.strip())),
            )
        if self._json is not None and "{" in text:  # no brace, no JSON object
            from_json = self._json.parse(text)
            if from_json.status is AnswerStatus.PARSED:
                return from_json

        clean, index = _strip_markdown(text)
        mentions = self._find_mentions(clean)
        verdict = self._decide(clean, mentions, truncated=truncated)
        if verdict is not None:
            return self._result(text, clean, index, verdict)
        if truncated:
            return ParseResult(status=AnswerStatus.TRUNCATED, method="truncated")
        refusal = _REFUSAL.search(clean)
        if refusal is not None:
            return ParseResult(
                status=AnswerStatus.REFUSAL,
                method="refusal",
                evidence=_evidence(text, index, clean, refusal.start(), refusal.end()),
                span=_span(index, refusal.start(), refusal.end()),
            )
        return ParseResult(status=AnswerStatus.UNPARSEABLE, method="none")

    def _result(self, text: str, clean: str, index: _Offsets, verdict: _Verdict) -> ParseResult:
        evidence = _evidence(text, index, clean, verdict.start, verdict.end)
        span = _span(index, verdict.start, verdict.end)
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

    def _find_mentions(self, clean: str) -> list[_Mention]:
        table = self._mentions
        raw: list[tuple[str, int, int, bool]] = []
        for match in table.matches(clean):
            group = match.lastgroup
            if group is None:
                continue
            matched = match.group()
            if self._is_adjective(clean, match.end(), matched):
                continue
            canonical = table.group_is_name[group] and (matched.isupper() or "_" in matched)
            raw.append((table.group_label[group], match.start(), match.end(), canonical))
        polarity: dict[int, tuple[bool, bool]] = {}
        previous: tuple[int, int] | None = None  # (start, end) of the mention before
        for _, start, end, _ in raw:
            floor = previous[1] if previous else 0
            negated, weak = _polarity(clean, start, end, floor)
            # "not MI or POST_MI": a negation carries over a list of labels.
            if (
                previous is not None
                and not weak
                and polarity[previous[0]][0]
                and _NEGATED_LIST.match(clean[previous[1] : start])
            ):
                negated = True
            polarity[start] = (negated, weak)
            previous = (start, end)
        # Negated mentions ("- NORMAL: excluded") cannot make a line look like an option.
        in_options = _option_positions(clean, [m for m in raw if not polarity[m[1]][0]])
        mentions = []
        for label, start, end, canonical in raw:
            negated, weak = polarity[start]
            matched = clean[start:end]
            plain = not matched.isupper() and not _SEPARATOR_CHAR.search(matched)
            mentions.append(
                _Mention(label, start, end, canonical, plain, negated, weak, start in in_options)
            )
        return mentions

    @staticmethod
    def _is_adjective(clean: str, end: int, matched: str) -> bool:
        """`normal sinus rhythm`: a one-word label in lower case followed by a noun."""
        if matched.isupper() or _SEPARATOR_CHAR.search(matched):
            return False
        following = _NEXT_WORD.match(clean, end)
        return following is not None and following.group(1).lower() not in _NOT_A_NOUN

    # --- zones and the decision ------------------------------------------------------

    def _decide(  # noqa: PLR0911 - one return per tier reads better than a flag
        self, clean: str, mentions: list[_Mention], *, truncated: bool
    ) -> _Verdict | None:
        considered = [m for m in mentions if m.considered]
        if not considered:
            return None
        starts = [m.start for m in considered]
        boundaries = [m.end() for m in _SENTENCE_END.finditer(clean)]

        final_cues = list(_FINAL_CUE.finditer(clean))
        zone_ends = [cue.start() for cue in final_cues[1:]] + [len(clean)]
        final_zones = [
            (cue.end(), min(zone_end, cue.end() + _FINAL_ZONE_CHARS))
            for cue, zone_end in zip(final_cues, zone_ends, strict=False)
        ]
        verdict = self._last_zone_verdict(_Tier.FINAL, final_zones, considered, starts, boundaries)
        if verdict is not None:
            return self._accept(verdict, clean, truncated)

        stated_zones = [
            (cue.end(), min(len(clean), cue.end() + _STATED_ZONE_CHARS))
            for cue in _STATED_CUE.finditer(clean)
        ]
        verdict = self._last_zone_verdict(
            _Tier.STATED, stated_zones, considered, starts, boundaries
        )
        if verdict is not None:
            return self._accept(verdict, clean, truncated)
        if truncated:
            # An answer cut short may still be weighing options; only explicit verdicts count.
            return None

        phrase_zones = [
            (
                cue.end(),
                min(
                    _sentence_end(cue.end(), boundaries, len(clean)), cue.end() + _PHRASE_ZONE_CHARS
                ),
            )
            for cue in _PHRASE_CUE.finditer(clean)
        ]
        verdicts = [
            v
            for zone in phrase_zones
            if (v := _zone_verdict(_Tier.PHRASE, zone, considered, starts, boundaries))
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
            # Without any cue, only specific mentions count: "PR interval normal." is not a
            # verdict, "POST_MI" or "old inferior MI" may be.
            strong_mentions = [m for m in considered if not m.weak and not m.plain]
            distinct = {m.label for m in strong_mentions}
            if len(distinct) == 1:
                first = strong_mentions[0]
                return _Verdict(_Tier.SOLE, (first.label,), False, first.start, first.end)
        return None

    @staticmethod
    def _accept(verdict: _Verdict, clean: str, truncated: bool) -> _Verdict | None:
        # In a cut-off answer the verdict word itself may be cut ("POST" of "POST_MI"); trust
        # it only when the answer went on after it.
        if truncated and not clean[verdict.end :].strip():
            return None
        return verdict

    @staticmethod
    def _last_zone_verdict(
        tier: _Tier,
        zones: list[tuple[int, int]],
        considered: list[_Mention],
        starts: list[int],
        boundaries: list[int],
    ) -> _Verdict | None:
        """The last zone's verdict, preferring zones that assert a label outright."""
        verdicts = [
            v for zone in zones if (v := _zone_verdict(tier, zone, considered, starts, boundaries))
        ]
        strong = [v for v in verdicts if not v.weak]
        if strong:
            return strong[-1]
        return verdicts[-1] if verdicts else None


# --- helpers (pure functions) ---------------------------------------------------------------


@dataclass(frozen=True)
class _MentionTable:
    """Everything the parser needs to find a `LabelSet`'s mentions, built once per set.

    `pattern` is one alternation over every name and synonym, longest first, in named
    groups. Trying its ~70 alternatives at every position of a long answer was the parser's
    main cost, so when the set allows it `starts` finds the few word starts where the
    lower-cased text begins with the first word of some phrase, and only the alternatives
    that can begin with that word (`by_first_word`, same order, same group names) are
    tried there.
    """

    pattern: re.Pattern[str]
    group_label: Mapping[str, str]
    group_is_name: Mapping[str, bool]
    starts: re.Pattern[str] | None  # over " " + clean.lower(); None: use `pattern` alone
    by_first_word: Mapping[str, re.Pattern[str]]  # by the first word `starts` found
    bare_label_too_long: re.Pattern[str]  # matches text with more letters than any phrase

    def matches(self, clean: str) -> Iterator[re.Match[str]]:
        """Exactly the matches of `pattern.finditer(clean)`, found faster."""
        if self.starts is None or not _lowercase_is_faithful(clean):
            yield from self.pattern.finditer(clean)
            return
        resume = 0  # finditer never reports overlapping matches
        # The leading space lets a mention start at 0; `found.start()` is then its position
        # in `clean`.
        for found in self.starts.finditer(" " + clean.lower()):
            position = found.start()
            if position < resume:
                continue
            match = self.by_first_word[found.group(1)].match(clean, position)
            if match is not None:
                resume = match.end()
                yield match


@functools.lru_cache(maxsize=64)
def _mention_table(labels: LabelSet) -> _MentionTable:
    """The mention patterns of `labels` (cached: a parser may be built per task or run)."""
    entries: list[tuple[str, str, bool]] = []
    for label in labels:
        entries.append((label.name, label.name, True))
        entries.extend((synonym, label.name, False) for synonym in label.synonyms)
    entries.sort(key=lambda entry: len(entry[0]), reverse=True)
    alternatives: list[tuple[str, str]] = []  # (lower-cased first word, named group)
    group_label: dict[str, str] = {}
    group_is_name: dict[str, bool] = {}
    # What may follow each first word: a non-letter (one-word phrases), a separator, or
    # the second word's first letter (names: "POSTMI").
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
        after = follows.setdefault(words[0], set())
        if len(words) == 1:
            after.add("(?![a-z0-9])")
        else:
            after.add(_SEPARATORS)
            if is_name:
                after.add(re.escape(words[1][0]))
    starts = None
    by_first_word = {}
    if alternatives and ascii_words:
        # Longest word first, so the group that matches names the longest first word the
        # text starts with; every phrase that can match there starts with a prefix of that
        # word. The character before a start is not a letter or digit (the lookbehind).
        first_words = sorted(follows, key=len, reverse=True)
        # One group around literal-first alternatives: the regex engine rejects those by
        # their first character, which named groups per word would prevent.
        continued = (
            f"{re.escape(word)}(?=" + "|".join(sorted(follows[word])) + ")" for word in first_words
        )
        starts = re.compile(r"[^a-z0-9](?=(" + "|".join(continued) + "))")
        by_first_word = {
            word: _alternation([alt for first, alt in alternatives if word.startswith(first)])
            for word in first_words
        }
    return _MentionTable(
        pattern=_alternation([alt for _, alt in alternatives]),
        group_label=group_label,
        group_is_name=group_is_name,
        starts=starts,
        by_first_word=by_first_word,
        bare_label_too_long=_more_letters_than(labels),
    )


def _alternation(alternatives: list[str]) -> re.Pattern[str]:
    regex = r"(?<![A-Za-z0-9])(?:" + "|".join(alternatives) + r")(?![A-Za-z0-9])"
    return re.compile(regex, re.IGNORECASE)


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


def _lowercase_is_faithful(text: str) -> bool:
    """Whether `re.IGNORECASE` on `text` finds ASCII words exactly where `text.lower()` has them.

    True unless `text` holds one of the four characters that case-insensitive matching
    equates with an ASCII letter although `lower()` does not map them onto it (checked
    over all of Unicode): they would be missed by a search in the lower-cased text.
    """
    return text.isascii() or _FOLDS_ONTO_ASCII.search(text) is None


def _phrase_words(phrase: str) -> list[str]:
    return [w for w in re.split(r"[\s_\-]+", phrase.strip()) if w]


def _phrase_pattern(phrase: str, *, is_name: bool) -> str | None:
    words = _phrase_words(phrase)
    if not words:
        return None
    if len(words) == 1 and not is_name and len(words[0]) <= 3 and words[0].isupper():
        # Short abbreviations ("MI", "AF") only in capitals: "mi" or "af" are other words.
        return f"(?-i:{re.escape(words[0])})"
    # Names are canonical spellings: separators may vary ("post-MI", "PostMI") but nothing
    # may come between the words. Synonyms tolerate modifiers ("old inferior MI").
    separator = f"{_SEPARATORS}*" if is_name else f"(?:{_SEPARATORS}+|[ \t]+{_GAP_WORD}{{1,2}})"
    return separator.join(re.escape(word) for word in words)


class _Offsets:
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


def _strip_markdown(text: str) -> tuple[str, _Offsets]:
    """Remove emphasis, code, heading and table marks; keep a map to original offsets.

    Dropped: the marks `*`, backquote, `~` and `#` anywhere; a backslash escaping markup;
    underscores unless one sits between two letters/digits (POST_MI); `>` quote marks at
    the start of a line. Table bars become spaces.
    """
    drops = [match.span() for match in _MARKS.finditer(text)]
    if "\\" in text:
        drops.extend(match.span() for match in _ESCAPES.finditer(text))
    if "_" in text:
        drops.extend(_emphasis_underscores(text))
    if ">" in text:
        drops.extend(_quote_marks(text))
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
    return "".join(kept).replace("|", " "), _Offsets(clean_starts, origin_starts, length)


def _emphasis_underscores(text: str) -> list[tuple[int, int]]:
    """Runs of underscores, except a single one between two letters/digits (POST_MI)."""
    spans = []
    for run in _UNDERSCORES.finditer(text):
        start, end = run.span()
        inside_word = (
            end - start == 1
            and start > 0
            and end < len(text)
            and text[start - 1].isalnum()
            and text[end].isalnum()
        )
        if not inside_word:
            spans.append((start, end))
    return spans


def _quote_marks(text: str) -> list[tuple[int, int]]:
    """Spans of the `>` marks that sit before any kept non-blank character of their line."""
    spans = []
    for prefix in _QUOTE_PREFIX.finditer(text):
        at = text.find(">", prefix.start(), prefix.end())
        while at >= 0:
            spans.append((at, at + 1))
            at = text.find(">", at + 1, prefix.end())
    return spans


def _option_positions(clean: str, raw: list[tuple[str, int, int, bool]]) -> set[int]:
    """Starts of mentions that belong to a restated option list."""
    positions: set[int] = set()
    # Inline runs: "MYOCARDIAL_INFARCTION, POST_MI, ABNORMAL_HEARTBEAT or NORMAL".
    run: list[tuple[str, int, int, bool]] = []
    for mention in [*raw, ("", len(clean) + 1, len(clean) + 1, False)]:
        if run and mention[0] and _LIST_SEPARATOR.match(clean[run[-1][2] : mention[1]]):
            run.append(mention)
            continue
        if len({m[0] for m in run}) >= 3:
            positions.update(m[1] for m in run)
        run = [mention] if mention[0] else []
    return positions | _option_block_positions(clean, raw)


def _option_block_positions(clean: str, raw: list[tuple[str, int, int, bool]]) -> set[int]:
    """Bullet blocks: consecutive lines that each start with a label ("- **POST_MI**: If")."""
    positions: set[int] = set()
    line_starts = [0] + [m.end() for m in re.finditer(r"\n", clean)]
    first_on_line: dict[int, tuple[str, int]] = {}
    for label, start, _end, _canonical in raw:
        line = bisect.bisect_right(line_starts, start) - 1
        if line not in first_on_line:
            first_on_line[line] = (label, start)
    option_lines: list[int] = []
    for line, (_label, start) in first_on_line.items():
        bullet = _BULLET.match(clean, line_starts[line])
        if bullet is not None and bullet.end() == start:
            option_lines.append(line)
    blocks: list[list[int]] = []
    for line in sorted(option_lines):
        gap = clean[line_starts[blocks[-1][-1]] : line_starts[line]] if blocks else ""
        # Consecutive means only blank lines between this option line and the previous one.
        if blocks and _only_one_content_line(gap):
            blocks[-1].append(line)
        else:
            blocks.append([line])
    for block in blocks:
        labels = {first_on_line[line][0] for line in block}
        intro_start = line_starts[max(0, block[0] - 2)]
        intro = clean[intro_start : line_starts[block[0]]]
        needed = 2 if _OPTIONS_INTRO.search(intro) else 3
        if len(labels) < needed:
            continue
        chosen = _checked_line(clean, block, first_on_line, raw, line_starts)
        for line in block:
            end = line_starts[line + 1] if line + 1 < len(line_starts) else len(clean)
            if line != chosen:
                positions.update(s for _, s, _, _ in raw if line_starts[line] <= s < end)
    return positions


def _checked_line(
    clean: str,
    block: list[int],
    first_on_line: dict[int, tuple[str, int]],
    raw: list[tuple[str, int, int, bool]],
    line_starts: list[int],
) -> int | None:
    """In a checklist ("- POST_MI: Yes", "- NORMAL ✗"), the one line marked positive."""
    ends = {start: end for _, start, end, _ in raw}
    positive = []
    for line in block:
        start = first_on_line[line][1]
        line_end = clean.find("\n", start)
        rest = clean[ends[start] : len(clean) if line_end < 0 else line_end]
        if _CHECK_YES.match(rest):
            positive.append(line)
        elif not _CHECK_NO.match(rest):
            return None  # an unmarked line: a plain option list, not a checklist
    return positive[0] if len(positive) == 1 else None


def _only_one_content_line(gap: str) -> bool:
    """True when `gap` (from one line start to another) is that one line plus blank lines."""
    lines = gap.split("\n")
    return sum(1 for line in lines[1:] if line.strip()) == 0


def _polarity(clean: str, start: int, end: int, floor: int) -> tuple[bool, bool]:
    """`(negated, weak)` for the mention at `clean[start:end]`.

    Cues are looked for after `floor` (the end of the previous mention): in "not NORMAL ->
    ABNORMAL_HEARTBEAT" the "not" belongs to NORMAL.
    """
    after = clean[end : end + 60]
    if _HEDGE_AFTER.match(after):
        return False, True
    if _NEGATION_AFTER.match(after):
        return True, False
    before = _clause_before(clean, start, floor)
    negation = _last(_NEGATION_BEFORE, before)
    if negation is not None and _NOT_A_NEGATION.match(before, negation.start()):
        negation = None
    if negation is not None:
        gap = before[negation.end() :]
        # "no ST elevation indicates X" asserts X: a new verb ends the negation's scope.
        if not _SCOPE_TERMINATOR.search(gap) and len(gap.split()) <= 4:
            # "cannot exclude X" is a hedge, not a negation.
            hedged = _DOUBLE_NEGATIVE.match(before, negation.start()) is not None
            return (not hedged), hedged
    hedge = _last(_HEDGE_BEFORE, before)
    if hedge is not None and len(before[hedge.end() :].split()) <= 5:
        return False, True
    return False, False


def _clause_before(clean: str, start: int, floor: int) -> str:
    """The text of the current clause before `start`: at most ~80 characters, after `floor`."""
    window = clean[max(0, floor, start - 80) : start]
    # Only the last break matters. A punctuation mark is always a break of its own (no
    # longer break contains one), so the search can start right after the last mark.
    mark = _LAST_MARK.match(window)
    last = mark.end() if mark is not None else 0
    for found in _CLAUSE_BREAK.finditer(window, last):
        last = found.end()
    return window[last:]


def _last(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    found = None
    for found in pattern.finditer(text):  # noqa: B007 - we want the last match
        pass
    return found


def _sentence_end(position: int, boundaries: list[int], default: int) -> int:
    at = bisect.bisect_right(boundaries, position)
    return boundaries[at] if at < len(boundaries) else default


def _zone_verdict(
    tier: _Tier,
    zone: tuple[int, int],
    considered: list[_Mention],
    starts: list[int],
    boundaries: list[int],
) -> _Verdict | None:
    """The verdict of one zone: its first sentence holding an asserted (else hedged) label."""
    low = bisect.bisect_left(starts, zone[0])
    high = bisect.bisect_left(starts, zone[1])
    inside = considered[low:high]
    if not inside:
        return None
    strong = [m for m in inside if not m.weak]
    # Specific mentions (POST_MI, "old inferior MI") before plain words ("normal"), asserted
    # before hedged.
    pool = (
        [m for m in strong if not m.plain] or strong or [m for m in inside if not m.plain] or inside
    )
    first = pool[0]
    sentence_end = _sentence_end(first.start, boundaries, zone[1])
    sentence = [m for m in pool if m.start < sentence_end]
    distinct = tuple(dict.fromkeys(m.label for m in sentence))
    if len(distinct) > 1:
        # "POST_MI (old inferior MI, no acute STEMI)" - a canonical spelling beats the
        # descriptive phrases around it.
        canonical = tuple(dict.fromkeys(m.label for m in sentence if m.canonical))
        if len(canonical) == 1:
            distinct = canonical
    return _Verdict(tier, distinct, not strong, first.start, sentence[-1].end)


def _span(index: _Offsets, start: int, end: int) -> tuple[int, int]:
    if not index:
        return (0, 0)
    end = max(start + 1, end)
    return (index[min(start, len(index) - 1)], index[min(end, len(index)) - 1] + 1)


def _evidence(text: str, index: _Offsets, clean: str, start: int, end: int) -> str:
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
    if len(original) > _EVIDENCE_CHARS:
        original = original[: _EVIDENCE_CHARS - 1] + "…"
    return original
