"""`medbatch run` offline: relative paths in the config, the images root, the tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from medbatch.cli import app
from medbatch.config import load_config

runner = CliRunner()


def _project(root: Path) -> Path:
    """A project folder: config, images in class folders, recorded answers."""
    images = root / "data" / "ecg"
    answers = []
    for folder, label in (
        ("normal_ecg_images", "NORMAL"),
        ("post_mi_history_ecg_images", "POST_MI"),
    ):
        (images / folder).mkdir(parents=True)
        Image.new("RGB", (64, 48), (10, 120, 200)).save(images / folder / "a.png")
        answers.append({"record_id": f"{folder}/a.png", "text": label})
    (root / "answers.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))
    config = root / "run.toml"
    config.write_text(
        'output_dir = "runs/one"\n[task]\nname = "ecg"\n'
        '[dataset]\nkind = "folder"\nroot = "data/ecg"\n'
        '[runner]\nkind = "replay"\npath = "answers.jsonl"\n'
    )
    return config


def test_relative_model_folder_is_resolved_against_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    (project / "models" / "mine").mkdir(parents=True)
    config = project / "run.toml"
    body = 'output_dir = "o"\n[task]\nname = "ecg"\n[dataset]\nroot = "d"\n[runner]\n'
    config.write_text(body + 'kind = "transformers"\nmodel = "models/mine"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model = load_config(Path("..") / "project" / "run.toml").runner.options()["model"]
    assert Path(model).resolve() == (project / "models" / "mine").resolve()
    # A hub name (no such folder next to the config) is left alone.
    config.write_text(body + 'kind = "transformers"\nmodel = "google/medgemma-4b-it"\n')
    assert load_config(config).runner.options()["model"] == "google/medgemma-4b-it"


def test_report_of_a_cli_run_finds_its_images_without_a_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _project(tmp_path / "project")
    monkeypatch.chdir(tmp_path / "project")
    result = runner.invoke(app, ["run", "run.toml", "--no-progress"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "project" / "runs" / "one" / "manifest.json").read_text())
    # Given relative in the config: recorded relative (to the run directory).
    assert manifest["images_root"] == "../../data/ecg"
    # The project moves as a whole: the report still finds the images.
    moved = tmp_path / "moved"
    shutil.move(config.parent, moved)
    monkeypatch.chdir(tmp_path)
    report = runner.invoke(app, ["report", str(moved / "runs" / "one")])
    assert report.exit_code == 0, report.output
    page = (moved / "runs" / "one" / "report.html").read_text("utf-8")
    assert "image not available locally" not in page
    assert page.count('<label class="zoom"') == 2
    assert 'type="checkbox"' in page


def test_tiny_model_name_builds_the_tiny_model_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("transformers", reason="the tiny model needs the local extra")
    from medbatch.report import RANDOM_MODEL_MARKER, is_random_model
    from medbatch.runners.transformers import TINY_MODEL, TransformersRunner, resolve_model
    from medbatch.store import RunManifest

    monkeypatch.setenv("MEDBATCH_CACHE_DIR", str(tmp_path / "cache"))
    folder = Path(resolve_model(TINY_MODEL))
    assert folder == tmp_path / "cache" / "tiny-gemma3"
    assert (folder / RANDOM_MODEL_MARKER).is_file()
    assert resolve_model("google/medgemma-4b-it") == "google/medgemma-4b-it"
    described = TransformersRunner(TINY_MODEL, device="cpu").describe()
    assert described["random_weights"] is True
    manifest = RunManifest(
        medbatch_version="0",
        task="ecg",
        prompt_version="v1",
        prompt_fingerprint="p",
        model_id=TINY_MODEL,
        runner=described,
        params_fingerprint="q",
        started_at="2026-01-01T00:00:00Z",
    )
    assert is_random_model(manifest)


def test_compare_tells_two_runs_of_one_model_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _project(tmp_path)
    monkeypatch.chdir(tmp_path)
    text = config.read_text()
    for name, prompt in (("one", "direct-v1"), ("two", "cot-v1")):
        config.write_text(
            text.replace("runs/one", f"runs/{name}").replace(
                'name = "ecg"', f'name = "ecg"\nprompt = "{prompt}"'
            )
        )
        assert runner.invoke(app, ["run", "run.toml", "--no-progress"]).exit_code == 0
    shown = runner.invoke(app, ["compare", "runs/one", "runs/two"])
    assert shown.exit_code == 0, shown.output
    flat = " ".join(shown.output.split())
    assert "A: runs/one (replay, prompt direct-v1)" in flat
    assert "B: runs/two (replay, prompt cot-v1)" in flat
    as_json = json.loads(runner.invoke(app, ["compare", "runs/one", "runs/two", "--json"]).output)
    assert (as_json["prompt_a"], as_json["prompt_b"]) == ("direct-v1", "cot-v1")
    assert {"unpaired_a", "unpaired_b", "a_only_correct", "b_only_correct"} <= set(as_json)
    assert "only_a" not in as_json
