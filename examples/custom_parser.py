"""A custom `LabelParser`, checked with medbatch's `ParserContract`.

Some models are asked to end with a fixed line such as `ANSWER: <label>`. `AnswerLineParser`
reads only that line (the last one, if the model restates it), maps the value through the
task's `LabelSet` (names and synonyms, case and separators folded), and says `unparseable`
rather than guess. `ParserContract` then checks the promises every parser must keep: it
never raises on any string, returns a label only with status `parsed`, reads every bare
label, and gets the known answers below right.

Run it (no model, no network; needs pytest: `pip install pytest`, or `medbatch[dev]`):

    python examples/custom_parser.py            # parse a few answers, then run the contract
    python examples/custom_parser.py --offline  # the same: this example is always offline
"""

from __future__ import annotations

import os
import re
import sys

try:
    import pytest
except ImportError:
    sys.exit("custom_parser.py needs pytest to run the contract suite: pip install pytest")

from medbatch import AnswerStatus, LabelParser, LabelSet
from medbatch.records import ParseResult
from medbatch.tasks.ecg import ECG_LABELS
from medbatch.testing.contracts import ParserContract

_ANSWER_LINE = re.compile(r"^\s*\**answer\**\s*[:=-]\s*(?P<value>.+?)\s*$", re.I | re.M)


class AnswerLineParser(LabelParser):
    """Reads the last `ANSWER: <label>` line of an answer."""

    def parse(self, text: str | None, *, finish_reason: str | None = None) -> ParseResult:
        """Never raises: anything unexpected is `unparseable` (or `empty`/`truncated`)."""
        if not text or not text.strip():
            return ParseResult(status=AnswerStatus.EMPTY, method="empty")
        lines = list(_ANSWER_LINE.finditer(text))
        if lines:
            match = lines[-1]
            label = self.labels.normalize(match.group("value"))
            if label is not None:
                return ParseResult(
                    label=label,
                    status=AnswerStatus.PARSED,
                    method="answer-line",
                    evidence=match.group(0).strip(),
                    span=match.span(),
                )
        else:
            label = self.labels.normalize(text)  # a bare label, e.g. from constrained decoding
            if label is not None:
                return ParseResult(label=label, status=AnswerStatus.PARSED, method="exact")
        if finish_reason == "length":
            return ParseResult(status=AnswerStatus.TRUNCATED, method="answer-line")
        return ParseResult(status=AnswerStatus.UNPARSEABLE, method="answer-line")


class TestAnswerLineParser(ParserContract):
    """Every promise of `LabelParser`, checked for `AnswerLineParser`."""

    @pytest.fixture
    def parser(self) -> LabelParser:
        return AnswerLineParser(ECG_LABELS)

    @pytest.fixture
    def answers(self) -> list[tuple[str, str | None]]:
        return [
            ("Sinus rhythm, no ST changes.\nANSWER: NORMAL", "NORMAL"),
            ("Q waves in II, III, aVF.\n**Answer:** post-MI", "POST_MI"),
            ("ANSWER: NORMAL\n...on reflection, irregular.\nANSWER: atrial fibrillation",
             "ABNORMAL_HEARTBEAT"),
            ("I cannot tell.", None),
        ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Parse a few answers, then run the contract suite on this file with pytest."""
    args = sys.argv[1:] if argv is None else argv
    parser = AnswerLineParser(ECG_LABELS)
    for text in ("ANSWER: STEMI", "answer = normal ecg", "The rhythm is irregular."):
        result = parser.parse(text)
        print(f"{text!r:32} -> {result.label} ({result.status.value}, {result.method})")
    labels: LabelSet = parser.labels
    print(f"Checking the LabelParser contract for {len(labels)} labels...")
    extra = [a for a in args if a != "--offline"]
    # `-c os.devnull`: this file is checked on its own, not under the settings of whatever
    # project it sits in (a repository's pytest config may name plugins not installed here).
    options = [
        "-q",
        "-p",
        "no:cacheprovider",
        "-c",
        os.devnull,
        "--rootdir",
        os.path.dirname(__file__),
    ]
    return int(pytest.main([__file__, *options, *extra]))


if __name__ == "__main__":
    raise SystemExit(main())
