from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from medbatch.cli import app

runner = CliRunner()


def _flat(output: str) -> str:
    return " ".join(output.split())


def _synthetic_kaggle_run(tmp_path: Path, runner_table: str) -> Path:
    """8 synthetic ECG pages in the Kaggle layout and a run config over them."""
    made = runner.invoke(
        app, ["synth-ecg", str(tmp_path / "ecg"), "-n", "8", "--width", "400", "--height", "284"]
    )
    assert made.exit_code == 0, made.output
    assert "not clinical data" in _flat(made.output)
    config = tmp_path / "run.toml"
    config.write_text(
        'output_dir = "out"\n[task]\nname = "ecg"\n[dataset]\nkind = "kaggle"\npath = "ecg"\n'
        f"[runner]\n{runner_table}"
    )
    return config


def test_synth_ecg_then_validate_a_run(tmp_path: Path) -> None:
    (tmp_path / "answers.jsonl").write_text("")
    config = _synthetic_kaggle_run(
        tmp_path,
        'kind = "replay"\npath = "answers.jsonl"\nmodel_id = "google/medgemma-4b-it"\n',
    )
    result = runner.invoke(app, ["validate", str(config)])
    assert result.exit_code == 0, result.output
    out = _flat(result.output)
    assert re.search(r"records\W+8\b", out)
    assert "gemma3" in out
    assert "256" in out  # Gemma 3 image tokens in the estimate
    assert not (tmp_path / "out").exists()  # nothing was run


def test_validate_fails_on_a_broken_image(tmp_path: Path) -> None:
    folder = tmp_path / "images" / "normal_ecg_images"
    folder.mkdir(parents=True)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "answers.jsonl").write_text("")
    config = tmp_path / "run.toml"
    config.write_text(
        """output_dir = "out"
[task]
name = "ecg"
[dataset]
kind = "folder"
root = "images"
[runner]
kind = "replay"
path = "answers.jsonl"
"""
    )
    result = runner.invoke(app, ["validate", str(config)])
    assert result.exit_code == 1
    assert "broken.jpg" in _flat(result.output)


def test_synth_ecg_rejects_unknown_layout(tmp_path: Path) -> None:
    result = runner.invoke(app, ["synth-ecg", str(tmp_path / "x"), "--layout", "zip"])
    assert result.exit_code != 0


def test_validate_prints_the_snowflake_job_plan(tmp_path: Path) -> None:
    config = _synthetic_kaggle_run(
        tmp_path,
        """kind = "snowflake"
database = "MEDGEMMA_DEMO"
model = "MEDGEMMA_4B_IT"
version = "V1"
compute_pool = "MEDGEMMA_COMPUTE_POOL"
replicas = 2
max_records_per_job = 5
""",
    )
    result = runner.invoke(app, ["validate", str(config)])
    assert result.exit_code == 0, result.output
    out = _flat(result.output)
    assert re.search(r"snowflake jobs\W+2\b", out)
    assert "MEDGEMMA_COMPUTE_POOL" in out
    assert re.search(r"replicas × GPUs\W+2 ×", out)
