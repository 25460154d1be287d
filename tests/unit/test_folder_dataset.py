from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from medbatch import ImageFolderDataset, get_task
from medbatch.datasets.base import Dataset
from medbatch.errors import DatasetError
from medbatch.testing.contracts import DatasetContract

TASK = get_task("ecg")


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A real, distinct image per file, so validation finds nothing to report.
    shade = sum(path.as_posix().encode()) % 256
    Image.new("RGB", (40, 40), (shade, 255 - shade, len(path.name))).save(path, format="PNG")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for folder in TASK.folder_map:
        for i in range(3):
            _touch(tmp_path / "ecg data" / folder / f"img({i}).jpg")
    (tmp_path / "ecg data" / "normal_ecg_images" / "notes.txt").write_text("notes")
    _touch(tmp_path / "ecg data" / ".hidden" / "x.jpg")
    _touch(tmp_path / "ecg data" / "normal_ecg_images" / "nested" / "deep.png")
    return tmp_path


def test_labels_from_folder_map_and_nested_folders(root: Path) -> None:
    dataset = ImageFolderDataset(root, TASK.folder_map, labels=TASK.labels)
    records = list(dataset)
    assert len(records) == 13
    by_id = {r.id: r.label for r in records}
    assert by_id["ecg data/normal_ecg_images/nested/deep.png"] == "NORMAL"
    assert by_id["ecg data/post_mi_history_ecg_images/img(0).jpg"] == "POST_MI"
    assert not any(rid.endswith(".txt") for rid in by_id)
    assert dataset.validate() == []


def test_without_map_folder_name_is_label(root: Path) -> None:
    dataset = ImageFolderDataset(root / "ecg data", recursive=False)
    assert {r.label for r in dataset} == set(TASK.folder_map)


def test_extension_filter(root: Path) -> None:
    dataset = ImageFolderDataset(root, TASK.folder_map, extensions={".png"})
    assert [r.id for r in dataset] == ["ecg data/normal_ecg_images/nested/deep.png"]


def test_missing_root_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="Couldn't find the dataset folder"):
        ImageFolderDataset(tmp_path / "nope")


def test_sample_is_stratified_and_seeded(root: Path) -> None:
    dataset = ImageFolderDataset(root, TASK.folder_map, labels=TASK.labels)
    sample = dataset.sample(2, seed=7)
    labels = [r.label for r in sample]
    assert sorted(labels) == sorted(list(TASK.labels.names) * 2)
    assert [r.id for r in dataset.sample(2, seed=7)] == [r.id for r in sample]
    assert any(
        [r.id for r in dataset.sample(2, seed=s)] != [r.id for r in sample] for s in range(5)
    )


def test_validate_reports_unknown_label(tmp_path: Path) -> None:
    _touch(tmp_path / "weird" / "a.jpg")
    dataset = ImageFolderDataset(tmp_path, labels=TASK.labels)
    problems = dataset.validate()
    assert [p.kind for p in problems] == ["unknown_label"]
    assert problems[0].record_id == "weird/a.jpg"


class TestImageFolderContract(DatasetContract):
    @pytest.fixture
    def dataset(self, root: Path) -> Dataset:
        return ImageFolderDataset(root, TASK.folder_map, labels=TASK.labels)
