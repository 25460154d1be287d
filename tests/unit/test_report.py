"""The HTML report: one self-contained file, escaped, with its notice, metrics and plots."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from medbatch.datasets.folder import ImageFolderDataset
from medbatch.datasets.sample import load_ecg_sample
from medbatch.pipeline import classify
from medbatch.records import InferenceRequest, InferenceResponse
from medbatch.report import is_random_model, write_report
from medbatch.report.formatting import redact as _redact
from medbatch.report.page import image_path as _image_path
from medbatch.store import RunStore
from medbatch.tasks.registry import get_task
from medbatch.testing import FunctionRunner

HOSTILE = '<script>alert("x")</script> <img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("sample-run")
    dataset, runner = load_ecg_sample()
    classify(dataset, get_task("ecg"), runner, store=run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def sample_report(sample_run: Path) -> str:
    return write_report(sample_run, n_bootstrap=200).read_text("utf-8")


def _image_folder(root: Path) -> Path:
    colours = {"normal_ecg_images": (240, 200, 200), "post_mi_history_ecg_images": (200, 200, 240)}
    for folder, colour in colours.items():
        (root / folder).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (60 + i, 40), colour).save(root / folder / f"{i}.png")
    return root


def _answer(request: InferenceRequest) -> str | InferenceResponse:
    if request.record_id.endswith("1.png"):
        return InferenceResponse.failure(request.record_id, "request_failed", HOSTILE)
    return f"Findings: {HOSTILE}\nFINAL CLASSIFICATION: NORMAL"


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("local")
    images = _image_folder(base / "images")
    task = get_task("ecg")
    dataset = ImageFolderDataset(images, task.folder_map, labels=task.labels)
    run_dir = base / "run"
    classify(
        dataset,
        task,
        FunctionRunner(_answer, model_id="function"),
        store=run_dir,
        progress=False,
        manifest_extra={"sampling": {"per_class": 2, "api_key": "sk-do-not-leak"}},
    )
    return run_dir, images


def test_one_self_contained_file(sample_run: Path, sample_report: str) -> None:
    assert sample_report.startswith("<!DOCTYPE html>")
    assert "<script" not in sample_report
    assert "http://" not in sample_report
    assert "https://" not in sample_report
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", sample_report)
    assert "<link" not in sample_report
    assert sample_report.count("data:image/png;base64,") >= 3
    assert [p.name for p in sample_run.glob("*.html")] == ["report.html"]


def test_notice_and_content(sample_report: str) -> None:
    assert "not a medical device" in sample_report
    assert "random-weight" not in sample_report  # a recorded real-style run: no random notice
    for heading in ("Headline metrics", "Coverage", "Confusion", "Screening view", "Run manifest"):
        assert heading in sample_report
    assert "unparsed/error" in sample_report
    assert "95% CI" in sample_report
    assert "prompt text" in sample_report


def test_writes_metrics_json_and_pngs(sample_run: Path, sample_report: str) -> None:
    metrics = json.loads((sample_run / "metrics.json").read_text("utf-8"))
    assert metrics["n"] == 16
    assert metrics["headline"]["accuracy"]["low"] is not None
    figures = sorted(p.name for p in (sample_run / "figures").glob("*.png"))
    assert figures == ["confusion_matrix.png", "label_distribution.png", "per_class.png"]
    for name in figures:
        assert (sample_run / "figures" / name).read_bytes().startswith(b"\x89PNG")


def test_escapes_answers_and_errors(local_run: tuple[Path, Path]) -> None:
    run_dir, images = local_run
    page = write_report(run_dir, images_root=images, n_bootstrap=50).read_text("utf-8")
    assert "<script" not in page
    assert "<img src=x" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "<mark>" in page  # the parser's evidence is highlighted
    assert "sk-do-not-leak" not in page
    # Thumbnails of local images, found from the images root.
    assert "data:image/jpeg;base64," in page
    assert "request_failed" in page


def test_custom_output_path(local_run: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, _ = local_run
    out = write_report(run_dir, tmp_path / "out" / "r.html", n_bootstrap=0)
    assert out == tmp_path / "out" / "r.html"
    assert (tmp_path / "out" / "metrics.json").is_file()
    assert (tmp_path / "out" / "figures" / "confusion_matrix.png").is_file()


def test_random_model_notice(sample_run: Path, tmp_path: Path) -> None:
    store = RunStore(sample_run)
    manifest = store.read_manifest()
    assert manifest is not None
    assert not is_random_model(manifest)
    marked = manifest.model_copy(update={"model_id": str(tmp_path)})
    (tmp_path / "medbatch_tiny_vlm.json").write_text("{}")
    assert is_random_model(marked)
    flagged = manifest.model_copy()
    flagged.demo = {"random_weights": True}
    assert is_random_model(flagged)


def test_redacts_secret_settings() -> None:
    redacted = _redact({"api_key": "x", "nested": [{"Token": "y", "model": "m"}], "n": 1})
    assert redacted == {
        "api_key": "[redacted]",
        "nested": [{"Token": "[redacted]", "model": "m"}],
        "n": 1,
    }


def test_images_never_read_outside_the_root(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "secret.png").write_bytes(b"x")
    assert _image_path("../secret.png", {}, tmp_path / "root") is None
    (tmp_path / "root" / "ok.png").write_bytes(b"x")
    assert _image_path("ok.png", {}, tmp_path / "root") == (tmp_path / "root" / "ok.png").resolve()


def test_ppv_and_npv_show_their_intervals(sample_run: Path, sample_report: str) -> None:
    metrics = json.loads((sample_run / "metrics.json").read_text("utf-8"))
    shown = [metrics["binary"], *metrics["per_class"]]
    assert metrics["binary"]["ppv_ci"] is not None
    for block in shown:
        for name in ("ppv", "npv"):
            if block[f"{name}_ci"] is None:
                continue
            low, high = block[f"{name}_ci"]
            cell = f'{block[name]:.3f}<span class="muted"> ({low:.2f}–{high:.2f})</span>'
            assert cell in sample_report, (block.get("label", "screening"), name)
