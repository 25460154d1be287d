"""`DicomDataset`: DICOM images and 12-lead ECG waveforms as RGB records.

```
root/
├── normal/ecg_0001.dcm        12-lead ECG waveform (Waveform module)  → ECG paper page
├── mi/ct_0042.dcm             CT / MR / CR / DX image                  → windowed greyscale
└── us_cine.dcm                multi-frame                              → first (or every) frame
```

Images: modality LUT (rescale slope/intercept), then the VOI LUT or window centre/width in the
file (else the full range), MONOCHROME1 inverted so that bone is white, colour converted to
RGB. Waveforms: the 12 standard leads printed as a paper ECG (25 mm/s, 10 mm/mV, 3×4 + rhythm
strip) by `medbatch.datasets.synthetic.render_ecg_paper`.

Patient identifiers (name, ID, birth date, address, accession number, UIDs, …) are never
copied into records or logs: metadata is built from an allow-list of technical attributes.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

from medbatch.datasets.base import Dataset
from medbatch.errors import DatasetError, ImageLoadError, MissingDependencyError
from medbatch.labels import LabelSet
from medbatch.records import ImageRef, Record
from medbatch.tasks.ecg.paper import render_ecg_paper
from medbatch.tasks.ecg.signals import KAGGLE_PAGE_SIZE, LEAD_NAMES

if TYPE_CHECKING:
    from pydicom.dataset import Dataset as DicomFile

__all__ = ["DICOM_EXTENSIONS", "DicomDataset", "dicom_to_images", "render_dicom_ecg"]

DICOM_EXTENSIONS: frozenset[str] = frozenset({".dcm", ".dicom", ".dic"})

# Technical attributes safe to carry in metadata. An allow-list, not a block-list: a new
# identifying tag in some vendor's file can then never leak.
_SAFE_ATTRIBUTES = (
    "Modality",
    "BodyPartExamined",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "BitsStored",
    "NumberOfFrames",
    "Manufacturer",
    "ViewPosition",
)
_LEAD_PATTERN = re.compile(r"\b(III|II|I|aVR|aVL|aVF|V[1-6])\b", re.IGNORECASE)
_CANONICAL_LEADS = {name.lower(): name for name in LEAD_NAMES}
_TO_MILLIVOLTS = {"uV": 1e-3, "mV": 1.0, "V": 1e3}


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError as exc:
        raise MissingDependencyError("DicomDataset", "pydicom", "dicom") from exc
    return pydicom


def _lead_name(channel: Any) -> str | None:
    """The standard lead name of a waveform channel, from its source code meaning."""
    sources = channel.get("ChannelSourceSequence") or []
    meaning = str(sources[0].get("CodeMeaning", "")) if sources else ""
    label = str(channel.get("ChannelLabel", ""))
    for text in (meaning, label):
        match = _LEAD_PATTERN.search(text.replace("Lead ", " ").replace("lead ", " "))
        if match:
            return _CANONICAL_LEADS.get(match.group(1).lower())
    return None


def render_dicom_ecg(ds: DicomFile, *, size: tuple[int, int] = KAGGLE_PAGE_SIZE) -> Image.Image:
    """Print the 12-lead ECG in a DICOM waveform file on standard ECG paper.

    Uses the longest multiplex group (the rhythm group, not the median beat).

    Args:
        ds: A pydicom dataset with a `WaveformSequence`.
        size: Page size in pixels.

    Returns:
        An RGB page: 25 mm/s, 10 mm/mV, 3×4 layout plus a lead II rhythm strip.

    Raises:
        ImageLoadError: No waveform, or none of its channels is a standard lead.
    """
    groups = ds.get("WaveformSequence") or []
    if not groups:
        raise ImageLoadError("the DICOM file has no WaveformSequence")
    index = max(range(len(groups)), key=lambda i: int(groups[i].NumberOfWaveformSamples))
    group = groups[index]
    fs = float(group.SamplingFrequency)
    try:
        values = np.asarray(ds.waveform_array(index), dtype=np.float64)  # samples × channels
    except Exception as exc:  # pydicom raises several kinds on malformed waveform data
        raise ImageLoadError(f"cannot decode the ECG waveform: {exc}") from exc
    signals: dict[str, npt.NDArray[np.float64]] = {}
    for column, channel in enumerate(group.ChannelDefinitionSequence):
        lead = _lead_name(channel)
        if lead is None or lead in signals:
            continue
        units = channel.get("ChannelSensitivityUnitsSequence") or []
        unit = str(units[0].get("CodeValue", "uV")) if units else "uV"
        signal = values[:, column] * _TO_MILLIVOLTS.get(unit, 1e-3)
        # Centre each lead on its median: raw baselines can sit millivolts off zero.
        signals[lead] = signal - np.median(signal)
    if not signals:
        raise ImageLoadError("the DICOM waveform has no standard ECG lead (I, II, V1, …)")
    duration = values.shape[0] / fs
    header = (
        f"DICOM ECG  {len(signals)} leads  {fs:g} Hz  {duration:.1f} s",
        "Rendered by medbatch (identifiers omitted)",
    )
    return render_ecg_paper(signals, fs, size=size, header=header)


def _to_uint8(pixels: npt.NDArray[Any], ds: DicomFile, pydicom: Any) -> npt.NDArray[np.uint8]:
    """One frame to 8-bit: modality LUT, VOI LUT/window, MONOCHROME1 inversion."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        # Colour: pixel_array already converted YBR to RGB; only the bit depth may differ.
        if pixels.dtype == np.uint8:
            return np.ascontiguousarray(pixels[..., :3])
        top = float(2 ** int(ds.get("BitsStored", 16)) - 1)
        scaled = np.clip(pixels[..., :3] / top * 255.0, 0, 255)
        return scaled.astype(np.uint8)
    values = pydicom.pixels.apply_modality_lut(pixels, ds)
    has_window = "WindowCenter" in ds or "VOILUTSequence" in ds
    if has_window:
        values = pydicom.pixels.apply_voi_lut(values, ds, index=0)
    values = np.asarray(values, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
    if photometric == "MONOCHROME1":
        # MONOCHROME1 stores low values as white; show it the usual way round.
        scaled = 255.0 - scaled
    return scaled.astype(np.uint8)


def dicom_to_images(
    ds: DicomFile,
    *,
    frames: Literal["first", "all"] = "first",
    ecg_size: tuple[int, int] = KAGGLE_PAGE_SIZE,
) -> list[Image.Image]:
    """Turn a DICOM dataset into RGB images (one per frame, or one ECG page).

    Args:
        ds: A pydicom dataset.
        frames: `first` frame only, or `all` frames of a multi-frame image.
        ecg_size: Page size for waveform files.

    Returns:
        At least one RGB image.

    Raises:
        ImageLoadError: Neither pixel data nor a waveform, or they cannot be decoded.
    """
    pydicom = _pydicom()
    if "WaveformSequence" in ds and "PixelData" not in ds:
        return [render_dicom_ecg(ds, size=ecg_size)]
    if "PixelData" not in ds:
        raise ImageLoadError("the DICOM file has neither pixel data nor an ECG waveform")
    try:
        pixels = np.asarray(ds.pixel_array)
    except Exception as exc:  # missing codec, truncated data: pydicom raises many kinds
        raise ImageLoadError(f"cannot decode the DICOM pixel data: {exc}") from exc
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    stack = pixels if n_frames > 1 else pixels[np.newaxis]
    if frames == "first":
        stack = stack[:1]
    return [Image.fromarray(_to_uint8(frame, ds, pydicom)).convert("RGB") for frame in stack]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=3)
    return buffer.getvalue()


def _safe_metadata(ds: DicomFile) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for name in _SAFE_ATTRIBUTES:
        value = ds.get(name)
        if value is not None and value != "":
            metadata[f"dicom_{name}"] = value if isinstance(value, int) else str(value)
    return metadata


class DicomDataset(Dataset):
    """DICOM files under `root`, decoded to RGB PNG records while iterating.

    Records hold the rendered PNG in memory, one at a time as the dataset is iterated (the
    DICOM file itself is not sent to a back-end). A file that cannot be read still yields a
    record, pointing at the file, with the reason in `metadata["load_error"]`, so validation
    and the run report it as that record's error and go on.

    Args:
        root: A folder (searched for DICOM files) or one DICOM file.
        label_map: Folder name → label, as in `ImageFolderDataset`; without it records
            have no label.
        labels: The label set, for validation and evaluation.
        frames: `first` frame of multi-frame images, or `all` (one record per frame, ids
            suffixed `#frame=N`).
        extensions: Suffixes that count as DICOM (files without a suffix are also tried
            when `extensionless` is true; DICOM from PACS often has none).
        extensionless: Also read files without a suffix if they carry the DICOM preamble.
        ecg_size: Page size for ECG waveform files.
        is_valid_file: An extra filter on paths.

    Example:
        >>> from pydicom.data import get_testdata_file
        >>> ds = DicomDataset(get_testdata_file("waveform_ecg.dcm"))
        >>> next(iter(ds)).metadata["dicom_kind"]
        'ecg_waveform'
    """

    def __init__(
        self,
        root: str | Path,
        *,
        label_map: Mapping[str, str] | None = None,
        labels: LabelSet | None = None,
        frames: Literal["first", "all"] = "first",
        extensions: Collection[str] = DICOM_EXTENSIONS,
        extensionless: bool = True,
        ecg_size: tuple[int, int] = KAGGLE_PAGE_SIZE,
        is_valid_file: Callable[[Path], bool] | None = None,
    ) -> None:
        _pydicom()  # fail early, with the install hint, if the extra is missing
        self.root = Path(root).expanduser()
        if not self.root.exists():
            raise DatasetError(f"Couldn't find {self.root}: give a DICOM file or a folder of them")
        self.label_map = dict(label_map) if label_map is not None else None
        self.labels = labels
        self.frames: Literal["first", "all"] = frames
        self.extensions = frozenset(ext.lower() for ext in extensions)
        self.extensionless = extensionless
        self.ecg_size = ecg_size
        self.is_valid_file = is_valid_file

    def _files(self) -> list[Path]:
        if self.root.is_file():
            return [self.root]
        found = []
        for path in sorted(self.root.rglob("*")):
            if not path.is_file() or any(
                p.startswith(".") for p in path.relative_to(self.root).parts
            ):
                continue
            suffix = path.suffix.lower()
            wanted = suffix in self.extensions or (
                self.extensionless and suffix == "" and _has_preamble(path)
            )
            if wanted and (self.is_valid_file is None or self.is_valid_file(path)):
                found.append(path)
        return found

    def _label(self, path: Path) -> str | None:
        if self.label_map is None or self.root.is_file():
            return None
        for folder in reversed(path.relative_to(self.root).parts[:-1]):
            if folder in self.label_map:
                return self.label_map[folder]
        return None

    def __iter__(self) -> Iterator[Record]:
        pydicom = _pydicom()
        for path in self._files():
            rel = path.name if self.root.is_file() else path.relative_to(self.root).as_posix()
            label = self._label(path)
            try:
                ds = pydicom.dcmread(path)
                images = dicom_to_images(ds, frames=self.frames, ecg_size=self.ecg_size)
            except Exception as exc:
                # The failure travels with the record (its image is the undecodable file);
                # the message names the file and the reason, never a header value.
                yield Record(
                    id=rel,
                    image=ImageRef.from_path(path),
                    label=label,
                    metadata={"load_error": f"{type(exc).__name__}: {exc}"[:300]},
                )
                continue
            kind = "ecg_waveform" if "WaveformSequence" in ds and "PixelData" not in ds else "image"
            metadata = {**_safe_metadata(ds), "dicom_kind": kind, "source_file": rel}
            for index, image in enumerate(images):
                record_id = f"{rel}#frame={index}" if len(images) > 1 else rel
                yield Record(
                    id=record_id,
                    image=ImageRef.from_bytes(_png(image), media_type="image/png"),
                    label=label,
                    metadata={**metadata, "frame": index} if len(images) > 1 else metadata,
                )


def _has_preamble(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"
