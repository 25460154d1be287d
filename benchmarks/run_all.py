"""Run every benchmark in `benchmarks/` and print one table: medbatch, baseline, ratio.

Run: `python benchmarks/run_all.py [--quick] [--only NAME ...] [--timeout 900] [--log DIR]`

Each script runs as its own subprocess (so one crash, hang or missing optional dependency
cannot take the others down; a failed or missing script is a `FAILED` row). Figures are
read from the scripts' `BENCH {json}` lines:

```
BENCH {"figure": "...", "medbatch": 1.0, "baseline": 2.0, "unit": "s", "ratio": 2.0,
       "lower_is_better": true, "target": "...", "met": true}
```

`ratio` is always "how many times better medbatch is" (so > 1 is good either way). Scripts
that print only human-readable tables are read with a small adapter per script; anything
else shows its last summary line. Both numbers of every row come from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# Quick mode arguments per script (full mode runs each script's defaults). Scripts not listed
# here run with no arguments in both modes.
QUICK_ARGS: dict[str, list[str]] = {
    "client_throughput": ["--quick"],
    "memory": ["--quick"],
    "stage_upload": ["--quick"],
    "synthetic_ecg": ["--pages", "5"],
    "parser_speed": ["--repeat", "2"],
    "startup": ["--repeat", "3"],
    "openai_runner": ["-n", "300"],
    "transformers_runner": ["--images", "8", "--batch-sizes", "1", "4"],
}
# The order of the table; other scripts found in the folder follow, sorted.
ORDER = (
    "client_throughput",
    "stage_upload",
    "memory",
    "openai_runner",
    "transformers_runner",
    "parser",
    "parser_speed",
    "synthetic_ecg",
    "startup",
)
NOT_BENCHMARKS = frozenset({"run_all", "seed_regex"})


@dataclass
class Row:
    """One figure of the table."""

    script: str
    figure: str
    medbatch: float | None = None
    baseline: float | None = None
    unit: str = ""
    ratio: float | None = None
    target: str | None = None
    met: bool | None = None
    note: str = ""


@dataclass
class Outcome:
    """What one script did."""

    script: str
    returncode: int | None
    seconds: float
    stdout: str
    stderr: str
    rows: list[Row] = field(default_factory=list)


def bench_rows(script: str, stdout: str) -> list[Row]:
    """Rows from `BENCH {json}` lines."""
    rows = []
    for line in stdout.splitlines():
        if not line.startswith("BENCH "):
            continue
        try:
            data: dict[str, Any] = json.loads(line[len("BENCH ") :])
        except json.JSONDecodeError:
            continue
        ratio = data.get("ratio")
        rows.append(
            Row(
                script=script,
                figure=str(data.get("figure", script)),
                medbatch=_number(data.get("medbatch")),
                baseline=_number(data.get("baseline")),
                unit=str(data.get("unit", "")),
                ratio=_number(ratio),
                target=data.get("target"),
                met=data.get("met"),
            )
        )
    return rows


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _parser_rows(script: str, stdout: str) -> list[Row]:
    rows = []
    table = dict(re.findall(r"^(medbatch \S+|seed regex \(notebook\))\s+([\d.]+)%", stdout, re.M))
    ours = next((float(v) for k, v in table.items() if k.startswith("medbatch")), None)
    seed = (
        _number(float(table["seed regex (notebook)"])) if "seed regex (notebook)" in table else None
    )
    if ours is not None:
        rows.append(
            Row(script, "parser exact match (%)", ours, seed, "%", ours / seed if seed else None)
        )
    wrong = re.search(r"wrong labels: medbatch (\d+) vs seed (\d+)", stdout)
    if wrong:
        a, b = int(wrong.group(1)), int(wrong.group(2))
        rows.append(
            Row(script, "parser wrong labels (count)", a, b, "answers", b / a if a else None)
        )
    return rows


def _parser_speed_rows(script: str, stdout: str) -> list[Row]:
    means = re.findall(r"^(.+?)\s{2,}([\d.,]+)\s+[\d.,]+\s+[\d.,]+\s+[\d.,]+\s*$", stdout, re.M)
    values = [(name.strip(), float(mean.replace(",", ""))) for name, mean in means]
    ours = next((v for n, v in values if n.lower().startswith("medbatch")), None)
    seed = next((v for n, v in values if "seed" in n.lower()), None)
    if ours is None:
        return []
    return [
        Row(script, "parser time per answer (us)", ours, seed, "us", seed / ours if seed else None)
    ]


def _synthetic_rows(script: str, stdout: str) -> list[Row]:
    total = re.search(r"JPEG encode.*?median\s+([\d.]+) ms/page", stdout)
    target = re.search(r"target\s+([\d.]+) ms/page -> (\w+)", stdout)
    if not total:
        return []
    return [
        Row(
            script,
            "synthetic ECG page (ms, 1 core)",
            float(total.group(1)),
            float(target.group(1)) if target else None,
            "ms",
            float(target.group(1)) / float(total.group(1)) if target else None,
            target="<= target (baseline column)",
            met=target.group(2) == "meets" if target else None,
            note="baseline = target",
        )
    ]


ADAPTERS: dict[str, Callable[[str, str], list[Row]]] = {
    "parser": _parser_rows,
    "parser_speed": _parser_speed_rows,
    "synthetic_ecg": _synthetic_rows,
}


def discover(only: list[str] | None) -> list[str]:
    """Benchmark scripts in this folder, in table order (missing known ones included)."""
    found = {
        path.stem
        for path in HERE.glob("*.py")
        if path.stem not in NOT_BENCHMARKS
        and not path.stem.startswith("_")
        and "__main__" in path.read_text(encoding="utf-8", errors="replace")
    }
    names = list(ORDER) + sorted(found - set(ORDER))
    if only:
        names = [name for name in names if name in only]
    return names


def run_script(name: str, *, quick: bool, timeout: float) -> Outcome:
    """Run one script; never raises."""
    path = HERE / f"{name}.py"
    if not path.exists():
        return Outcome(name, None, 0.0, "", f"{path.name} is missing")
    args = QUICK_ARGS.get(name, []) if quick else []
    started = time.perf_counter()
    try:
        completed = subprocess.run(
            [sys.executable, str(path), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=HERE.parent,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return Outcome(
            name, None, time.perf_counter() - started, out, f"timed out after {timeout:.0f} s"
        )
    outcome = Outcome(
        name,
        completed.returncode,
        time.perf_counter() - started,
        completed.stdout,
        completed.stderr,
    )
    outcome.rows = bench_rows(name, completed.stdout)
    if not outcome.rows and name in ADAPTERS:
        outcome.rows = ADAPTERS[name](name, completed.stdout)
    return outcome


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def machine() -> str:
    """nproc, CPU model and date, for RESULTS.md."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = "no GPU"
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if smi.returncode == 0 and smi.stdout.strip():
            gpu = smi.stdout.strip().replace("\n", ", ")
    except (OSError, subprocess.TimeoutExpired):
        pass
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"{cores} cores, {model}, {gpu}, Python {platform.python_version()}, {when}"


def main(argv: list[str] | None = None) -> int:
    """Run everything and print the table; exit 1 when a script failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (minutes, not tens)")
    parser.add_argument("--only", nargs="+", help="script names (without .py)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per script")
    parser.add_argument("--log", type=Path, help="write each script's full output here")
    args = parser.parse_args(argv)

    print(f"machine: {machine()}")
    print(f"mode: {'quick' if args.quick else 'full'}\n")
    outcomes = []
    for name in discover(args.only):
        print(f"running {name} ...", flush=True)
        outcome = run_script(name, quick=args.quick, timeout=args.timeout)
        outcomes.append(outcome)
        if args.log:
            args.log.mkdir(parents=True, exist_ok=True)
            (args.log / f"{name}.txt").write_text(
                outcome.stdout + "\n--- stderr ---\n" + outcome.stderr, encoding="utf-8"
            )

    header = (
        f"{'script':<20} {'figure':<48} {'medbatch':>11} {'baseline':>11} {'unit':<13} "
        f"{'ratio':>8}  target"
    )
    print("\n" + header)
    print("-" * len(header))
    failed = 0
    for outcome in outcomes:
        ok = outcome.returncode == 0
        if not ok:
            failed += 1
            reason = (outcome.stderr.strip().splitlines() or ["no output"])[-1][:100]
            status = "missing" if outcome.returncode is None and "missing" in reason else "FAILED"
            print(f"{outcome.script:<20} {status}: {reason}")
            if not outcome.rows:
                continue
        if not outcome.rows:
            last = [line for line in outcome.stdout.splitlines() if line.strip()]
            summary = last[-1].strip()[:90] if last else "(no figures printed)"
            print(f"{outcome.script:<20} {'(see output)':<48} {summary}")
            continue
        for row in outcome.rows:
            ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "–"
            verdict = "" if row.met is None else (" met" if row.met else " MISSED")
            target = f"{row.target or ''}{verdict}".strip()
            print(
                f"{row.script:<20} {row.figure[:48]:<48} {_fmt(row.medbatch):>11} "
                f"{_fmt(row.baseline):>11} {row.unit[:13]:<13} {ratio:>8}  {target}"
            )
    print("\nratio: times better than the baseline (higher is better); same run, same machine.")
    print(f"{len(outcomes) - failed}/{len(outcomes)} scripts succeeded.")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
