"""Parser speed on the labelled answer corpus: medbatch's FinalAnswerParser vs the seed regex.

Run: `python benchmarks/parser_speed.py [--corpus tests/data/parser_corpus.jsonl] [--repeat 7]`

Both parsers read every corpus answer `--repeat` times, interleaved answer by answer so that
a busy machine slows both alike; the time of an answer is its fastest run (the least
disturbed one). Printed per parser: mean, median and p95 microseconds per answer, and the
records per second one core would parse at that mean. The ratio says how many times slower
medbatch is than the seed's four regular expressions (it reads far more: see
`benchmarks/parser.py` for what that buys).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from parser import DEFAULT_CORPUS, load_corpus
from seed_regex import extract_classification

from medbatch.tasks.ecg import ECG_TASK


def _fastest(read: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        read()
        best = min(best, time.perf_counter() - start)
    return best * 1e6


def _summary(name: str, micros: list[float]) -> str:
    ordered = sorted(micros)
    mean = statistics.mean(ordered)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return (
        f"{name:<30}{mean:>10.1f}{statistics.median(ordered):>10.1f}{p95:>10.1f}"
        f"{1e6 / mean:>14,.0f}"
    )


def main(argv: list[str] | None = None) -> int:
    """Print medbatch vs the seed regex, microseconds per answer, side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--repeat", type=int, default=7, help="runs per answer (fastest kept)")
    args = parser.parse_args(argv)

    corpus = load_corpus(args.corpus)
    medbatch = ECG_TASK.parser  # the ECG task's parser, with its subject nouns
    ours: list[float] = []
    seed: list[float] = []
    for item in corpus:
        text = str(item["text"])
        finish_reason = None if item["finish_reason"] is None else str(item["finish_reason"])
        read_ours = functools.partial(medbatch.parse, text, finish_reason=finish_reason)
        ours.append(_fastest(read_ours, args.repeat))
        seed.append(_fastest(functools.partial(extract_classification, text), args.repeat))

    chars = statistics.mean(len(str(item["text"])) for item in corpus)
    print(f"Parser speed on {args.corpus.name}: {len(corpus)} answers, {chars:.0f} chars mean")
    print(f"{'parser':<30}{'mean µs':>10}{'p50 µs':>10}{'p95 µs':>10}{'answers/s':>14}")
    print(_summary("medbatch FinalAnswerParser", ours))
    print(_summary("seed regex (notebook)", seed))
    print()
    print(f"mean time: medbatch / seed = {statistics.mean(ours) / statistics.mean(seed):.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
