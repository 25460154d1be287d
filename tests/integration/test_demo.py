"""`medbatch demo`, `evaluate`, `report` and `compare`, run in-process as a user would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import medbatch.cli.evaluate  # noqa: F401 - registers evaluate/report/compare
from medbatch.cli import app


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_replay_demo_then_evaluate_report_compare(tmp_path: Path) -> None:
    code, output = _invoke("demo", "--replay", "-o", str(tmp_path))
    assert code == 0, output
    run_dir = tmp_path / "replay-run"
    for name in ("report.html", "metrics.json", "predictions.parquet", "manifest.json"):
        assert (run_dir / name).is_file(), name
    assert "95% CI" in output
    assert "Balanced accuracy" in output
    assert "report.html" in output

    code, output = _invoke("evaluate", str(run_dir), "--json", "--bootstrap", "100")
    assert code == 0, output
    assert json.loads(output)["n"] == 16

    code, output = _invoke("evaluate", str(run_dir), "--dedupe")
    assert code == 0, output
    assert "Cohen's kappa" in output

    code, output = _invoke("report", str(run_dir), "-o", str(tmp_path / "again.html"))
    assert code == 0, output
    assert (tmp_path / "again.html").is_file()

    code, output = _invoke("compare", str(run_dir), str(run_dir))
    assert code == 0, output
    assert "McNemar" in output


def test_errors_are_one_line(tmp_path: Path) -> None:
    code, output = _invoke("evaluate", str(tmp_path / "nope"))
    assert code != 0
    assert "error:" in output
    assert "Traceback" not in output
    code, output = _invoke("report", str(tmp_path))
    assert code != 0
    assert "not a medbatch run directory" in output
    assert len(output.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["demo", "evaluate", "report", "compare"])
def test_help_has_an_example(command: str) -> None:
    code, output = _invoke(command, "--help")
    assert code == 0
    assert "Example" in output


@pytest.mark.slow
def test_demo_with_the_tiny_model(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    code, output = _invoke("demo", "-o", str(tmp_path), "--per-class", "2")
    assert code == 0, output
    run_dir = tmp_path / "run"
    for name in ("report.html", "metrics.json", "predictions.parquet"):
        assert (run_dir / name).is_file(), name
    assert "answers are random" in output
    assert "google/medgemma-4b-it" in output
    metrics = json.loads((run_dir / "metrics.json").read_text("utf-8"))
    # Constrained decoding: every answer is a valid label.
    assert metrics["status_counts"]["parsed"] == metrics["n"] == 8
    assert metrics["roc_auc"] is not None  # the runner scored every label
    page = (run_dir / "report.html").read_text("utf-8")
    assert "tiny random-weight test model" in page
    assert "data:image/jpeg;base64," in page  # thumbnails of the synthetic pages
    manifest = json.loads((run_dir / "manifest.json").read_text("utf-8"))
    assert manifest["sampling"]["deduplicated"] is True
    assert manifest["sampling"]["duplicates_dropped"] == 2
