"""Smoke: `benchmarks/run_all.py` runs a benchmark and reads its figures (no timing checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_run_all_quick_prints_a_row_with_baseline_and_ratio() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run_all.py"),
            "--quick",
            "--only",
            "stage_upload",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    row = next(line for line in result.stdout.splitlines() if "PUT calls" in line)
    assert "25.00x" in row, row
    assert "1/1 scripts succeeded" in result.stdout
