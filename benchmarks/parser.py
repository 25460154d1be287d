"""Parser accuracy on the labelled answer corpora: medbatch's FinalAnswerParser vs the seed.

Run: `python benchmarks/parser.py [--corpus FILE ...] [--show-errors]`

By default five corpora, reported separately (never pooled):

- `parser_corpus.jsonl`, in-sample: 133 answers written one by one around known traps,
  which the parser was developed against;
- `parser_tuning.jsonl`: 320 answers from `tests/data/generate_parser_answers.py` (seed 1,
  phrase pool A), which the parser was tuned on;
- `parser_pool_c.jsonl` ("new tuning"): 500 report-style answers from
  `tests/data/generate_parser_pool_c.py` (whole report templates: "Impression:",
  "Final read:", tables, problem lists, over-reads, candidates, refusals, cut-offs), a
  second tuning set written by another method, which the parser was then tuned on;
- `parser_pool_d.jsonl` ("pool D"): 136 answers typed one by one in the styles of
  different VLMs (`tests/data/write_parser_pool_d.py`), a third tuning set;
- `parser_heldout.jsonl`: 400 answers from the same generator (seed 2, pools A and B; pool
  B's phrasings are in no other set), never read case by case while tuning. Written by
  the same person as the parser: see the generator's docstring for what that means.

`--show-errors` lists misses; do not use it on the held-out set while changing the parser.

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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from seed_regex import extract_classification

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
DEFAULT_CORPUS = DATA / "parser_corpus.jsonl"
CORPORA = {
    "in-sample": DEFAULT_CORPUS,
    "tuning": DATA / "parser_tuning.jsonl",
    "new tuning": DATA / "parser_pool_c.jsonl",
    "pool D": DATA / "parser_pool_d.jsonl",
    "held-out": DATA / "parser_heldout.jsonl",
}


@dataclass
class Score:
    """Counts for one parser over the corpus."""

    total: int = 0
    exact: int = 0
    wrong: int = 0
    unparsed: int = 0
    seconds: float = 0.0  # time spent parsing, all answers

    @property
    def us_per_answer(self) -> float:
        return 1e6 * self.seconds / self.total if self.total else 0.0

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


def score_corpus(
    corpus: list[dict[str, object]],
    candidates: list[tuple[str, Callable[[dict[str, object]], str | None]]],
) -> list[tuple[str, Score, list[str]]]:
    """Score every candidate on `corpus`: `(name, score, misses)`."""
    rows: list[tuple[str, Score, list[str]]] = []
    for name, read in candidates:
        score = Score()
        misses = []
        if corpus:
            read(corpus[0])  # untimed: the first parse builds the label set's patterns
        for item in corpus:
            expected = item["expected"]
            started = time.perf_counter()
            got = read(item)
            score.seconds += time.perf_counter() - started
            outcome = score.add(got, expected if isinstance(expected, str) else None)
            if outcome != "ok":
                misses.append(
                    f"  {item['id']} [{item['trap']}] {outcome}: got {got}, expected {expected}"
                )
        rows.append((name, score, misses))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print medbatch vs the seed regex side by side, one table per corpus."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus", type=Path, nargs="+", help="JSONL corpora (default: the three above)"
    )
    parser.add_argument("--show-errors", action="store_true", help="list every miss")
    args = parser.parse_args(argv)

    from medbatch.tasks.ecg import ECG_TASK

    medbatch_parser = ECG_TASK.parser  # the ECG task's parser, with its subject nouns

    def medbatch(item: dict[str, object]) -> str | None:
        finish = item["finish_reason"]
        return medbatch_parser.parse(
            str(item["text"]), finish_reason=None if finish is None else str(finish)
        ).label

    def seed(item: dict[str, object]) -> str | None:
        label = extract_classification(str(item["text"]))
        return None if label == "UNKNOWN" else label

    candidates: list[tuple[str, Callable[[dict[str, object]], str | None]]] = [
        ("medbatch FinalAnswerParser", medbatch),
        ("seed regex (notebook)", seed),
    ]
    corpora = {path.stem: path for path in args.corpus} if args.corpus else dict(CORPORA)
    for kind, path in corpora.items():
        if not path.exists():
            print(f"{kind}: {path} is missing; skipped", file=sys.stderr)
            continue
        rows = score_corpus(load_corpus(path), candidates)
        _print_table(kind, path, rows, show_errors=args.show_errors)
    return 0


def _print_table(
    kind: str, path: Path, rows: list[tuple[str, Score, list[str]]], *, show_errors: bool
) -> None:
    ours, theirs = rows[0][1], rows[1][1]
    print(f"Parser benchmark on {path.name} ({kind}): {ours.total} answers")
    print(
        f"{'parser':<30}{'exact match':>14}{'wrong label':>14}{'unparseable':>14}{'us/answer':>12}"
    )
    for name, score, _ in rows:
        print(
            f"{name:<30}{score.pct(score.exact):>13.1f}%{score.pct(score.wrong):>13.1f}%"
            f"{score.pct(score.unparsed):>13.1f}%{score.us_per_answer:>12.1f}"
        )
    print(
        f"exact match: medbatch / seed = {ours.exact}/{theirs.exact} = "
        f"{ours.exact / max(theirs.exact, 1):.2f}x"
    )
    print(f"wrong labels: medbatch {ours.wrong} vs seed {theirs.wrong}")
    for figure, mine, seeds, better, target, met in (
        (
            "exact match",
            ours.pct(ours.exact),
            theirs.pct(theirs.exact),
            ours.exact / max(theirs.exact, 1),
            ">= 97%",
            ours.pct(ours.exact) >= 97.0,
        ),
        (
            "wrong labels",
            ours.pct(ours.wrong),
            theirs.pct(theirs.wrong),
            theirs.wrong / max(ours.wrong, 1),
            "<= 1%",
            ours.pct(ours.wrong) <= 1.0,
        ),
    ):
        bench = {
            "figure": f"parser {figure}, {kind} ({ours.total} answers)",
            "medbatch": round(mine, 1),
            "baseline": round(seeds, 1),
            "unit": "%",
            "ratio": round(better, 2),
            "lower_is_better": figure == "wrong labels",
            "target": target,
            "met": met,
        }
        print("BENCH " + json.dumps(bench))
    if show_errors:
        for name, _, misses in rows:
            print(f"\n{name} misses:")
            print("\n".join(misses) or "  none")
    print()


if __name__ == "__main__":
    raise SystemExit(main())
