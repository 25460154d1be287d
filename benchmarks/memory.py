"""Peak memory of a run as the dataset grows: medbatch streams, the notebook holds everything.

Run: `python benchmarks/memory.py [--sizes 1000,100000] [--quick]`

Each measurement is a fresh Python process (so peaks never carry over) that runs one side
over N synthetic records and reports its peak RSS (`ru_maxrss`):

- **medbatch**: `classify` over a lazily generated dataset of N small in-memory PNG images
  (64x64 noise, ~12 kB each, made on demand: N × 12 kB would otherwise be in memory),
  answered with the recorded sample answers (a `FunctionRunner` that keeps nothing),
  streamed to a `RunStore` in a temp dir.
- **plain loop** (peer, issue #19): what a user writes instead: for each record, make the
  same image, run the same recorded answer through the task's parser and append one JSON
  line to a file; nothing is held.
- **notebook** (baseline): the seed's client cells over the same N records (stage paths,
  per-row `json.dumps` of the messages, the answers frame, regex `apply`, `value_counts`).

Targets (issue #10): peak < 1 GB at 10,000 records, and no growth with N; issue #19: peak
RSS at the largest N within 50 MB of the smallest (1k and 100k by default). "Growth" is the
slope of peak RSS between the smallest and largest N, in MB per 1,000 records; the text of
10,000 recorded answers alone is ~6 MB, so a slope near that is what holding the answers
(the replay file, the result table) costs, not images.

Prints a table and `BENCH {json}` lines for `run_all.py`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGET_MB = 1024.0
FLAT_MB = 50.0  # issue #19: peak at 100k records within this of the peak at 1k


def emit(figure: str, medbatch: float, baseline: float | None, unit: str, **extra: Any) -> None:
    """One machine-readable line for run_all.py."""
    ratio = baseline / medbatch if baseline and medbatch else None  # lower is better
    payload = {"figure": figure, "medbatch": medbatch, "baseline": baseline, "unit": unit}
    print("BENCH " + json.dumps({**payload, "ratio": ratio, "lower_is_better": True, **extra}))


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _png(seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def child_medbatch(n: int) -> dict[str, float]:
    """Run classify over n lazily made images; return peak RSS before and after."""
    from client_throughput import FOLDERS, sample_answers

    from medbatch.datasets.base import Dataset
    from medbatch.pipeline import classify
    from medbatch.records import ImageRef, InferenceRequest, Record
    from medbatch.tasks.registry import get_task
    from medbatch.testing import FunctionRunner

    task = get_task("ecg")
    samples = sample_answers()

    class LazyImages(Dataset):
        labels = task.labels

        def __iter__(self) -> Iterator[Record]:
            for i in range(n):
                truth = str(samples[i % len(samples)]["truth"])
                yield Record(
                    id=f"{FOLDERS[truth]}/{i:06d}.png",
                    image=ImageRef.from_bytes(_png(i), media_type="image/png"),
                    label=truth,
                )

        def __len__(self) -> int:
            return n

    def answer(request: InferenceRequest) -> str:
        # The recorded answer of this record, as a model would give it; `ReplayRunner`
        # would hold every recorded answer in memory, which is the replay's cost, not the
        # pipeline's that this figure is about.
        return str(samples[int(request.record_id[-10:-4]) % len(samples)]["text"])

    with tempfile.TemporaryDirectory(prefix="medbatch-mem-") as tmp:
        before = peak_rss_mb()
        result = classify(
            LazyImages(),
            task,
            FunctionRunner(answer, model_id="replay"),
            store=Path(tmp) / "run",
            progress=False,
            canary=0,
        )
        # The peak of the run itself: reading `result.predictions` would load the table.
        peak = peak_rss_mb()
        assert result.metrics["n"] == n
    return {"before": before, "peak": peak}


def child_plain_loop(n: int) -> dict[str, float]:
    """A user's loop: make each image, parse its recorded answer, append one JSON line."""
    from client_throughput import sample_answers

    from medbatch.tasks.registry import get_task

    task = get_task("ecg")
    samples = sample_answers()
    with tempfile.TemporaryDirectory(prefix="medbatch-mem-") as tmp:
        before = peak_rss_mb()
        with (Path(tmp) / "out.jsonl").open("w", encoding="utf-8") as out:
            for i in range(n):
                image = _png(i)
                sample = samples[i % len(samples)]
                parsed = task.parser.parse(str(sample["text"]), finish_reason="stop")
                line = {"record_id": f"{i:06d}", "bytes": len(image), "label": parsed.label}
                out.write(json.dumps(line) + "\n")
    return {"before": before, "peak": peak_rss_mb()}


def child_notebook(n: int) -> dict[str, float]:
    """Run the notebook's client cells over n records; return peak RSS before and after."""
    from client_throughput import make_corpus, run_notebook

    records, responses = make_corpus(n)
    before = peak_rss_mb()
    run_notebook(records, responses)
    return {"before": before, "peak": peak_rss_mb()}


def measure(side: str, n: int) -> dict[str, float]:
    """Run one side in a fresh interpreter and read its JSON answer."""
    completed = subprocess.run(
        [sys.executable, __file__, "--child", side, "-n", str(n)],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{side} at n={n} failed:\n{completed.stderr[-2000:]}")
    result: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    """Measure both sides at each size and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--quick", action="store_true", help="sizes 1000,10000")
    parser.add_argument(
        "--child", choices=["medbatch", "plain", "notebook"], help=argparse.SUPPRESS
    )
    parser.add_argument("-n", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        runner = {"medbatch": child_medbatch, "plain": child_plain_loop}.get(
            args.child, child_notebook
        )
        print(json.dumps(runner(args.n)))
        return 0

    sizes = [1000, 10000] if args.quick else [int(s) for s in args.sizes.split(",")]
    rows: list[tuple[int, dict[str, float], dict[str, float], dict[str, float] | None]] = []
    for n in sizes:
        # The notebook holds everything: past 20k records it measures only its own growth.
        notebook = measure("notebook", n) if n <= 20000 else None
        rows.append((n, measure("medbatch", n), measure("plain", n), notebook))

    print(f"peak RSS per run, fresh process each (pid {os.getpid()} parent)")
    print(
        f"{'records':>8}{'medbatch MB':>14}{'(imports)':>11}{'plain loop MB':>15}"
        f"{'(imports)':>11}{'notebook MB':>14}"
    )
    for n, ours, plain, nb in rows:
        notebook_mb = f"{nb['peak']:.1f}" if nb else "n/a"
        print(
            f"{n:>8}{ours['peak']:>14.1f}{ours['before']:>11.1f}{plain['peak']:>15.1f}"
            f"{plain['before']:>11.1f}{notebook_mb:>14}"
        )
    (n0, ours0, plain0, _), (n1, ours1, plain1, _) = rows[0], rows[-1]
    grew_ours = ours1["peak"] - ours0["peak"]
    grew_plain = plain1["peak"] - plain0["peak"]
    flat = grew_ours <= FLAT_MB
    print(
        f"peak RSS at {n1} minus at {n0}: medbatch {grew_ours:+.1f} MB, plain loop "
        f"{grew_plain:+.1f} MB -> target within {FLAT_MB:.0f} MB: "
        f"{'meets' if flat else 'MISSES'}"
    )
    emit(
        f"peak RSS growth {n0} -> {n1} records (MB)",
        grew_ours,
        grew_plain,
        "MB",
        target=f"<= {FLAT_MB:.0f} MB",
        met=flat,
        peer="plain loop (parse + append a JSON line, nothing held)",
        sizes=sizes,
    )
    emit(
        f"peak RSS at {n1} records vs plain loop (MB)",
        ours1["peak"],
        plain1["peak"],
        "MB",
        peer="plain loop",
    )
    with_notebook = [(n, ours, nb) for n, ours, _, nb in rows if nb is not None]
    if len(with_notebook) < 2:
        return 0
    (n0, ours0, theirs0), (n1, ours1, theirs1) = with_notebook[0], with_notebook[-1]
    per_k = 1000.0 / (n1 - n0) if n1 > n0 else 0.0
    slope_ours = (ours1["peak"] - ours0["peak"]) * per_k
    slope_theirs = (theirs1["peak"] - theirs0["peak"]) * per_k
    print(
        f"growth {n0} -> {n1}: medbatch {slope_ours:+.2f} MB per 1,000 records, "
        f"notebook {slope_theirs:+.2f} MB per 1,000 records"
    )
    met = ours1["peak"] < TARGET_MB
    print(
        f"target: < {TARGET_MB:.0f} MB at {n1} records -> {'meets' if met else 'MISSES'} "
        f"({ours1['peak']:.0f} MB)"
    )
    emit(
        f"peak RSS at {n1} records (MB)",
        ours1["peak"],
        theirs1["peak"],
        "MB",
        target=f"< {TARGET_MB:.0f} MB",
        met=met,
    )
    emit(
        "peak RSS growth (MB per 1,000 records)",
        slope_ours,
        slope_theirs,
        "MB/1k",
        sizes=[n0, n1],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
