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
   phrase "consistent with", "most likely", "the <noun> is"  to the end of the sentence
   ```

   Within a zone the verdict is the first sentence holding an *asserted* label mention.
   Mentions are names and synonyms of the `LabelSet` (longest first, word-boundary aware,
   so NORMAL never matches inside ABNORMAL_HEARTBEAT), and are dropped when they sit in a
   restated option list, are negated ("not NORMAL", "rules out MI"), are conditioned ("X
   if the Q waves are pathological, otherwise Y"), or are used as an adjective ("normal
   sinus rhythm"). A plain lower-case word ("normal") counts only on the line its cue
   introduces. Hedged mentions ("Y cannot be excluded", "possible Y", "Q waves suggesting
   Y", "either X or Y") only decide when nothing is asserted outright. Of several zones of
   the same tier the last wins (models restate, then conclude); for the weak "phrase" tier
   all zones must agree.
5. **sole mention**: no cue at all, but exactly one label is asserted, on the last line.

A label comes only from a verdict. Two labels asserted in the deciding sentence →
`ambiguous`. An answer that declines after its findings ("I cannot confidently assign a
single classification") has no verdict unless an explicit, outright one came first. No
verdict in an answer cut off by `max_tokens` → `truncated`; only explicit verdicts
(final/stated tiers, JSON) are trusted in such an answer, and in one with no finish
reason that stops mid-sentence (`cut-off`). A refusal phrase without a verdict →
`refusal`. Anything else → `unparseable`: a wrong label silently corrupts accuracy, an
unparsed one is counted.

Only the last `TAIL_CHARS` (32 KiB) of an answer are read: the verdict is at the end, and
the time one answer takes stays bounded.

Nothing here is specific to one task: every pattern about labels is built from the
`LabelSet` given to the parser, what answers call the thing classified ("the ECG shows",
"the radiograph shows") from its `subject_nouns`, and the other cue words are ordinary
English. Domain phrasings of a verdict ("old inferior MI") are label synonyms.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import NamedTuple

from medbatch.labels import LabelSet, fold_label_text
from medbatch.parsing.base import LabelParser
from medbatch.parsing.json import JSONLabelParser
from medbatch.records import AnswerStatus, ParseResult

__all__ = ["DEFAULT_SUBJECT_NOUNS", "TAIL_CHARS", "FinalAnswerParser"]


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
TAIL_CHARS = 32 * 1024
"""How much of an answer's end `FinalAnswerParser` reads: about eight times the longest
answer of `max_tokens=1024`, and a bound on the time one answer can take."""
_STATED_ZONE_CHARS = 300
_PHRASE_ZONE_CHARS = 120
_FINAL_ZONE_CHARS = 2500
_CLAUSE_REACH = 400  # how far a condition's clause may reach either way

# --- cue phrases (plain English, task-independent) ---------------------------------------

DEFAULT_SUBJECT_NOUNS = ("image", "study", "scan", "exam", "examination")
"""What an answer may call the thing it classifies ("the image shows X") when the task says
nothing else. A task names its own (the ECG task: "ecg", "ekg", "tracing", "rhythm"...)."""

_SUBJECT_NOUN = re.compile(r"[a-z0-9]+(?:[ \-][a-z0-9]+)*")


def _final_cue(nouns: str) -> str:
    # Lookbehinds sit after a literal word, not before it: a pattern that starts with a
    # literal is searched for with a fast string scan instead of being tried at every position.
    return (
        rf"final(?<!\wfinal)\s+(?:(?:{nouns})\s+|overall\s+)?(?:classification|diagnosis|"
        r"answer|verdict|interpretation|impression|assessment|conclusion|category|label|result|"
        r"decision)\b"
    )


def _words(alternatives: list[str]) -> str:
    """`\\b(?:alternatives)`, rewritten so that the regex engine can scan for it quickly.

    Each alternative starts with a lower-case letter. They are nested by that letter, in
    their order (`c(?:lassification|onclusion)|d(?:iagnosis)`), and the word boundary is
    checked after the letter: a pattern that starts with literal characters is searched
    for by scanning for them, while one that starts with `\\b` is tried at every position.
    """
    by_letter: dict[str, list[str]] = {}
    for alternative in alternatives:
        by_letter.setdefault(alternative[0], []).append(alternative[1:])
    # `(?<!\w.)` after the letter is `\b` before it: no word character comes before.
    return (
        "(?:"
        + "|".join(f"{letter}(?<!\\w.)(?:{'|'.join(rests)})" for letter, rests in by_letter.items())
        + ")"
    )


def _stated_cue(nouns: str) -> str:
    return (
        _words(
            [
                r"classification(?<!differential\sclassification)",
                r"classif(?:y|ied|ying)(?:\s+(?:this|the|it|as))?"
                rf"(?:\s+(?:{nouns}))?(?:\s+as)?",
                r"categori[sz](?:e|ed)\s+as",
                r"best\s+(?:described|categori[sz]ed)\s+as",
                r"falls?\s+(?:into|under)",
                r"diagnosis(?<!differential\sdiagnosis)",
                *("impression", "conclusion", r"in\s+summary", "summary", "verdict", "answer"),
                *("assessment", "boxed", "label", "category"),
            ]
        )
        + r"\b"
    )


def _phrase_cue(nouns: str) -> str:
    verb = rf"\s+(?:(?:{nouns})\s+)?(?:is|shows|demonstrates|represents)"
    return (
        _words(
            [
                *(r"consistent\s+with", r"suggestive\s+of", r"indicative\s+of"),
                *(r"compatible\s+with", r"diagnostic\s+of", r"in\s+keeping\s+with"),
                *("represents?", r"most\s+likely", "likely", "probably", "overall", "therefore"),
                *("thus", "hence", r"best\s+(?:fits?|matches)", "fits?", "matches"),
                r"appears\s+to\s+be",
                *(f"this{verb}", f"the{verb}", f"it{verb}"),
            ]
        )
        + r"\b"
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
    r"[ \t\"')\]]*[:\-–—]?[ \t]*(?:is|are|was|were|has\s+been|seems?|appears?)?[ \t]*"
    r"(?:not\b|ruled\s+out|excluded|unlikely|less\s+likely|absent|inappropriate)",
    re.IGNORECASE,
)
_HEDGE_AFTER = re.compile(
    r"[ \t\"')\]]*,?[ \t]*(?:(?:cannot|can\s*not|can'?t)\s+be\s+"
    r"(?:entirely\s+|completely\s+|fully\s+)?(?:excluded|ruled\s+out)|(?:is|are|remains?)\s+(?:also\s+)?(?:possible|a\s+possibility)|"
    r"(?:should|could|may|might)\s+(?:also\s+)?be\s+considered|was\s+considered|"
    r"in\s+the\s+differential|pattern|changes|criteria)",
    re.IGNORECASE,
)
_LIST_SEPARATOR = re.compile(
    r"[\s,;/|()\[\]\"'.:\-–—]*(?:(?:or|and|and/or|vs\.?|versus)[\s,;/|()\[\]\"'.:\-–—]*)?$",
    re.IGNORECASE,
)
# Up to two modifiers may follow the conjunction: "either NORMAL or acute inferior STEMI".
_NEGATED_LIST = re.compile(
    r"[ \t]*(?:/|or|nor|and/or)[ \t]*(?:[a-z][a-z\-]*[ \t]+){0,2}$", re.IGNORECASE
)
_BULLET = re.compile(r"[ \t]*(?:[-+•●▪◦]|\d{1,2}[.)]|[a-dA-D][.)])?[ \t]*[\"'(\[]?")
_OPTIONS_INTRO = re.compile(
    r"\b(?:one\s+of|following|options?|categories|choices|possible\s+(?:labels|classes))\b",
    re.IGNORECASE,
)
_CHECK_YES = re.compile(r"[\s:=\-–—|]*(?:yes\b|✓|✔|☑|✅|\[x\]|\(x\))", re.IGNORECASE)
_CHECK_NO = re.compile(r"[\s:=\-–—|]*(?:no\b|✗|✘|✕|✖|☐|❌|❎|\[ \]|\( \))", re.IGNORECASE)
_ZONE_LEAD = re.compile(r"[\s:;,.=|>\-–—]*")  # between a verdict cue and what it introduces
# A newline, or one of .!?; followed by a space. Written to start with a character class,
# which the regex engine scans for quickly, rather than as an alternation.
_SENTENCE_END = re.compile(r"[\n.!?;](?:(?<=\n)|(?=\s))")
# Cue lists below go through `_words` (alternatives by first letter, boundary after it),
# which the regex engine scans for quickly; a leading `\b` is tried at every position.
_DISCLAIMER = [
    r"as\s+an\s+ai\b",
    r"consult\s+(?:a|with\s+a|your)\s+(?:qualified|medical|healthcare|licensed|specialist|"
    r"physician|doctor|clinician)",
]
_NO_VERDICT_VERB = (
    r"(?:assign|determine|commit|choose|decide|select|pick|settle|reach|distinguish|"
    r"give\s+(?:a|one)|"
    r"make\s+(?:a|one)|classify|categori[sz]e)\b"
)
_DECLINE_WORDS = [
    r"i(?:'m|\s+am)\s+(?:sorry|unable|not\s+able)",
    r"i\s+(?:cannot|can'?t|can\s+not|won'?t|will\s+not)\s+(?:provide|interpret|classify|"
    r"determine|make|give|offer|help|analy[sz]e|assess|diagnose)",
    r"unable\s+to\s+(?:interpret|classify|determine|provide|analy[sz]e|assess|read|make)",
    r"not\s+(?:able|qualified)\s+to\s+(?:provide|give|make|diagnose)",
    r"cannot\s+provide\s+(?:a\s+)?(?:medical\s+)?diagnos[ie]s",
    # The answer declines to choose: it has findings but says it gives no verdict.
    *(
        rf"{negated}\s+(?:\w+\s+){{0,2}}?{_NO_VERDICT_VERB}"
        for negated in (
            r"cannot",
            r"can\s*not",
            r"can'?t",
            r"could\s+not",
            r"couldn'?t",
            r"unable\s+to",
            r"not\s+able\s+to",
            r"won'?t",
            r"will\s+not",
            r"would\s+rather\s+not",
            r"i'd\s+rather\s+not",
        )
    ),
    r"not\s+possible\s+to\s+(?:classify|determine|assign|choose|decide)",
    *(
        rf"{noun}\s+(?:is\s+)?not\s+possible"
        for noun in ("classification", "diagnosis", "verdict", "answer")
    ),
    r"cannot\s+be\s+(?:classified|determined|categori[sz]ed)",
    r"torn\s+between",
    *(rf"{verb}\s+be\s+either\b" for verb in ("could", "may", "might", "can")),
    r"indeterminate\b",
    r"undetermined\b",
]
_DECLINE = re.compile(_words(_DECLINE_WORDS), re.IGNORECASE)
_REFUSAL = re.compile(_words([*_DECLINE_WORDS, *_DISCLAIMER]), re.IGNORECASE)
# A label in the same clause as one of these is a condition, not a verdict: "POST_MI if
# the Q waves are pathological, otherwise NORMAL". "even if" and "as if" do not condition.
_CONDITIONAL = re.compile(
    _words(
        [
            r"if(?<!even\sif)(?<!as\sif)",
            *("unless", "otherwise", "whether", r"depend(?:s|ing)?\s+on", r"in\s+case"),
            r"should\s+(?:the|there|this|it|these|they|any)",
        ]
    )
    + r"\b",
    re.IGNORECASE,
)
# What ends the reach of a condition within a sentence ("If X, Y would apply, but since
# ... the answer is Z"). Each alternative starts with a literal character, for speed.
_CONDITION_BREAK = re.compile(
    r"\n|\.(?=\s)|!(?=\s)|\?(?=\s)|;(?=\s)|"
    + _words(
        [
            rf"{word}\b"
            for word in (
                *("but", "however", "whereas", "although", "though", "since", "because"),
                *("given", "so", "therefore", "thus", "hence", "yet"),
            )
        ]
    )[3:-1],  # the letter groups as alternatives of their own, not one group
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
        "classification",
        "category",
        "label",
    ]
)
_SEPARATORS = r"[ \t_\-]"
_SEPARATOR_CHAR = re.compile(r"[\s_\-]")
_NEXT_WORD = re.compile(r"[ \t]+([A-Za-z][A-Za-z\-]*)")
# What `_strip_markdown` drops, but for quote marks: runs of `*`, backquote, `~` and `#`; the
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
# Characters that re.IGNORECASE equates with an ASCII letter but `str.lower()` does not map
# onto one: İ ı ſ and the Kelvin sign (found by testing every code point).
_FOLDS_ONTO_ASCII = re.compile("[\u0130\u0131\u017f\u212a]")
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


@dataclass(frozen=True)
class _Grammar:
    """The case-insensitive cue patterns, in one of two compilations.

    `re.IGNORECASE` costs 2-3 times more per pattern than matching plain lower-case
    literals, so the patterns are also compiled without it for use on `clean.lower()`. The
    two readings agree on every text whose lower-casing is faithful (`_lowercase_is_faithful`:
    same length, same word characters, ASCII letters only where IGNORECASE finds them;
    checked over all of Unicode); other texts keep the IGNORECASE compilation.
    """

    final_cue: re.Pattern[str]
    stated_cue: re.Pattern[str]
    phrase_cue: re.Pattern[str]
    clause_break: re.Pattern[str]
    scope_terminator: re.Pattern[str]
    negation_before: re.Pattern[str]
    not_a_negation: re.Pattern[str]
    double_negative: re.Pattern[str]
    hedge_before: re.Pattern[str]
    after: re.Pattern[str]  # group "hedge" or "negation", matched right after a mention
    before: re.Pattern[str]  # a negation or a hedge: does the clause before need reading?
    list_separator: re.Pattern[str]
    negated_list: re.Pattern[str]
    options_intro: re.Pattern[str]
    check_yes: re.Pattern[str]
    check_no: re.Pattern[str]
    refusal: re.Pattern[str]  # a decline or a disclaimer ("as an AI", "consult a doctor")
    decline: re.Pattern[str]  # the answer declines to give a verdict
    conditional: re.Pattern[str]
    condition_break: re.Pattern[str]

    def for_lower_case(self) -> _Grammar:
        """The same patterns without IGNORECASE, for lower-cased text."""
        patterns = [getattr(self, field.name) for field in fields(self)]
        # Every literal letter is written in lower case, so dropping the flag only changes
        # what upper-case text would match.
        assert not any(re.search(r"(?<!\\)(?<!\(\?)[A-Z]", p.pattern) for p in patterns)
        return _Grammar(*(re.compile(p.pattern, p.flags & ~re.IGNORECASE) for p in patterns))


@functools.lru_cache(maxsize=16)
def _grammars(subject_nouns: tuple[str, ...]) -> tuple[_Grammar, _Grammar]:
    """The cue patterns for a task's subject nouns: `(cased, for lower-cased text)`."""
    nouns = "|".join(
        r"\s+".join(re.escape(word) for word in noun.split())
        for noun in sorted(subject_nouns, key=len, reverse=True)
    )
    cased = _Grammar(
        re.compile(_final_cue(nouns), re.IGNORECASE),
        re.compile(_stated_cue(nouns), re.IGNORECASE),
        re.compile(_phrase_cue(nouns), re.IGNORECASE),
        *_COMMON_PATTERNS,
    )
    return cased, cased.for_lower_case()


_COMMON_PATTERNS = (
    _CLAUSE_BREAK,
    _SCOPE_TERMINATOR,
    _NEGATION_BEFORE,
    _NOT_A_NEGATION,
    _DOUBLE_NEGATIVE,
    _HEDGE_BEFORE,
    # Hedge first: "X cannot be excluded" is a hedge, not "X ... excluded". One match instead
    # of two, for every mention.
    re.compile(f"(?P<hedge>{_HEDGE_AFTER.pattern})|(?P<negation>{_NEGATION_AFTER.pattern})", re.I),
    # Finds something wherever either of the two finds something.
    re.compile(f"(?:{_NEGATION_BEFORE.pattern})|(?:{_HEDGE_BEFORE.pattern})", re.I),
    _LIST_SEPARATOR,
    _NEGATED_LIST,
    _OPTIONS_INTRO,
    _CHECK_YES,
    _CHECK_NO,
    _REFUSAL,
    _DECLINE,
    _CONDITIONAL,
    _CONDITION_BREAK,
)


@dataclass(frozen=True)
class _Text:
    """The cleaned answer with the text and patterns the cue searches run on."""

    clean: str
    folded: str  # `clean.lower()` where that is faithful, else `clean`
    rx: _Grammar  # the compilation that reads `folded` case-insensitively
    lowered: bool  # `folded` is the lower-cased text

    @classmethod
    def of(cls, clean: str, grammars: tuple[_Grammar, _Grammar]) -> _Text:
        if _lowercase_is_faithful(clean):
            return cls(clean, clean.lower(), grammars[1], True)
        return cls(clean, clean, grammars[0], False)

    def sentence_end(self, position: int, default: int) -> int:
        """End of the sentence holding `position` (after its closing mark), else `default`.

        Only the text up to `default` is searched (plus the one character that tells a
        full stop from a decimal point), so that many searches stay linear in all.
        """
        found = _SENTENCE_END.search(self.clean, position, default + 1)
        return default if found is None else min(found.end(), default)


# --- working values ----------------------------------------------------------------------


class _Mention(NamedTuple):
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
        bad = [noun for noun in nouns if not _SUBJECT_NOUN.fullmatch(noun)]
        if bad or not nouns:
            raise ValueError(
                f"subject_nouns must be words of letters and digits, e.g. ('ecg', 'tracing'); "
                f"got {list(subject_nouns)!r}"
            )
        self.subject_nouns = nouns
        self._json = JSONLabelParser(labels) if use_json else None
        self._allow_sole_mention = allow_sole_mention
        self._grammars = _grammars(nouns)
        self._not_a_noun = _NOT_A_NOUN | {word for noun in nouns for word in noun.split()}
        # The differential tests turn this off to compare with the plain full scan.
        self._fast_mentions = True

    @functools.cached_property
    def _mentions(self) -> _MentionTable:
        # Built on the first parse, not with the task: `medbatch tasks` and anything else that
        # only lists tasks skips ~80 regex compilations. Two threads racing build it twice
        # (the table is cached per label set anyway), which is harmless.
        return _mention_table(self.labels)

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
            return ParseResult(method="internal-error", evidence=repr(exc)[:_EVIDENCE_CHARS])

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

    def _parse(self, text: str, *, finish_reason: str | None) -> ParseResult:
        truncated = finish_reason == "length"
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
        cleaned = _Text.of(clean, self._grammars)
        mentions = self._find_mentions(cleaned)
        # Without a finish reason, an answer that stops mid-sentence was most likely cut.
        cut_off = finish_reason is None and _looks_cut_off(clean, mentions)
        verdict = self._decide(cleaned, mentions, truncated=truncated or cut_off)
        if (
            verdict is not None
            and (verdict.weak or verdict.tier < _Tier.STATED)
            and cleaned.rx.decline.search(cleaned.folded, verdict.start)
        ):
            # "... findings ... I cannot confidently assign a single classification": only
            # an outright explicit verdict outweighs a refusal said after it.
            verdict = None
        if verdict is not None:
            return self._result(text, clean, index, verdict)
        if truncated:
            return ParseResult(status=AnswerStatus.TRUNCATED, method="truncated")
        if cut_off:
            return ParseResult(status=AnswerStatus.UNPARSEABLE, method="cut-off")
        return self._no_verdict(text, cleaned, index)

    @staticmethod
    def _no_verdict(text: str, cleaned: _Text, index: _Offsets) -> ParseResult:
        """A refusal when the answer says it declines, else `unparseable`."""
        refusal = cleaned.rx.refusal.search(cleaned.folded)
        if refusal is None:
            return ParseResult(status=AnswerStatus.UNPARSEABLE, method="none")
        start, end = refusal.span()
        return ParseResult(
            status=AnswerStatus.REFUSAL,
            method="refusal",
            evidence=_evidence(text, index, cleaned.clean, start, end),
            span=_span(index, start, end),
        )

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

    def _find_mentions(self, text: _Text) -> list[_Mention]:
        table = self._mentions
        clean = text.clean
        raw: list[tuple[str, int, int, bool]] = []
        plain: list[bool] = []
        for group, start, end in table.matches(text, fast=self._fast_mentions):
            matched = clean[start:end]
            is_plain = not matched.isupper() and not _SEPARATOR_CHAR.search(matched)
            if is_plain and self._is_adjective(clean, end, self._not_a_noun):
                continue
            canonical = table.group_is_name[group] and (matched.isupper() or "_" in matched)
            raw.append((table.group_label[group], start, end, canonical))
            plain.append(is_plain)
        polarity = _polarities(text, raw)
        # Negated mentions ("- NORMAL: excluded") cannot make a line look like an option.
        in_options = _option_positions(
            text, [m for m, (negated, _) in zip(raw, polarity, strict=True) if not negated]
        )
        conditional = _conditional_positions(text, raw)
        return [
            _Mention(
                label,
                start,
                end,
                canonical,
                is_plain,
                negated,
                weak,
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
        following = _NEXT_WORD.match(clean, end)
        return following is not None and following.group(1).lower() not in not_a_noun

    # --- zones and the decision ------------------------------------------------------

    def _decide(  # noqa: PLR0911 - one return per tier reads better than a flag
        self, text: _Text, mentions: list[_Mention], *, truncated: bool
    ) -> _Verdict | None:
        considered = [m for m in mentions if m.considered]
        if not considered:
            return None
        starts = [m.start for m in considered]
        clean, folded, rx = text.clean, text.folded, text.rx

        final_cues = list(rx.final_cue.finditer(folded))
        zone_ends = [cue.start() for cue in final_cues[1:]] + [len(clean)]
        final_zones = [
            (cue.end(), min(zone_end, cue.end() + _FINAL_ZONE_CHARS))
            for cue, zone_end in zip(final_cues, zone_ends, strict=False)
        ]
        verdict = self._last_zone_verdict(_Tier.FINAL, final_zones, considered, starts, text)
        if verdict is not None:
            return self._accept(verdict, text, truncated)

        stated_zones = [
            (cue.end(), min(len(clean), cue.end() + _STATED_ZONE_CHARS))
            for cue in rx.stated_cue.finditer(folded)
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
        return None

    @staticmethod
    def _accept(verdict: _Verdict, text: _Text, truncated: bool) -> _Verdict | None:
        # In a cut-off answer the verdict word itself may be cut ("POST" of "POST_MI"); trust
        # it only when the answer went on after it.
        if truncated and not text.clean[verdict.end :].strip():
            return None
        return verdict

    @staticmethod
    def _last_zone_verdict(
        tier: _Tier,
        zones: list[tuple[int, int]],
        considered: list[_Mention],
        starts: list[int],
        text: _Text,
    ) -> _Verdict | None:
        """The last zone's verdict, preferring zones that assert a label outright."""
        verdicts = [
            v for zone in zones if (v := _zone_verdict(tier, zone, considered, starts, text))
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
    tried there, on the lower-cased text without IGNORECASE (much cheaper per alternative).
    """

    pattern: re.Pattern[str]
    group_label: Mapping[str, str]
    group_is_name: Mapping[str, bool]
    starts: re.Pattern[str] | None  # over " " + clean.lower(); None: use `pattern` alone
    by_first_word: Mapping[str, re.Pattern[str]]  # by the first word `starts` found
    folded_by_first_word: Mapping[str, re.Pattern[str]]  # the same, for lower-cased text
    abbreviations: Mapping[str, str]  # group -> the capitals it must be written in ("MI")
    bare_label_too_long: re.Pattern[str]  # matches text with more letters than any phrase

    def matches(self, text: _Text, *, fast: bool = True) -> Iterator[tuple[str, int, int]]:
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

    def _match_at(self, text: _Text, word: str, position: int) -> re.Match[str] | None:
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
def _mention_table(labels: LabelSet) -> _MentionTable:
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
    by_first_word = {}
    folded_by_first_word = {}
    if alternatives and ascii_words:
        # Longest word first, so the group that matches names the longest first word the
        # text starts with; every phrase that can match there starts with a prefix of that
        # word. The character before a start is not a letter or digit (the lookbehind).
        first_words = sorted(follows, key=len, reverse=True)
        starts = re.compile(r"[^a-z0-9](?=(" + _by_first_letter(first_words, follows) + "))")
        for word in first_words:
            chosen = [n for n, (first, _) in enumerate(alternatives) if word.startswith(first)]
            by_first_word[word] = _alternation([alternatives[n][1] for n in chosen])
            folded_by_first_word[word] = _alternation(
                [folded_alternatives[n] for n in chosen], flags=0
            )
    return _MentionTable(
        pattern=_alternation([alt for _, alt in alternatives]),
        group_label=group_label,
        group_is_name=group_is_name,
        starts=starts,
        by_first_word=by_first_word,
        folded_by_first_word=folded_by_first_word,
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


def _alternation(alternatives: list[str], flags: int = re.IGNORECASE) -> re.Pattern[str]:
    regex = r"(?<![A-Za-z0-9])(?:" + "|".join(alternatives) + r")(?![A-Za-z0-9])"
    return re.compile(regex, flags)


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
    return "".join(kept).replace("|", " "), _Offsets(clean_starts, origin_starts, length)


def _strip_inline_markup(text: str) -> tuple[str, _Offsets]:
    """`_strip_markdown` for a text without quote marks, with no Python loop over the marks.

    `split` alternates kept and dropped runs; the offsets of every kept run follow from
    running sums of their lengths. Empty kept runs are harmless: `_Offsets` looks a
    position up in the last run starting at or before it, which is the non-empty one.
    """
    parts = _MARKUP.split(text)
    kept = parts[::2]
    origin_ends = list(itertools.accumulate(map(len, parts)))
    clean_starts = [0, *itertools.accumulate(map(len, kept[:-1]))]
    origin_starts = [0, *origin_ends[1::2]]
    clean = "".join(kept)
    return clean.replace("|", " "), _Offsets(clean_starts, origin_starts, len(clean))


def _quote_marks(text: str) -> list[tuple[int, int]]:
    """Spans of the `>` marks that sit before any kept non-blank character of their line."""
    spans = []
    for prefix in _QUOTE_PREFIX.finditer(text):
        at = text.find(">", prefix.start(), prefix.end())
        while at >= 0:
            spans.append((at, at + 1))
            at = text.find(">", at + 1, prefix.end())
    return spans


def _option_positions(text: _Text, raw: list[tuple[str, int, int, bool]]) -> set[int]:
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


def _option_block_positions(text: _Text, raw: list[tuple[str, int, int, bool]]) -> set[int]:
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
        bullet = _BULLET.match(clean, line)
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
    text: _Text,
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


def _conditional_positions(text: _Text, raw: list[tuple[str, int, int, bool]]) -> set[int]:
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


def _looks_cut_off(clean: str, mentions: list[_Mention]) -> bool:
    """Whether the answer stops mid-sentence: not after a closing mark, nor on a label."""
    tail = clean.rstrip()
    if not tail or (mentions and mentions[-1].end >= len(tail)):
        return False
    return tail[-1].isalnum() or tail[-1] in ",:(-–—/"


def _polarities(text: _Text, raw: list[tuple[str, int, int, bool]]) -> list[tuple[bool, bool]]:
    """`(negated, weak)` of each mention in `raw`."""
    polarity: list[tuple[bool, bool]] = []
    previous_end = 0
    for _, start, end, _ in raw:
        negated, weak = _polarity(text, start, end, previous_end)
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


def _polarity(text: _Text, start: int, end: int, floor: int) -> tuple[bool, bool]:
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


def _clause_before(text: _Text, start: int, floor: int) -> str:
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


def _zone_verdict(
    tier: _Tier,
    zone: tuple[int, int],
    considered: list[_Mention],
    starts: list[int],
    text: _Text,
) -> _Verdict | None:
    """The verdict of one zone: its first sentence holding an asserted (else hedged) label."""
    low = bisect.bisect_left(starts, zone[0])
    high = bisect.bisect_left(starts, zone[1])
    inside = considered[low:high]
    if tier >= _Tier.STATED:
        # A plain word ("normal") is a verdict on the line the cue introduces, not among
        # the findings on the lines after it.
        lead = _ZONE_LEAD.match(text.clean, zone[0], zone[1])
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
