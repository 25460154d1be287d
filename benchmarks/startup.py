"""Start-up: wall time of `medbatch --help` and `medbatch tasks` in fresh processes.

Run: `python benchmarks/startup.py [--repeat 5]`

Each figure is the median wall time of `--repeat` fresh interpreters launched the way the
`medbatch` console script launches the CLI (`from medbatch.cli import main; main()`), output
discarded. Peers, measured in the same run and the same way:

- **bare interpreter** (baseline of every row): `python -c pass`, the floor no CLI can beat
  (interpreter start-up plus `site`, including every `.pth` file of the environment).
- **bare typer app**: a one-command typer app printing its `--help`, the floor of the CLI
  framework medbatch uses (typer + rich); shown next to each row, not used in the ratio.

Target (issue #19): `medbatch --help` and `medbatch tasks` under 0.3 s.

Prints a table and one `BENCH {json}` line per figure for `run_all.py`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

TARGET_S = 0.3

# What the `medbatch` console script does (pyproject `[project.scripts]`).
CLI = "import sys; sys.argv[0] = 'medbatch'; from medbatch.cli import main; sys.exit(main())"
TYPER_APP = """
import typer
app = typer.Typer()
@app.command()
def hello(name: str = "x") -> None:
    print(name)
@app.command()
def bye() -> None:
    pass
app()
"""


def wall_seconds(argv: list[str], repeat: int) -> float:
    """Median wall time of `repeat` runs of `argv`, each a fresh process."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def emit(figure: str, medbatch: float, baseline: float, **extra: Any) -> None:
    """One machine-readable line for run_all.py (lower is better)."""
    payload = {"figure": figure, "medbatch": medbatch, "baseline": baseline, "unit": "s"}
    ratio = baseline / medbatch if medbatch else None
    print("BENCH " + json.dumps({**payload, "ratio": ratio, "lower_is_better": True, **extra}))


def main() -> None:
    """Measure and print the table and the BENCH lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="fresh processes per figure")
    args = parser.parse_args()
    python = sys.executable
    # One untimed run of each first: the timed runs then read warm .pyc files and page cache,
    # as every start after the first does.
    for argv in ([python, "-c", CLI, "--help"], [python, "-c", TYPER_APP, "--help"]):
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)

    bare = wall_seconds([python, "-c", "pass"], args.repeat)
    typer_floor = wall_seconds([python, "-c", TYPER_APP, "--help"], args.repeat)
    rows = [
        ("import medbatch", wall_seconds([python, "-c", "import medbatch"], args.repeat), None),
        ("medbatch --help", wall_seconds([python, "-c", CLI, "--help"], args.repeat), TARGET_S),
        ("medbatch tasks", wall_seconds([python, "-c", CLI, "tasks"], args.repeat), TARGET_S),
    ]

    print(f"median of {args.repeat} fresh processes, seconds")
    print(f"{'figure':<18} {'medbatch':>9} {'python -c pass':>15} {'typer app --help':>17}")
    for figure, seconds, target in rows:
        print(f"{figure:<18} {seconds:9.3f} {bare:15.3f} {typer_floor:17.3f}")
        extra: dict[str, Any] = {"typer_app_help_s": typer_floor, "repeat": args.repeat}
        if target is not None:
            extra |= {"target": f"< {target} s", "met": seconds < target}
        emit(f"start-up: {figure} (wall)", seconds, bare, **extra)


if __name__ == "__main__":
    main()
