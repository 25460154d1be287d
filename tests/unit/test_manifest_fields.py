"""What a caller records about a run lands in typed manifest fields, and old manifests load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from medbatch.datasets.folder import ImageFolderDataset
from medbatch.datasets.sample import load_ecg_sample
from medbatch.pipeline import classify
from medbatch.report import write_report
from medbatch.report.run_kind import is_illustrative, is_random_model
from medbatch.store import RunStore
from medbatch.tasks.registry import get_task
from medbatch.testing import FunctionRunner

ILLUSTRATIVE = "These answers are illustrative, not model output."
RANDOM = "tiny random-weight test model"
TYPED = ("images_root", "illustrative", "sampling", "demo")


def _folder_run(tmp_path: Path) -> Path:
    """A run over a small image folder by an ordinary-looking model: no banner of its own."""
    images = tmp_path / "images"
    for folder in ("normal_ecg_images", "post_mi_history_ecg_images"):
        (images / folder).mkdir(parents=True)
        Image.new("RGB", (60, 40), (230, 200, 200)).save(images / folder / "0.png")
    task = get_task("ecg")
    dataset = ImageFolderDataset(images, task.folder_map, labels=task.labels)
    runner = FunctionRunner(lambda _: "FINAL CLASSIFICATION: NORMAL", model_id="my-model")
    classify(dataset, task, runner, store=tmp_path / "run", progress=False)
    return tmp_path / "run"


def test_a_manifest_written_before_the_typed_fields_loads_and_reports_the_same(
    tmp_path: Path,
) -> None:
    run = _folder_run(tmp_path)
    plain = write_report(run, n_bootstrap=0).read_text("utf-8")
    assert ILLUSTRATIVE not in plain
    assert RANDOM not in plain
    assert "data:image/jpeg" not in plain  # no images root: no thumbnails

    # The JSON an older medbatch wrote: the recorded facts were untyped extras, and a run
    # without them had no such keys at all.
    path = run / "manifest.json"
    raw = json.loads(path.read_text("utf-8"))
    for key in TYPED:
        raw.pop(key, None)
    raw |= {
        "illustrative": True,
        "images_root": "../images",
        "sampling": {"per_class": 1, "seed": 7, "api_key": "sk-do-not-leak"},
        "demo": {"kind": "tiny-random-vlm", "random_weights": True},
        "lab_batch": "B-12",  # a third party's own fact
    }
    path.write_text(json.dumps(raw), "utf-8")

    manifest = RunStore(run).read_manifest()
    assert manifest is not None
    assert manifest.illustrative is True
    assert manifest.images_root == "../images"
    assert manifest.sampling == {"per_class": 1, "seed": 7, "api_key": "sk-do-not-leak"}
    assert manifest.demo == {"kind": "tiny-random-vlm", "random_weights": True}
    assert manifest.model_extra == {"lab_batch": "B-12"}
    assert is_illustrative(manifest)
    assert is_random_model(manifest)

    page = write_report(run, n_bootstrap=0).read_text("utf-8")
    assert ILLUSTRATIVE in page
    assert RANDOM in page
    assert "data:image/jpeg" in page  # thumbnails found from the recorded (relative) root
    facts = page.split("<h2>Run manifest</h2>")[1]
    for name in ("sampling", "demo", "images_root"):
        assert f"<dt>{name}</dt>" in facts
    assert "tiny-random-vlm" in facts
    assert "sk-do-not-leak" not in page


def test_classify_records_typed_fields_and_keeps_third_party_keys(tmp_path: Path) -> None:
    dataset, runner = load_ecg_sample()
    classify(
        dataset,
        get_task("ecg"),
        runner,
        store=tmp_path / "run",
        progress=False,
        manifest_extra={"sampling": {"per_class": 4}, "images_root": "imgs", "lab": "x"},
    )
    raw = json.loads((tmp_path / "run" / "manifest.json").read_text("utf-8"))
    assert raw["sampling"] == {"per_class": 4}
    assert raw["images_root"] == "imgs"
    assert raw["illustrative"] is False
    assert raw["demo"] is None
    assert raw["lab"] == "x"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"status": "completed"}, "may not set status"),
        ({"model_id": "x", "counts": {}}, "may not set counts, model_id"),
        ({"illustrative": "perhaps"}, "illustrative"),
        ({"sampling": [1, 2]}, "sampling"),
    ],
)
def test_a_fact_that_would_corrupt_the_manifest_is_refused(
    tmp_path: Path, extra: dict[str, object], message: str
) -> None:
    dataset, runner = load_ecg_sample()
    with pytest.raises(ValueError, match=message):
        classify(
            dataset,
            get_task("ecg"),
            runner,
            store=tmp_path / "run",
            progress=False,
            manifest_extra=extra,
        )
    assert not (tmp_path / "run" / "predictions.jsonl").exists()
