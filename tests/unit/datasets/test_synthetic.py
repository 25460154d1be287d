"""The synthetic ECG generator: deterministic, ECG-looking, laid out like the Kaggle set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medbatch.datasets.synthetic import (
    ECG_CLASSES,
    KAGGLE_ECG_SUBDIR,
    LEAD_NAMES,
    SyntheticECGDataset,
    render_ecg_page,
    synthesize_ecg,
    write_synthetic_ecg_dataset,
)
from medbatch.images import load_image

LABELS = [cls.label for cls in ECG_CLASSES]


def _pink_fraction(image: Image.Image) -> float:
    pixels = np.asarray(image, dtype=np.int16)
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    # Grid lines: red clearly above green and blue (pink/red ink), not grey trace or paper.
    return float(((red - green > 25) & (red - blue > 15)).mean())


@pytest.mark.parametrize("label", LABELS)
def test_page_is_deterministic_and_looks_like_ecg_paper(label: str) -> None:
    page = render_ecg_page(label, seed=3, size=(553, 393))
    again = render_ecg_page(label, seed=3, size=(553, 393))

    assert page.mode == "RGB"
    assert page.size == (553, 393)
    assert page.tobytes() == again.tobytes()
    assert 0.05 < _pink_fraction(page) < 0.6  # a ruled grid, not a blank or solid page
    dark = (np.asarray(page.convert("L")) < 80).mean()
    assert dark > 0.005  # traces and text are drawn


def test_default_size_is_the_kaggle_scans() -> None:
    assert render_ecg_page("NORMAL", seed=0).size == (2213, 1572)


def test_different_seeds_and_classes_give_different_pages() -> None:
    a = render_ecg_page("NORMAL", seed=1, size=(553, 393)).tobytes()
    assert a != render_ecg_page("NORMAL", seed=2, size=(553, 393)).tobytes()
    assert a != render_ecg_page("POST_MI", seed=1, size=(553, 393)).tobytes()


def test_limb_leads_obey_einthoven_and_goldberger() -> None:
    signals, _ = synthesize_ecg("MYOCARDIAL_INFARCTION", seed=11)
    assert list(signals) == list(LEAD_NAMES)
    np.testing.assert_allclose(signals["III"], signals["II"] - signals["I"], atol=1e-12)
    np.testing.assert_allclose(signals["aVR"] + signals["aVL"] + signals["aVF"], 0.0, atol=1e-9)


def test_class_morphology_is_in_the_signals() -> None:
    # MI: the ST segment of its territory sits above baseline (80 ms after each R peak).
    for seed in range(6):
        signals, facts = synthesize_ecg("MYOCARDIAL_INFARCTION", seed)
        lead = {"anterior": "V3", "inferior": "III", "lateral": "V6"}[facts["territory"]]
        r_peaks = np.nonzero(np.diff(np.sign(np.diff(signals["II"]))) < 0)[0]
        assert facts["finding"].startswith("ST elevation")
        st = signals[lead][(r_peaks[r_peaks < 4800] + 45)]
        assert np.percentile(st, 75) > 0.1
    kinds = {synthesize_ecg("ABNORMAL_HEARTBEAT", seed)[1]["rhythm"] for seed in range(12)}
    assert kinds >= {"afib", "pvc"}
    assert all(
        synthesize_ecg("POST_MI", s)[1]["finding"].startswith("pathological Q") for s in range(3)
    )
    assert synthesize_ecg("NORMAL", 0)[1]["rhythm"] == "sinus"


def test_unknown_label_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown ECG class 'STEMI'"):
        render_ecg_page("STEMI", seed=0)


def test_kaggle_layout_names_and_sidecars(tmp_path: Path) -> None:
    root = write_synthetic_ecg_dataset(tmp_path / "ecg", 8, seed=2, size=(300, 214))

    for cls in ECG_CLASSES:
        files = sorted(p.name for p in (root / KAGGLE_ECG_SUBDIR / cls.folder).iterdir())
        assert files == [f"{cls.prefix}(1).jpg", f"{cls.prefix}(2).jpg"]
    with Image.open(root / KAGGLE_ECG_SUBDIR / "normal_ecg_images" / "Normal(1).jpg") as img:
        assert (img.format, img.size) == ("JPEG", (300, 214))
    readme = (root / "README.txt").read_text(encoding="utf-8")
    assert "NOT CLINICAL DATA" in readme
    sidecar = json.loads((root / "labels.json").read_text(encoding="utf-8"))
    assert sidecar["synthetic"] is True
    assert len(sidecar["files"]) == 8


def test_flat_layout_writes_a_manifest(tmp_path: Path) -> None:
    root = write_synthetic_ecg_dataset(tmp_path / "flat", 4, layout="flat", size=(300, 214))
    lines = (root / "manifest.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "path,label,id"
    assert lines[1:] == [
        "Normal(1).jpg,NORMAL,Normal(1)",
        "HB(1).jpg,ABNORMAL_HEARTBEAT,HB(1)",
        "MI(1).jpg,MYOCARDIAL_INFARCTION,MI(1)",
        "PMI(1).jpg,POST_MI,PMI(1)",
    ]


def test_refuses_to_overwrite_without_being_asked(tmp_path: Path) -> None:
    write_synthetic_ecg_dataset(tmp_path, 1, size=(300, 214))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_synthetic_ecg_dataset(tmp_path, 1, size=(300, 214))
    write_synthetic_ecg_dataset(tmp_path, 2, size=(300, 214), overwrite=True)


def test_in_memory_dataset_yields_decodable_labelled_records() -> None:
    dataset = SyntheticECGDataset(5, seed=4, size=(300, 214))
    records = list(dataset)

    assert len(dataset) == 5
    assert [r.label for r in records] == [*LABELS, "NORMAL"]
    assert len({r.id for r in records}) == 5
    assert records[0].metadata["synthetic"] is True
    assert load_image(records[1].image).size == (300, 214)
    assert [r.image.sha256 for r in dataset] == [r.image.sha256 for r in records]
    assert dataset.validate() == []


def test_planted_copies_are_recorded_and_the_old_keywords_still_plant_them(
    tmp_path: Path,
) -> None:
    from medbatch.testing.planted_copies import plant_copies

    root = write_synthetic_ecg_dataset(tmp_path / "new", 8, seed=4, size=(300, 214))
    planted = plant_copies(root, duplicates=2, conflicts=1, near_duplicates=1)
    assert [copy["copy_kind"] for copy in planted] == ["duplicate", "duplicate", "conflict", "near"]
    sidecar = json.loads((root / "labels.json").read_text("utf-8"))
    files = {entry["path"]: entry for entry in sidecar["files"]}
    assert len(files) == 12
    for copy in planted:
        source = files[copy["copy_of"]]
        same_bytes = (root / copy["path"]).read_bytes() == (root / source["path"]).read_bytes()
        assert same_bytes == (copy["copy_kind"] != "near")
        assert (copy["label"] == source["label"]) == (copy["copy_kind"] != "conflict")
    readme = (root / "README.txt").read_text("utf-8")
    assert "Planted exact duplicates: 2    planted label conflicts: 1" in readme
    assert "Planted near-duplicates (re-encoded copies): 1" in readme

    with pytest.warns(DeprecationWarning, match="plant_copies"):
        old = write_synthetic_ecg_dataset(
            tmp_path / "old", 8, seed=4, size=(300, 214),
            duplicates=2, conflicts=1, near_duplicates=1,
        )  # fmt: skip
    written = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(old).as_posix() for p in old.rglob("*") if p.is_file())
    for name in written:
        assert (old / name).read_bytes() == (root / name).read_bytes(), name
