"""Pre-flight validation: every bad image is one clear issue naming its record; the rest pass."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from medbatch.datasets.base import ListDataset
from medbatch.datasets.kaggle import KaggleDataset
from medbatch.datasets.validation import validate_dataset
from medbatch.errors import ImageLoadError
from medbatch.images import load_image
from medbatch.labels import LabelSet
from medbatch.records import ImageRef, Record

LABELS = LabelSet.from_names(["NORMAL", "ABNORMAL"])


def _dataset(paths: dict[str, Path]) -> ListDataset:
    return ListDataset(
        [
            Record(id=kind, image=ImageRef.from_path(path), label="NORMAL")
            for kind, path in paths.items()
        ],
        labels=LABELS,
    )


def test_every_bad_kind_is_reported_with_its_record_and_good_ones_are_clean(
    bad_images: dict[str, Path],
) -> None:
    report = validate_dataset(_dataset(bad_images))

    errors = {issue.record_id: issue for issue in report.errors}
    assert set(errors) == {"empty", "not_an_image", "truncated", "decompression_bomb", "missing"}
    for record_id, issue in errors.items():
        assert issue.kind == record_id  # the fixture names records after their problem
        assert bad_images[record_id].name in issue.message
    assert not report.ok
    assert report.total == 7
    assert report.label_counts == {"NORMAL": 7}


def test_a_run_over_bad_images_fails_only_those_records(bad_images: dict[str, Path]) -> None:
    # What a runner does per record: load, and turn a failure into that record's error.
    outcomes: dict[str, str] = {}
    for record in _dataset(bad_images):
        try:
            outcomes[record.id] = f"ok {load_image(record.image, max_side=896).size}"
        except ImageLoadError as exc:
            outcomes[record.id] = f"error: {exc}"

    assert outcomes["good"] == "ok (120, 90)"
    assert outcomes["good_png"] == "ok (120, 90)"
    failed = {rid for rid, outcome in outcomes.items() if outcome.startswith("error")}
    assert failed == {"empty", "not_an_image", "truncated", "decompression_bomb", "missing"}


def test_normalised_images_are_info_not_errors(odd_images: dict[str, Path]) -> None:
    report = validate_dataset(_dataset(odd_images))

    assert report.ok
    assert {issue.record_id for issue in report.issues if issue.kind == "normalised"} == set(
        odd_images
    )
    messages = " ".join(issue.message for issue in report.issues)
    assert "CMYK converted to RGB" in messages
    assert "EXIF orientation 6 applied" in messages


def test_labels_sizes_ids_and_duplicates(bad_images: dict[str, Path], tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tiny)
    good = ImageRef.from_path(bad_images["good"])
    records = [
        Record(id="a", image=good, label="NORMAL"),
        Record(id="b", image=good, label="ABNORMAL"),  # same bytes, other label
        Record(id="b", image=ImageRef.from_path(bad_images["good_png"]), label="STEMI"),
        Record(id="t", image=ImageRef.from_path(tiny), label=None),
        Record(id="s", image=ImageRef.from_stage("@DB.S.STAGE/x.jpg"), label="NORMAL"),
    ]
    report = validate_dataset(ListDataset(records, labels=LABELS))
    kinds = {(issue.record_id, issue.kind) for issue in report.issues}

    assert ("b", "duplicate_id") in kinds
    assert ("b", "unknown_label") in kinds
    assert ("t", "too_small") in kinds
    assert ("t", "missing_label") in kinds
    assert ("b", "duplicate") in kinds
    assert ("a", "label_conflict") in kinds
    assert report.not_checked == 1
    assert all(e.record_id for e in report.record_errors())


def test_kaggle_shaped_folder_validates_and_renders_a_table(kaggle_root: Path) -> None:
    report = validate_dataset(KaggleDataset(path=kaggle_root))

    assert report.ok  # copies and conflicts are warnings: the run works, metrics may mislead
    assert report.kind_counts()["label_conflict"] >= 1
    assert report.distinct_images < report.total
    console = Console(width=160, record=True)
    console.print(report.to_table())
    text = console.export_text()
    assert "Pre-flight validation" in text
    assert "MYOCARDIAL_INFARCTION" in text
    assert "label_conflict" in text
