"""Synthetic ECG generator speed: milliseconds per page at the Kaggle size, on one core.

Target (issue #7): at most 200 ms per page, rendering and JPEG encoding included.

    python benchmarks/synthetic_ecg.py [--pages 40] [--size 2213x1572]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time

from medbatch.datasets.synthetic import ECG_CLASSES, render_ecg_page, synthesize_ecg

TARGET_MS = 200.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=40)
    parser.add_argument("--size", default="2213x1572", help="WIDTHxHEIGHT in pixels")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the target says

    render_ecg_page("NORMAL", 0, size=(width, height))  # warm the grid and font caches
    signal_ms, render_ms, total_ms = [], [], []
    for i in range(args.pages):
        label = ECG_CLASSES[i % len(ECG_CLASSES)].label
        start = time.perf_counter()
        synthesize_ecg(label, i)
        signal_ms.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        page = render_ecg_page(label, i, size=(width, height))
        rendered = time.perf_counter()
        page.save(io.BytesIO(), format="JPEG", quality=90)
        render_ms.append((rendered - start) * 1e3)
        total_ms.append((time.perf_counter() - start) * 1e3)

    print(f"synthetic ECG pages, {width}x{height} px, {args.pages} pages, 1 core")
    print(f"  signal synthesis        median {statistics.median(signal_ms):7.1f} ms/page")
    print(f"  signal + paper render   median {statistics.median(render_ms):7.1f} ms/page")
    print(
        f"  + JPEG encode (q=90)    median {statistics.median(total_ms):7.1f} ms/page"
        f"   max {max(total_ms):7.1f}"
    )
    verdict = "meets" if statistics.median(total_ms) <= TARGET_MS else "MISSES"
    print(f"  target                  {TARGET_MS:7.1f} ms/page -> {verdict}")


if __name__ == "__main__":
    main()
