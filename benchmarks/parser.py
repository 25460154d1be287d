"""Parser accuracy on the labelled answer corpus: medbatch's FinalAnswerParser vs the seed.

Run: `python benchmarks/parser.py [--corpus tests/data/parser_corpus.jsonl] [--show-errors]`

Each corpus line is one realistic model answer with the label a careful reader would take
from it (`expected`, or null when the answer has no verdict: truncated, ambiguous, refusal,
empty). Figures, over all answers:

- exact match: the parser's label equals `expected` (null == null counts: saying "no
  verdict" for an answer without one is correct);
- wrong label: a label was returned and it is not `expected` (the costly error: it silently
  corrupts accuracy);
- unparseable: no label returned although `expected` has one (counted as coverage loss).

The seed notebook's regex answers `UNKNOWN` for "no label".
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from seed_regex import extract_classification

from medbatch.parsing.answer import FinalAnswerParser
from medbatch.tasks.ecg import ECG_LABELS

DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / "tests" / "data" / "parser_corpus.jsonl"


@dataclass
class Score:
    """Counts for one parser over the corpus."""

    total: int = 0
    exact: int = 0
    wrong: int = 0
    unparsed: int = 0

    def add(self, got: str | None, expected: str | None) -> str:
        self.total += 1
        if got == expected:
            self.exact += 1
            return "ok"
        if got is None:
            self.unparsed += 1
            return "unparsed"
        self.wrong += 1
        return "wrong"

    def pct(self, count: int) -> float:
        return 100.0 * count / self.total if self.total else 0.0


def load_corpus(path: Path) -> list[dict[str, object]]:
    """Read the JSONL corpus."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def main(argv: list[str] | None = None) -> int:
    """Print medbatch vs the seed regex side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--show-errors", action="store_true", help="list every miss")
    args = parser.parse_args(argv)

    corpus = load_corpus(args.corpus)
    medbatch_parser = FinalAnswerParser(ECG_LABELS)

    def medbatch(item: dict[str, object]) -> str | None:
        return medbatch_parser.parse(
            str(item["text"]), finish_reason=str(item["finish_reason"])
        ).label

    def seed(item: dict[str, object]) -> str | None:
        label = extract_classification(str(item["text"]))
        return None if label == "UNKNOWN" else label

    rows: list[tuple[str, Score, list[str]]] = []
    candidates: list[tuple[str, Callable[[dict[str, object]], str | None]]] = [
        ("medbatch FinalAnswerParser", medbatch),
        ("seed regex (notebook)", seed),
    ]
    for name, read in candidates:
        score = Score()
        misses = []
        for item in corpus:
            expected = item["expected"]
            got = read(item)
            outcome = score.add(got, expected if isinstance(expected, str) else None)
            if outcome != "ok":
                misses.append(
                    f"  {item['id']} [{item['trap']}] {outcome}: got {got}, expected {expected}"
                )
        rows.append((name, score, misses))

    print(f"Parser benchmark on {args.corpus.name}: {len(corpus)} answers")
    print(f"{'parser':<30}{'exact match':>14}{'wrong label':>14}{'unparseable':>14}")
    for name, score, _ in rows:
        print(
            f"{name:<30}{score.pct(score.exact):>13.1f}%{score.pct(score.wrong):>13.1f}%"
            f"{score.pct(score.unparsed):>13.1f}%"
        )
    ours, theirs = rows[0][1], rows[1][1]
    print()
    print(
        f"exact match: medbatch / seed = {ours.exact}/{theirs.exact} = "
        f"{ours.exact / max(theirs.exact, 1):.2f}x"
    )
    print(
        f"wrong labels: medbatch {ours.wrong} vs seed {theirs.wrong} "
        f"({theirs.wrong / max(ours.wrong, 1):.1f}x fewer)"
        if ours.wrong
        else f"wrong labels: medbatch 0 vs seed {theirs.wrong}"
    )
    if args.show_errors:
        for name, _, misses in rows:
            print(f"\n{name} misses:")
            print("\n".join(misses) or "  none")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
