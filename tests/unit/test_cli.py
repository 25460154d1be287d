from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from medbatch.cli import app
from medbatch.datasets.sample import load_ecg_sample

runner = CliRunner()


def test_tasks_lists_ecg() -> None:
    result = runner.invoke(app, ["tasks"])
    assert result.exit_code == 0, result.output
    assert "ecg" in result.output
    assert "cot-v1" in result.output


def _write_replay_config(tmp_path: Path, **overrides: str) -> Path:
    dataset, replay = load_ecg_sample()
    answers = tmp_path / "answers.jsonl"
    images = tmp_path / "images"
    lines = []
    for record in dataset:
        folder, name = record.id.split("/")
        (images / folder).mkdir(parents=True, exist_ok=True)
        (images / folder / name).write_bytes(b"\xff\xd8\xff" + name.encode())
        response = replay._responses[record.id]
        lines.append(response.model_dump_json())
    answers.write_text("\n".join(lines) + "\n")
    settings = {
        "kind": '"replay"',
        "path": '"answers.jsonl"',
        **overrides,
    }
    runner_table = "\n".join(f"{k} = {v}" for k, v in settings.items())
    config = tmp_path / "run.toml"
    config.write_text(
        f"""output_dir = "out"

[task]
name = "ecg"

[dataset]
kind = "folder"
root = "images"

[runner]
{runner_table}
"""
    )
    return config


def test_run_from_config_writes_a_run_directory(tmp_path: Path) -> None:
    config = _write_replay_config(tmp_path)
    result = runner.invoke(app, ["run", str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["records"] == 16
    again = runner.invoke(app, ["run", str(config), "--no-progress"])
    assert "16 reused" in " ".join(again.output.split())


def test_unknown_runner_is_one_clear_line(tmp_path: Path) -> None:
    config = _write_replay_config(tmp_path, kind='"replya"')
    result = runner.invoke(app, ["run", str(config)])
    assert result.exit_code == 2
    assert "Unknown runner 'replya'. Did you mean: replay?" in result.output
    assert "Traceback" not in result.output


def test_bad_runner_option_names_the_key(tmp_path: Path) -> None:
    config = _write_replay_config(tmp_path, batchsize="3")
    result = runner.invoke(app, ["run", str(config)])
    assert result.exit_code == 2
    assert "batchsize" in result.output


def test_missing_dataset_folder(tmp_path: Path) -> None:
    config = _write_replay_config(tmp_path)
    config.write_text(config.read_text().replace('root = "images"', 'root = "nowhere"'))
    result = runner.invoke(app, ["run", str(config)])
    assert result.exit_code == 2
    assert "Couldn't find the dataset folder" in result.output


def test_invalid_toml(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("output_dir = \n")
    result = runner.invoke(app, ["run", str(config)])
    assert result.exit_code == 2
    assert "not valid TOML" in result.output
