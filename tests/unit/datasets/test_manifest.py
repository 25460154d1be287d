"""`ManifestDataset`: CSV and parquet, relative paths, metadata, errors that name the row."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from medbatch.datasets.manifest import ManifestDataset
from medbatch.datasets.synthetic import write_synthetic_ecg_dataset
from medbatch.errors import DatasetError
from medbatch.images import load_image


def test_reads_the_generators_flat_manifest(tmp_path: Path) -> None:
    root = write_synthetic_ecg_dataset(tmp_path / "flat", 4, layout="flat", size=(300, 214))
    dataset = ManifestDataset(root / "manifest.csv")
    records = list(dataset)

    assert [r.id for r in records] == ["Normal(1)", "HB(1)", "MI(1)", "PMI(1)"]
    assert records[2].label == "MYOCARDIAL_INFARCTION"
    assert records[0].image.path == root / "Normal(1).jpg"  # resolved against the manifest
    assert load_image(records[0].image).size == (300, 214)
    assert records[0].metadata == {"manifest_row": 2}


def test_optional_columns_metadata_and_locations(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text(
        "path,label,site,id\n"
        "img/a.jpg,NORMAL,paris,007\n"
        "/abs/b.jpg,,lyon,\n"
        "https://host/c.jpg,NA,,c\n"
        "@DB.S.STAGE/d.jpg,NORMAL,,d\n",
        encoding="utf-8",
    )
    records = list(ManifestDataset(tmp_path / "m.csv"))

    assert [r.id for r in records] == ["007", "/abs/b.jpg", "c", "d"]  # ids kept as written
    assert [r.label for r in records] == ["NORMAL", None, "NA", "NORMAL"]
    assert records[0].metadata == {"site": "paris", "manifest_row": 2}
    assert records[1].image.path == Path("/abs/b.jpg")
    assert records[2].image.url == "https://host/c.jpg"
    assert records[3].image.stage_path == "@DB.S.STAGE/d.jpg"


def test_parquet(tmp_path: Path) -> None:
    frame = pd.DataFrame({"path": ["a.png", "b.png"], "label": ["X", None], "age_band": [3, 4]})
    frame.to_parquet(tmp_path / "m.parquet")
    records = list(ManifestDataset(tmp_path / "m.parquet"))

    assert [r.label for r in records] == ["X", None]
    assert records[1].metadata == {"age_band": 4, "manifest_row": 2}
    assert type(records[1].metadata["age_band"]) is int  # numpy scalars become plain ints


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("file,label\na.jpg,X\n", "has no 'path' column \\(columns: file, label\\)"),
        ("path,label\na.jpg,X\n,Y\n", "line 3: the 'path' is empty"),
        ("path,id\na.jpg,1\nb.jpg,1\n", "line 3: id '1' repeats line 2"),
    ],
)
def test_errors_name_the_row(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "m.csv").write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        ManifestDataset(tmp_path / "m.csv")


def test_missing_or_unsupported_manifest(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="Couldn't find the manifest"):
        ManifestDataset(tmp_path / "nope.csv")
    (tmp_path / "m.xlsx").write_bytes(b"x")
    with pytest.raises(DatasetError, match=r"must be \.csv, \.tsv or \.parquet"):
        ManifestDataset(tmp_path / "m.xlsx")
