"""The cue vocabulary of `FinalAnswerParser`: what introduces, negates, hedges or conditions
a verdict, in plain task-independent English, compiled per task's subject nouns.

Holds the regex sources (`final`, `stated` and `phrase` cues; negation, hedge, decline,
refusal, condition and option-list words), `Grammar` (all of them compiled, twice: with
IGNORECASE and for lower-cased text) and `Text` (a cleaned answer with the compilation
that reads it). The one task-specific part is injected: `grammars(subject_nouns)` builds
the cues for what a task calls the thing it classifies ("the ECG shows X"); the generic
set (`DEFAULT_SUBJECT_NOUNS`) holds no domain word. Label names and synonyms are not
here (`medbatch.parsing.mentions`).

Must not import: the rest of `medbatch.parsing` (mentions, scope, markdown, answer) or
anything outside the standard library, so that the vocabulary can be read and changed
on its own.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, fields

__all__ = [
    "BULLET",
    "DEFAULT_SUBJECT_NOUNS",
    "NOT_A_NOUN",
    "SUBJECT_NOUN",
    "ZONE_LEAD",
    "Grammar",
    "Text",
    "grammars",
]

# --- cue phrases (plain English, task-independent) ---------------------------------------

DEFAULT_SUBJECT_NOUNS = ("image", "study", "scan", "exam", "examination")
"""What an answer may call the thing it classifies ("the image shows X") when the task says
nothing else. A task names its own (the ECG task: "ecg", "ekg", "tracing", "rhythm"...)."""

SUBJECT_NOUN = re.compile(r"[a-z0-9]+(?:[ \-][a-z0-9]+)*")


def _final_cue(nouns: str) -> str:
    # Lookbehinds sit after a literal word, not before it: a pattern that starts with a
    # literal is searched for with a fast string scan instead of being tried at every position.
    return (
        rf"final(?<!\wfinal)\s+(?:(?:{nouns})\s+|overall\s+)?(?:classification|diagnosis|"
        r"answer|verdict|interpretation|impression|assessment|conclusion|category|label|result|"
        r"decision|read)\b"
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
                # A report heading ("Interpretation: X"); not "an interpretation of the ECG".
                r"interpretation(?=[ \t]*[:\-–—])",
                r"read(?=[ \t]*:)",  # "Read: X", a report's own heading
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
# Two labels set against each other ("X versus Y", "X vs. Y") are candidates, not a verdict.
# Matched on the text between them: up to four words qualifying the first ("atrial
# fibrillation with rapid ventricular response versus Y"), up to two modifiers of the second.
_VERSUS = re.compile(
    r"(?:[ \t]+[a-z][a-z\-/]*){0,4}[ \t]*[(\[]?[ \t]*(?:versus|vs\.?)[ \t]+"
    r"(?:[a-z][a-z\-]*[ \t]+){0,2}$",
    re.IGNORECASE,
)
# After a label and up to four words qualifying it, what rules it out.
_RULED_OUT_LATER = re.compile(
    r"(?:[ \t]+[a-z][a-z\-/]*){1,4}[ \t]+(?:(?:is|was|has\s+been)[ \t]+)?"
    r"(?:ruled\s+out|excluded)\b",
    re.IGNORECASE,
)
_NEGATED_LIST = re.compile(
    r"[ \t]*(?:/|or|nor|and/or)[ \t]*(?:[a-z][a-z\-]*[ \t]+){0,2}$", re.IGNORECASE
)
BULLET = re.compile(r"[ \t]*(?:[-+•●▪◦]|\d{1,2}[.)]|[a-dA-D][.)])?[ \t]*[\"'(\[]?")
_OPTIONS_INTRO = re.compile(
    r"\b(?:one\s+of|following|options?|categories|choices|possible\s+(?:labels|classes))\b",
    re.IGNORECASE,
)
_CHECK_YES = re.compile(r"[\s:=\-–—|]*(?:yes\b|✓|✔|☑|✅|\[x\]|\(x\))", re.IGNORECASE)
_CHECK_NO = re.compile(r"[\s:=\-–—|]*(?:no\b|✗|✘|✕|✖|☐|❌|❎|\[ \]|\( \))", re.IGNORECASE)
ZONE_LEAD = re.compile(r"[\s:;,.=|>\-–—]*")  # between a verdict cue and what it introduces
# A newline, or one of .!?; followed by a space. Written to start with a character class,
# which the regex engine scans for quickly, rather than as an alternation.
# "vs." is an abbreviation ("X vs. Y"), not the end of a sentence.
_SENTENCE_END = re.compile(r"[\n.!?;](?:(?<=\n)|(?<![\W_][vV][sS]\.)(?=\s))")
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
NOT_A_NOUN = frozenset(
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
        "versus",
        "vs",
    ]
)
# Characters that re.IGNORECASE equates with an ASCII letter but `str.lower()` does not map
# onto one: İ ı ſ and the Kelvin sign (found by testing every code point).
_FOLDS_ONTO_ASCII = re.compile("[\u0130\u0131\u017f\u212a]")


@dataclass(frozen=True)
class Grammar:
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
    versus: re.Pattern[str]  # between two labels offered as candidates
    ruled_out_later: re.Pattern[str]
    options_intro: re.Pattern[str]
    check_yes: re.Pattern[str]
    check_no: re.Pattern[str]
    refusal: re.Pattern[str]  # a decline or a disclaimer ("as an AI", "consult a doctor")
    decline: re.Pattern[str]  # the answer declines to give a verdict
    conditional: re.Pattern[str]
    condition_break: re.Pattern[str]

    def for_lower_case(self) -> Grammar:
        """The same patterns without IGNORECASE, for lower-cased text."""
        patterns = [getattr(self, field.name) for field in fields(self)]
        # Every literal letter is written in lower case, so dropping the flag only changes
        # what upper-case text would match.
        assert not any(re.search(r"(?<!\\)(?<!\(\?)[A-Z]", p.pattern) for p in patterns)
        return Grammar(*(re.compile(p.pattern, p.flags & ~re.IGNORECASE) for p in patterns))


@functools.lru_cache(maxsize=16)
def grammars(subject_nouns: tuple[str, ...]) -> tuple[Grammar, Grammar]:
    """The cue patterns for a task's subject nouns: `(cased, for lower-cased text)`."""
    nouns = "|".join(
        r"\s+".join(re.escape(word) for word in noun.split())
        for noun in sorted(subject_nouns, key=len, reverse=True)
    )
    cased = Grammar(
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
    _VERSUS,
    _RULED_OUT_LATER,
    _OPTIONS_INTRO,
    _CHECK_YES,
    _CHECK_NO,
    _REFUSAL,
    _DECLINE,
    _CONDITIONAL,
    _CONDITION_BREAK,
)


@dataclass(frozen=True)
class Text:
    """The cleaned answer with the text and patterns the cue searches run on."""

    clean: str
    folded: str  # `clean.lower()` where that is faithful, else `clean`
    rx: Grammar  # the compilation that reads `folded` case-insensitively
    lowered: bool  # `folded` is the lower-cased text

    @classmethod
    def of(cls, clean: str, grammars: tuple[Grammar, Grammar]) -> Text:
        """`clean` with the compilation that reads it: lower-cased when that is faithful."""
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

    def declines(self, cue: int) -> bool:
        """Whether the cue's sentence declines it ("I cannot determine the classification")."""
        start = max(self.folded.rfind(mark, 0, cue) for mark in ".!?\n") + 1
        return self.rx.decline.search(self.folded, start, cue) is not None


def _lowercase_is_faithful(text: str) -> bool:
    """Whether `re.IGNORECASE` on `text` finds ASCII words exactly where `text.lower()` has them.

    True unless `text` holds one of the four characters that case-insensitive matching
    equates with an ASCII letter although `lower()` does not map them onto it (checked
    over all of Unicode): they would be missed by a search in the lower-cased text.
    """
    return text.isascii() or _FOLDS_ONTO_ASCII.search(text) is None
