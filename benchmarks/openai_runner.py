"""OpenAICompatibleRunner throughput against the loopback server: fraction of the ideal.

Run: `python benchmarks/openai_runner.py [-n 2000] [--concurrency 16] [--latency 0.05]`

The server (`python -m medbatch.testing.openai_server`) runs in its own process, as a real
one would, and answers every request after `latency` seconds. With `concurrency` requests in
flight, no client can do better than `concurrency / latency` requests per second: the
figure is the measured rate as a fraction of that ideal, for

- **medbatch**: `OpenAICompatibleRunner(concurrency=C)`, each request carrying a small PNG
  as a base64 data URL, the answer parsed into an `InferenceResponse`;
- **sequential** (baseline): the same runner with `concurrency=1`, which is what the
  seed's one-request-at-a-time loop achieves (its ideal is `1 / latency`).

Target (issue #6): medbatch >= 85 % of its ideal. Prints a table and `BENCH {json}` lines.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from PIL import Image

from medbatch.records import (
    ChatMessage,
    GenerationParams,
    ImagePart,
    ImageRef,
    InferenceRequest,
    TextPart,
)
from medbatch.runners.openai import OpenAICompatibleRunner

TARGET_FRACTION = 0.85


def emit(figure: str, medbatch: float, baseline: float | None, unit: str, **extra: Any) -> None:
    """One machine-readable line for run_all.py."""
    ratio = medbatch / baseline if baseline else None
    payload = {"figure": figure, "medbatch": medbatch, "baseline": baseline, "unit": unit}
    print("BENCH " + json.dumps({**payload, "ratio": ratio, **extra}))


@contextmanager
def server_process(latency: float, max_requests: int) -> Iterator[str]:
    """Start the loopback server in a subprocess; yield its base URL."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "medbatch.testing.openai_server",
            "--latency",
            str(latency),
            "--max-requests",
            str(max_requests),
            "--lifetime",
            "600",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        if not base_url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the server did not start (said {base_url!r})")
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=10)


def make_requests(n: int, prefix: str) -> list[InferenceRequest]:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(buffer, format="PNG")
    image = ImageRef.from_bytes(buffer.getvalue(), media_type="image/png")
    return [
        InferenceRequest(
            record_id=f"{prefix}{i}",
            messages=(
                ChatMessage(
                    role="user",
                    content=(TextPart(text=f"Classify ECG {i}."), ImagePart(image=image)),
                ),
            ),
            params=GenerationParams(max_tokens=32),
        )
        for i in range(n)
    ]


def measure(base_url: str, n: int, concurrency: int, prefix: str) -> tuple[float, int]:
    """Requests per second over `n` requests (after a warm-up), and how many failed."""
    runner = OpenAICompatibleRunner(
        base_url=base_url, model="bench", concurrency=concurrency, api_key_env=None
    )
    with runner:
        list(runner.run(make_requests(concurrency, f"warm-{prefix}")))  # connections open
        requests = make_requests(n, prefix)
        started = time.perf_counter()
        failed = sum(not r.ok for r in runner.run(requests))
        elapsed = time.perf_counter() - started
    return n / elapsed, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="requests for the concurrent run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.05, help="server seconds/request")
    parser.add_argument(
        "--sequential-n", type=int, default=60, help="requests for the sequential run"
    )
    args = parser.parse_args()
    total = args.n + args.sequential_n + args.concurrency + 1 + 10
    with server_process(args.latency, total) as base_url:
        sequential, seq_failed = measure(base_url, args.sequential_n, 1, "seq-")
        concurrent, con_failed = measure(base_url, args.n, args.concurrency, "con-")
    ideal_seq = 1 / args.latency
    ideal_con = args.concurrency / args.latency
    rows = [
        ("sequential (concurrency 1)", args.sequential_n, sequential, ideal_seq, seq_failed),
        (
            f"medbatch (concurrency {args.concurrency})",
            args.n,
            concurrency_rate := concurrent,
            ideal_con,
            con_failed,
        ),
    ]
    print(f"server latency {args.latency * 1000:.0f} ms, one request per record, PNG data URLs")
    print(f"{'client':<28} {'requests':>8} {'req/s':>9} {'ideal':>9} {'of ideal':>9} {'failed':>7}")
    for name, count, rate, ideal, failed in rows:
        print(f"{name:<28} {count:>8} {rate:>9.1f} {ideal:>9.1f} {rate / ideal:>8.1%} {failed:>7}")
    fraction = concurrency_rate / ideal_con
    speedup = concurrency_rate / sequential
    print(f"speed-up over sequential: {speedup:.1f}x (ideal {args.concurrency}x)")
    verdict = "meets" if fraction >= TARGET_FRACTION else "MISSES"
    print(f"{verdict} the target: >= {TARGET_FRACTION:.0%} of concurrency / latency")
    emit(
        "openai_runner_fraction_of_ideal",
        fraction,
        sequential / ideal_seq,
        "fraction",
        target=TARGET_FRACTION,
    )
    emit(
        "openai_runner_requests_per_s",
        concurrency_rate,
        sequential,
        "req/s",
        concurrency=args.concurrency,
        latency_s=args.latency,
    )


if __name__ == "__main__":
    main()
