"""OpenAICompatibleRunner throughput against the loopback server, next to the OpenAI SDK.

Run: `python benchmarks/openai_runner.py [-n 1000] [--concurrency 16,64] [--latency 0.05]
[--repeats 1]`

The server (`python -m medbatch.testing.openai_server`) runs in its own process, as a real
one would, and answers every request after `latency` seconds. With `C` requests in flight,
no client can do better than `C / latency` requests per second: each figure is the measured
rate as a fraction of that ideal, for

- **medbatch**: `OpenAICompatibleRunner(concurrency=C).run(requests)`, each request carrying
  a small PNG as a base64 data URL, the answer parsed into an `InferenceResponse`;
- **SDK** (the peer, what a user writes instead): `openai.AsyncOpenAI` +
  `asyncio.Semaphore(C)` + `asyncio.gather` over the same requests (same PNG data URL);
- **sequential** (baseline): the runner with `concurrency=1` (its ideal is `1 / latency`).

Also the client's CPU time per request (`resource.getrusage`, this process only: the
server is another process). Figures are medians over `--repeats` runs.

Targets (issue 19): medbatch >= the SDK at every C, and >= 85 % of ideal at C = 16.
Prints a table and `BENCH {json}` lines (ratio = medbatch / SDK).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import resource
import statistics
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
TARGET_AT = 16


def emit(
    figure: str,
    medbatch: float,
    baseline: float | None,
    unit: str,
    *,
    lower_is_better: bool = False,
    **extra: Any,
) -> None:
    """One machine-readable line for run_all.py (`ratio`: times better than the baseline)."""
    ratio: float | None = None
    if baseline and medbatch:
        ratio = baseline / medbatch if lower_is_better else medbatch / baseline
    payload = {"figure": figure, "medbatch": medbatch, "baseline": baseline, "unit": unit}
    extra["lower_is_better"] = lower_is_better
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


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_requests(n: int, prefix: str) -> list[InferenceRequest]:
    image = ImageRef.from_bytes(_png(), media_type="image/png")
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


def measure(base_url: str, n: int, concurrency: int, prefix: str) -> tuple[float, float, int]:
    """medbatch: requests/s over `n` requests (after a warm-up), CPU s/request, failures."""
    runner = OpenAICompatibleRunner(
        base_url=base_url, model="bench", concurrency=concurrency, api_key_env=None
    )
    with runner:
        list(runner.run(make_requests(concurrency, f"warm-{prefix}")))  # connections open
        requests = make_requests(n, prefix)
        cpu = _cpu_s()
        started = time.perf_counter()
        failed = sum(not r.ok for r in runner.run(requests))
        elapsed = time.perf_counter() - started
        cpu = _cpu_s() - cpu
    return n / elapsed, cpu / n, failed


def measure_sdk(base_url: str, n: int, concurrency: int) -> tuple[float, float, int]:
    """The peer: `openai.AsyncOpenAI` + `asyncio.Semaphore` + `asyncio.gather`."""
    import openai  # the peer only; not a medbatch dependency

    url = "data:image/png;base64," + base64.b64encode(_png()).decode("ascii")

    async def main() -> tuple[float, float, int]:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=2)
        semaphore = asyncio.Semaphore(concurrency)

        async def one(i: int) -> bool:
            async with semaphore:
                try:
                    completion = await client.chat.completions.create(
                        model="bench",
                        max_tokens=32,
                        messages=[
                            {
                                "role": "user",
                                "content": [
                                    {"type": "text", "text": f"Classify ECG {i}."},
                                    {"type": "image_url", "image_url": {"url": url}},
                                ],
                            }
                        ],
                    )
                except openai.OpenAIError:
                    return False
                return completion.choices[0].message.content is not None

        async with client:
            await asyncio.gather(*(one(i) for i in range(concurrency)))  # connections open
            cpu = _cpu_s()
            started = time.perf_counter()
            answered = await asyncio.gather(*(one(i) for i in range(n)))
            elapsed = time.perf_counter() - started
            cpu = _cpu_s() - cpu
        return n / elapsed, cpu / n, answered.count(False)

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="requests per concurrent run")
    parser.add_argument(
        "--concurrency", default="16,64", help="requests in flight, comma-separated"
    )
    parser.add_argument("--latency", type=float, default=0.05, help="server seconds/request")
    parser.add_argument("--repeats", type=int, default=1, help="runs per figure (median)")
    parser.add_argument(
        "--sequential-n", type=int, default=60, help="requests for the sequential run"
    )
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]
    per_run = sum(2 * (args.n + 2 * level) for level in levels) + args.sequential_n + 2
    total = per_run * args.repeats + 10
    rows: list[tuple[str, int, float, float, float, int]] = []
    with server_process(args.latency, total) as base_url:
        seq = [measure(base_url, args.sequential_n, 1, f"seq{r}-") for r in range(args.repeats)]
        sequential = statistics.median(rate for rate, _, _ in seq)
        seq_cpu = statistics.median(cpu for _, cpu, _ in seq)
        seq_failed = sum(failed for _, _, failed in seq)
        seq_ideal = 1 / args.latency
        rows.append(
            ("sequential (C 1)", args.sequential_n, sequential, seq_ideal, seq_cpu, seq_failed)
        )
        results: dict[int, tuple[float, float, float, float]] = {}
        for level in levels:
            ours, sdk = [], []
            for r in range(args.repeats):
                # Alternate who goes first so a drift in machine load hits both alike.
                if r % 2:
                    sdk.append(measure_sdk(base_url, args.n, level))
                ours.append(measure(base_url, args.n, level, f"c{level}r{r}-"))
                if not r % 2:
                    sdk.append(measure_sdk(base_url, args.n, level))
            ideal = level / args.latency
            m_rate = statistics.median(x[0] for x in ours)
            m_cpu = statistics.median(x[1] for x in ours)
            s_rate = statistics.median(x[0] for x in sdk)
            s_cpu = statistics.median(x[1] for x in sdk)
            rows.append(
                (f"medbatch run (C {level})", args.n, m_rate, ideal, m_cpu, sum(x[2] for x in ours))
            )
            rows.append(
                (
                    f"openai SDK + sem (C {level})",
                    args.n,
                    s_rate,
                    ideal,
                    s_cpu,
                    sum(x[2] for x in sdk),
                )
            )
            results[level] = (m_rate, s_rate, m_cpu, s_cpu)
    print(
        f"server latency {args.latency * 1000:.0f} ms, one request per record, PNG data URLs,"
        f" median of {args.repeats}"
    )
    header = f"{'client':<28} {'requests':>8} {'req/s':>9} {'ideal':>9} {'of ideal':>9}"
    print(header + f" {'CPU ms/req':>10} {'failed':>7}")
    for name, count, rate, ideal, cpu, failed in rows:
        print(
            f"{name:<28} {count:>8} {rate:>9.1f} {ideal:>9.1f} {rate / ideal:>8.1%}"
            f" {cpu * 1000:>10.2f} {failed:>7}"
        )
    for level, (m_rate, s_rate, m_cpu, s_cpu) in results.items():
        ideal = level / args.latency
        target = f">= SDK{' and >= 85% of ideal' if level == TARGET_AT else ''}"
        met = m_rate >= s_rate and (level != TARGET_AT or m_rate / ideal >= TARGET_FRACTION)
        print(
            f"C {level}: medbatch/SDK {m_rate / s_rate:.2f}: {'meets' if met else 'MISSES'}"
            f" {target}"
        )
        extra = {"concurrency": level, "latency_s": args.latency, "n": args.n}
        emit(
            f"openai_runner_req_per_s_c{level}",
            m_rate,
            s_rate,
            "req/s",
            target=target,
            medbatch_of_ideal=m_rate / ideal,
            baseline_of_ideal=s_rate / ideal,
            **extra,
        )
        emit(
            f"openai_runner_cpu_ms_per_request_c{level}",
            m_cpu * 1000,
            s_cpu * 1000,
            "ms",
            lower_is_better=True,
            **extra,
        )
    emit("openai_runner_sequential_of_ideal", sequential * args.latency, None, "fraction")


if __name__ == "__main__":
    main()
