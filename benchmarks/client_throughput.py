"""Client-side throughput without a model: medbatch's `classify` vs the notebook's loop.

Run: `python benchmarks/client_throughput.py [-n 10000] [--quick] [--repeat 3]`

Both sides do the client's share of a run for `n` recorded answers, on one core:

- **medbatch**: `classify(dataset, get_task("ecg"), replay, store=tmp)`. Records are stage
  references (as in the notebook); for every request the runner serialises the OpenAI chat
  body the way `OpenAICompatibleRunner` would (`json.dumps` of the rendered messages), then
  answers from the recorded JSONL. The pipeline parses each answer with
  `FinalAnswerParser`, streams each prediction to the run store (append + fsync per group),
  writes the parquet table and the manifest, and computes the headline metrics.
- **notebook** (baseline): the seed's cells, faithfully: per-row message dicts and
  `json.dumps`, the list of `(json,)` tuples for `create_dataframe`, the answers as a
  pandas frame of OpenAI `choices` JSON strings, `.apply(extract_classification)` with the
  seed's four regexes, `value_counts()` and the printed bar chart (to a buffer). No
  durability, no resume, no provenance: it does strictly less work.

Targets (issue #10): >= 5,000 records/s and >= 50x the notebook.

Prints a table and one `BENCH {json}` line per figure for `run_all.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from seed_regex import extract_classification_from_choices

from medbatch.datasets.base import ListDataset
from medbatch.pipeline import classify
from medbatch.records import ImageRef, InferenceRequest, InferenceResponse, Record
from medbatch.runners.replay import ReplayRunner
from medbatch.tasks.ecg import ECG_COT_PROMPT, ECG_SYSTEM_PROMPT
from medbatch.tasks.registry import get_task

TARGET_RATE = 5_000.0
TARGET_RATIO = 50.0
STAGE = "@MEDGEMMA_DEMO.PUBLIC.ECG_STAGE/ecg_data_new_version/ecg data new version"
FOLDERS = {
    "NORMAL": "normal_ecg_images",
    "ABNORMAL_HEARTBEAT": "abnormal_heartbeat_ecg_images",
    "MYOCARDIAL_INFARCTION": "myocardial_infarction_ecg_images",
    "POST_MI": "post_mi_history_ecg_images",
}


def emit(figure: str, medbatch: float, baseline: float | None, unit: str, **extra: Any) -> None:
    """One machine-readable line for run_all.py (higher is better unless `lower_is_better`)."""
    ratio = medbatch / baseline if baseline else None
    payload = {"figure": figure, "medbatch": medbatch, "baseline": baseline, "unit": unit}
    print("BENCH " + json.dumps({**payload, "ratio": ratio, **extra}))


def sample_answers() -> list[dict[str, Any]]:
    """The recorded answers shipped with medbatch (realistic chain-of-thought answers)."""
    text = resources.files("medbatch.data").joinpath("ecg_sample_answers.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def make_corpus(n: int, seed: int = 0) -> tuple[list[Record], list[InferenceResponse]]:
    """`n` stage-referenced records and their recorded answers, cycled from the samples."""
    rng = random.Random(seed)
    samples = sample_answers()
    records: list[Record] = []
    responses: list[InferenceResponse] = []
    for i in range(n):
        sample = samples[rng.randrange(len(samples))]
        truth = str(sample["truth"])
        record_id = f"{FOLDERS[truth]}/{i:06d}.jpg"
        stage_path = f"{STAGE}/{record_id}"
        records.append(
            Record(
                id=record_id,
                image=ImageRef.from_stage(stage_path, checksum=f"{i:064x}"),
                label=truth,
                metadata={"folder": FOLDERS[truth]},
            )
        )
        responses.append(
            InferenceResponse(record_id=record_id, text=str(sample["text"]), finish_reason="stop")
        )
    return records, responses


class SerializingReplayRunner(ReplayRunner):
    """Replay that first serialises each request as an OpenAI chat body, as a client must."""

    name = "replay"

    def _run_batch(self, requests: Sequence[InferenceRequest]) -> Iterable[InferenceResponse]:
        for request in requests:
            body = {
                "model": self.model_id,
                "messages": [
                    message.to_openai(lambda ref: ref.stage_path or ref.url or "")
                    for message in request.messages
                ],
                "temperature": request.params.temperature,
                "max_tokens": request.params.max_tokens,
                "seed": request.params.seed,
            }
            self.serialised_bytes += len(json.dumps(body))
        return super()._run_batch(requests)

    serialised_bytes = 0


class Timing:
    """Wall-clock and CPU seconds of one side's run."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.wall = time.perf_counter() - wall
        self.cpu = time.process_time() - cpu


def run_medbatch(
    records: list[Record], replay_path: Path, run_dir: Path
) -> tuple[Timing, dict[str, Any]]:
    """Timing of one full `classify` into a fresh run directory; and its metrics."""
    task = get_task("ecg")
    dataset = ListDataset(records, labels=task.labels)
    runner = SerializingReplayRunner(replay_path, model_id="google/medgemma-4b-it")
    timing = Timing()
    with timing.measure():
        result = classify(dataset, task, runner, store=run_dir, progress=False, canary=0)
    assert len(result.predictions) == len(records), "every record must be answered once"
    return timing, result.metrics


def parse_only(responses: list[InferenceResponse]) -> float:
    """CPU seconds medbatch's answer parser alone takes over the answers (the breakdown)."""
    parser = get_task("ecg").parser
    started = time.process_time()
    for response in responses:
        parser.parse(response.text, finish_reason=response.finish_reason)
    return time.process_time() - started


def run_notebook(records: list[Record], responses: list[InferenceResponse]) -> tuple[Timing, Any]:
    """Seconds for the seed notebook's client-side cells over the same answers."""
    jpg_files = [record.image.stage_path or "" for record in records]
    # The batch output as the notebook read it: one row per record, `choices` JSON text.
    output_rows = [
        json.dumps(
            [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": response.text},
                    "finish_reason": response.finish_reason,
                }
            ]
        )
        for response in responses
    ]
    timing = Timing()
    with timing.measure():
        counts = _notebook_cells(jpg_files, output_rows)
    return timing, counts


def _notebook_cells(jpg_files: list[str], output_rows: list[str]) -> Any:
    # -- cell "Prepare Batch Input Data": messages and json.dumps per row --------------------
    messages_list = []
    for jpg_file in jpg_files:
        messages = [
            {
                "role": "system",
                "content": [{"type": "text", "text": ECG_SYSTEM_PROMPT}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": ECG_COT_PROMPT},
                    {"type": "image_url", "image_url": {"url": jpg_file}},
                ],
            },
        ]
        messages_list.append(messages)
    schema = ["MESSAGES"]
    data = [(json.dumps(m),) for m in messages_list]
    input_df = pd.DataFrame(data, columns=schema)  # session.create_dataframe, locally
    # -- cell "Analyze Results": to_pandas, apply the regex, value_counts, print --------------
    results_pandas = pd.DataFrame({"id": output_rows})
    results_pandas["CLASSIFICATION"] = results_pandas["id"].apply(
        extract_classification_from_choices
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print("\n" + "=" * 50)
        print("         ECG CLASSIFICATION RESULTS")
        print("=" * 50)
        counts = results_pandas["CLASSIFICATION"].value_counts()
        total = len(results_pandas)
        for cls, count in counts.items():
            pct = (count / total) * 100
            bar = "█" * int(pct / 5)
            print(f"{cls:25} {count:3} ({pct:5.1f}%) {bar}")
        print("=" * 50)
        print(f"{'TOTAL':25} {total:3}")
        print("=" * 50)
    assert len(input_df) == len(jpg_files)
    return counts


def pin_one_core() -> str:
    """Pin this process to one core (the target is per core); say which."""
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to core {core}"
    return "not pinned (no sched_setaffinity)"


def main(argv: list[str] | None = None) -> int:
    """Measure both sides `--repeat` times, alternating, and print medians side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="recorded answers")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side (median)")
    parser.add_argument("--quick", action="store_true", help="2,000 answers, 1 repeat")
    parser.add_argument("--keep", type=Path, default=None, help="keep the last run dir here")
    args = parser.parse_args(argv)
    n, repeat = (2_000, 1) if args.quick else (args.n, args.repeat)
    pinned = pin_one_core()

    records, responses = make_corpus(n)
    workdir = Path(tempfile.mkdtemp(prefix="medbatch-bench-"))
    try:
        replay_path = workdir / "answers.jsonl"
        with replay_path.open("w", encoding="utf-8") as handle:
            for response in responses:
                handle.write(response.model_dump_json(exclude_defaults=True) + "\n")
        ours: list[Timing] = []
        theirs: list[Timing] = []
        metrics: dict[str, Any] = {}
        counts: Any = None
        for attempt in range(repeat):
            run_dir = workdir / f"run-{attempt}"
            timing, metrics = run_medbatch(records, replay_path, run_dir)
            ours.append(timing)
            timing, counts = run_notebook(records, responses)
            theirs.append(timing)
            if args.keep is None or attempt < repeat - 1:
                shutil.rmtree(run_dir, ignore_errors=True)
            else:
                shutil.copytree(run_dir, args.keep, dirs_exist_ok=True)

        parse_cpu = parse_only(responses)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    ours_wall = statistics.median(t.wall for t in ours)
    ours_cpu = statistics.median(t.cpu for t in ours)
    theirs_wall = statistics.median(t.wall for t in theirs)
    theirs_cpu = statistics.median(t.cpu for t in theirs)
    ours_rate, theirs_rate = n / ours_wall, n / theirs_wall
    ratio = ours_rate / theirs_rate
    cpu_ratio = theirs_cpu / ours_cpu
    print(f"client-side throughput, {n} recorded answers, {repeat} run(s) each, {pinned}")
    print(f"{'':34}{'records/s':>12}{'wall s':>9}{'cpu s':>9}{'rec/cpu-s':>11}")
    for name, wall, cpu in (
        ("medbatch classify + ReplayRunner", ours_wall, ours_cpu),
        ("notebook loop (baseline)", theirs_wall, theirs_cpu),
    ):
        print(f"{name:34}{n / wall:>12,.0f}{wall:>9.3f}{cpu:>9.3f}{n / cpu:>11,.0f}")
    print(f"ratio medbatch / notebook: {ratio:.3f}x wall, {cpu_ratio:.3f}x cpu")
    print(
        f"of medbatch's cpu time, FinalAnswerParser.parse alone: {parse_cpu:.3f} s "
        f"({100 * parse_cpu / ours_cpu:.0f}%, {1e6 * parse_cpu / n:.0f} us/answer)"
    )
    print(
        f"targets: >= {TARGET_RATE:,.0f} records/s -> "
        f"{'meets' if ours_rate >= TARGET_RATE else 'MISSES'}; >= {TARGET_RATIO:.0f}x -> "
        f"{'meets' if ratio >= TARGET_RATIO else 'MISSES'}"
    )
    print(
        f"medbatch accuracy {metrics.get('accuracy')}, coverage {metrics.get('coverage')}; "
        f"notebook UNKNOWN {int(counts.get('UNKNOWN', 0)) if counts is not None else '?'}"
    )
    emit(
        "client throughput (records/s, 1 core)",
        ours_rate,
        theirs_rate,
        "records/s",
        target=f">= {TARGET_RATE:,.0f} records/s and >= {TARGET_RATIO:.0f}x",
        met=bool(ours_rate >= TARGET_RATE and ratio >= TARGET_RATIO),
        n=n,
    )
    emit(
        "client throughput (records/cpu-s, 1 core)",
        n / ours_cpu,
        n / theirs_cpu,
        "records/cpu-s",
        n=n,
        parse_share=parse_cpu / ours_cpu,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
