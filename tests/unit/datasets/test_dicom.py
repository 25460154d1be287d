"""`DicomDataset`: a real 12-lead ECG waveform renders to paper; images are windowed to RGB."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from medbatch.datasets.validation import validate_dataset
from medbatch.images import load_image

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.dataset import Dataset as DicomFile  # noqa: E402
from pydicom.dataset import FileMetaDataset  # noqa: E402
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid  # noqa: E402

from medbatch.datasets.dicom import DicomDataset  # noqa: E402

IDENTIFIERS = ("PatientName", "PatientID", "PatientBirthDate", "PatientAddress")


def _local(name: str) -> Path:
    # download=False: the test files used here ship with pydicom; never fetch.
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not installed")
    return Path(path)


def _grid_pixels(image: np.ndarray) -> float:
    red, green, blue = (image[..., i].astype(np.int16) for i in range(3))
    return float(((red - green > 25) & (red - blue > 15)).mean())


def test_real_ecg_waveform_renders_as_a_12_lead_page(tmp_path: Path) -> None:
    source = _local("waveform_ecg.dcm")
    shutil.copy(source, tmp_path / "ecg.dcm")
    (record,) = list(DicomDataset(tmp_path))

    page = load_image(record.image)
    pixels = np.asarray(page)
    assert page.size == (2213, 1572)
    assert record.metadata["dicom_kind"] == "ecg_waveform"
    assert 0.05 < _grid_pixels(pixels) < 0.6  # pink grid
    assert (pixels.min(axis=2) < 80).mean() > 0.005  # dark traces and lead labels
    # All four rows carry a trace: each horizontal band has dark pixels inside the grid.
    grey = pixels.min(axis=2)
    for row in range(4):
        baseline_mm = 24.0 + 176.0 * (row + 0.55) / 4  # the renderer's row baselines
        y = int(baseline_mm / 210 * 1572)
        assert (grey[y - 60 : y + 60, 200:2000] < 80).any()


def test_identifiers_never_reach_records(tmp_path: Path) -> None:
    ds = pydicom.dcmread(_local("waveform_ecg.dcm"))
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MRN-123456"
    ds.PatientBirthDate = "19700101"
    ds.save_as(tmp_path / "ecg.dcm")
    (record,) = list(DicomDataset(tmp_path / "ecg.dcm"))

    text = repr(record.metadata) + record.id
    for value in ("Doe", "MRN-123456", "19700101"):
        assert value not in text


def _mono_image(photometric: str, values: np.ndarray, frames: int = 1) -> DicomFile:
    ds = DicomFile()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.PatientName = "Should^NotLeak"
    ds.Rows, ds.Columns = values.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = 2, -100
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = values.astype(np.uint16).tobytes()
    return ds


def test_monochrome1_is_inverted_and_frames_are_selectable(tmp_path: Path) -> None:
    ramp = np.tile(np.arange(0, 64, dtype=np.uint16) * 50, (32, 1))  # dark → bright
    _mono_image("MONOCHROME2", ramp).save_as(tmp_path / "m2.dcm", enforce_file_format=True)
    _mono_image("MONOCHROME1", ramp).save_as(tmp_path / "m1.dcm", enforce_file_format=True)
    cine = np.stack([ramp, ramp[:, ::-1], ramp])
    _mono_image("MONOCHROME2", cine, frames=3).save_as(
        tmp_path / "cine.dcm", enforce_file_format=True
    )

    first = {r.id: load_image(r.image).convert("L") for r in DicomDataset(tmp_path)}
    assert first["m2.dcm"].getpixel((0, 0)) == 0
    assert first["m2.dcm"].getpixel((63, 0)) == 255
    assert first["m1.dcm"].getpixel((0, 0)) == 255
    assert first["m1.dcm"].getpixel((63, 0)) == 0
    every = [r.id for r in DicomDataset(tmp_path / "cine.dcm", frames="all")]
    assert every == ["cine.dcm#frame=0", "cine.dcm#frame=1", "cine.dcm#frame=2"]


def test_ct_with_window_and_a_broken_file_among_good_ones(tmp_path: Path) -> None:
    shutil.copy(_local("CT_small.dcm"), tmp_path / "ct.dcm")
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    dataset = DicomDataset(tmp_path)
    records = {r.id: r for r in dataset}

    assert load_image(records["ct.dcm"].image).size == (128, 128)
    report = validate_dataset(dataset)
    assert [issue.record_id for issue in report.errors] == ["broken.dcm"]
    assert "broken.dcm" in report.errors[0].message
