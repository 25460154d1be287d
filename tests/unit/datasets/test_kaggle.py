"""`KaggleDataset` against a Kaggle-shaped folder built by the generator (no download)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from medbatch.datasets.duplicates import dedupe, find_duplicates
from medbatch.datasets.kaggle import KaggleDataset
from medbatch.errors import DatasetError

kagglehub = pytest.importorskip("kagglehub")


@pytest.fixture
def fake_download(monkeypatch: pytest.MonkeyPatch, kaggle_root: Path) -> list[str]:
    calls: list[str] = []

    def dataset_download(handle: str, **kwargs: Any) -> str:
        calls.append(handle)
        return str(kaggle_root)

    monkeypatch.setattr(kagglehub, "dataset_download", dataset_download)
    return calls


def _sidecar(root: Path) -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = json.loads((root / "labels.json").read_text())["files"]
    return files


def test_downloads_lazily_and_labels_through_the_task_folder_map(
    fake_download: list[str], kaggle_root: Path
) -> None:
    dataset = KaggleDataset()  # evilspirit05/ecg-analysis, task "ecg"
    assert fake_download == []  # building the object downloads nothing

    records = list(dataset)

    assert fake_download == ["evilspirit05/ecg-analysis"]
    truth = {entry["path"]: entry["label"] for entry in _sidecar(kaggle_root)}
    assert {record.id: record.label for record in records} == truth
    assert records[0].id.startswith("ecg_data_new_version/ecg data new version/")
    assert dataset.labels is not None
    assert set(dataset.labels.names) == set(truth.values())
    list(dataset)
    assert len(fake_download) == 1  # downloaded once per object


def test_finds_the_planted_duplicates_and_conflicts(
    fake_download: list[str], kaggle_root: Path
) -> None:
    del fake_download
    entries = _sidecar(kaggle_root)
    exact = [e for e in entries if e["copy_kind"] in ("duplicate", "conflict")]
    conflicts = [e for e in entries if e["copy_kind"] == "conflict"]

    report = find_duplicates(KaggleDataset(), near=True)

    members = {rid for group in report.groups for rid in group.record_ids}
    assert members == {e["path"] for e in exact} | {e["copy_of"] for e in exact}
    assert report.copies == len(exact)
    assert report.distinct == len(entries) - len(exact)
    conflicted = {rid for group in report.conflicts for rid in group.record_ids}
    assert {e["path"] for e in conflicts} <= conflicted
    # The re-encoded copy is grouped with its source (or the source's exact twin, since near
    # search compares one representative per exact group).
    near = next(e for e in entries if e["copy_kind"] == "near")
    group = next(g for g in report.near_groups if near["path"] in g.record_ids)
    sha = {r.id: r.image.sha256 for r in KaggleDataset()}
    assert sha[near["copy_of"]] in {sha[rid] for rid in group.record_ids}
    assert "label conflicts" in report.summary()

    unique = dedupe(KaggleDataset())
    assert len(unique) == report.distinct
    assert len({r.image.sha256 for r in unique}) == len(unique)


def test_local_path_needs_no_kagglehub_call(
    kaggle_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> str:
        raise AssertionError("must not download")

    monkeypatch.setattr(kagglehub, "dataset_download", refuse)
    dataset = KaggleDataset(path=kaggle_root, subdir="ecg_data_new_version/ecg data new version")
    assert dataset.class_counts()["NORMAL"] >= 3
    assert next(iter(dataset)).id.startswith("abnormal_heartbeat_ecg_images/")


def test_missing_credentials_give_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("KAGGLE_USERNAME", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLE_KEY", "secret-key-value")
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))

    def unauthenticated(handle: str, **kwargs: object) -> str:
        raise kagglehub.exceptions.UnauthenticatedError()

    monkeypatch.setattr(kagglehub, "dataset_download", unauthenticated)
    with pytest.raises(DatasetError) as caught:
        list(KaggleDataset())
    message = str(caught.value)
    assert "KAGGLE_USERNAME is not" in message
    assert "~/.kaggle/kaggle.json" in message
    assert "secret-key-value" not in message


def test_a_folder_without_class_folders_is_named(tmp_path: Path) -> None:
    (tmp_path / "stray").mkdir()
    with pytest.raises(DatasetError, match="Couldn't find any class folder of task 'ecg'"):
        len(KaggleDataset(path=tmp_path))
