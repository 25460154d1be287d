"""Synthetic ECG datasets: a folder writer and an in-memory `Dataset`, NOT clinical data.

The pages come from the ECG task's generator (`medbatch.tasks.ecg.signals` for the
physiology, `medbatch.tasks.ecg.paper` for the drawing); the names they export are
re-exported here, where they lived before 0.2.

Example:
    >>> from medbatch.datasets.synthetic import render_ecg_page
    >>> page = render_ecg_page("POST_MI", seed=7, size=(1106, 786))
    >>> page.size
    (1106, 786)
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from medbatch.datasets.base import Dataset
from medbatch.labels import LabelSet
from medbatch.records import ImageRef, Record
from medbatch.tasks.ecg.paper import _jpeg, _render_page, render_ecg_page, render_ecg_paper
from medbatch.tasks.ecg.signals import (
    ECG_CLASSES,
    KAGGLE_ECG_SUBDIR,
    KAGGLE_PAGE_SIZE,
    LEAD_NAMES,
    EcgClass,
    synthesize_ecg,
)

__all__ = [
    "ECG_CLASSES",
    "KAGGLE_ECG_SUBDIR",
    "KAGGLE_PAGE_SIZE",
    "LEAD_NAMES",
    "EcgClass",
    "SyntheticECGDataset",
    "render_ecg_page",
    "render_ecg_paper",
    "synthesize_ecg",
    "write_synthetic_ecg_dataset",
]


def _class_counts(n: int) -> list[int]:
    return [n // len(ECG_CLASSES) + (1 if i < n % len(ECG_CLASSES) else 0)
            for i in range(len(ECG_CLASSES))]  # fmt: skip


_README = """\
SYNTHETIC ECG IMAGES - NOT CLINICAL DATA
========================================

Every image in this folder was drawn by medbatch.datasets.synthetic from a simple
mathematical model of a heartbeat. No patient was recorded. The images imitate the layout of
the Kaggle "evilspirit05/ecg-analysis" set (a mirror of Khan & Hussain, "ECG Images dataset of
Cardiac Patients", Mendeley Data, CC BY 4.0) so that code can be tested offline.

Do not use them to train, validate or evaluate anything meant for patients.

Generator: medbatch.datasets.synthetic.write_synthetic_ecg_dataset
Seed: {seed}    Images: {count}    Page size: {width}x{height} px    Layout: {layout}
Planted exact duplicates: {duplicates}    planted label conflicts: {conflicts}
Planted near-duplicates (re-encoded copies): {near_duplicates}
labels.json lists every file with its label and, for planted copies, the file it copies.
"""


def write_synthetic_ecg_dataset(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    *,
    layout: Literal["kaggle", "flat"] = "kaggle",
    size: tuple[int, int] = KAGGLE_PAGE_SIZE,
    duplicates: int = 0,
    conflicts: int = 0,
    near_duplicates: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a folder of synthetic ECG JPEGs laid out like the Kaggle set.

    Layouts (`root` is `out_dir`, what `kagglehub.dataset_download` would return):

    ```
    kaggle: root/ecg_data_new_version/ecg data new version/normal_ecg_images/Normal(1).jpg
                                                          abnormal_heartbeat_ecg_images/HB(1).jpg
                                                          myocardial_infarction_ecg_images/MI(1).jpg
                                                          post_mi_history_ecg_images/PMI(1).jpg
    flat:   root/Normal(1).jpg, root/HB(1).jpg, ... and root/manifest.csv (path,label,id)
    both:   root/labels.json, root/README.txt
    ```

    Args:
        out_dir: Folder to write into (created if missing).
        n: Number of distinct pages, spread evenly over the four classes.
        seed: Base seed; page i of a class uses seed `seed * 100_003 + i`.
        layout: `kaggle` (class folders) or `flat` (one folder plus a manifest CSV).
        size: Page size in pixels; small sizes make fast tests.
        duplicates: Deprecated: call `medbatch.testing.planted_copies.plant_copies` on the
            written folder. Extra byte-identical copies of pages, in the same class.
        conflicts: Deprecated, as `duplicates`. Extra byte-identical copies filed under a
            *different* class (a label conflict, as the real set has).
        near_duplicates: Deprecated, as `duplicates`. Extra copies re-encoded at another
            JPEG quality (same picture, different bytes).
        overwrite: Replace `out_dir` if it already holds a generated set.

    Returns:
        `out_dir` as a `Path`.

    Raises:
        ValueError: Bad counts, or more copies requested than pages exist.
        FileExistsError: `out_dir` is not empty and `overwrite` is false.
    """
    if n < 0 or duplicates < 0 or conflicts < 0 or near_duplicates < 0:
        raise ValueError("n, duplicates, conflicts and near_duplicates must be >= 0")
    if (duplicates or conflicts or near_duplicates) and n == 0:
        raise ValueError("cannot plant copies in an empty set: use n >= 1")
    if layout not in ("kaggle", "flat"):
        raise ValueError(f"layout must be 'kaggle' or 'flat', got {layout!r}")
    root = Path(out_dir)
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{root} is not empty; pass overwrite=True to replace it")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)

    def class_dir(cls: EcgClass) -> Path:
        folder = root / KAGGLE_ECG_SUBDIR / cls.folder if layout == "kaggle" else root
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    next_index = {cls.label: 1 for cls in ECG_CLASSES}
    entries: list[dict[str, Any]] = []

    def new_file(cls: EcgClass) -> Path:
        path = class_dir(cls) / f"{cls.prefix}({next_index[cls.label]}).jpg"
        next_index[cls.label] += 1
        return path

    for cls, count in zip(ECG_CLASSES, _class_counts(n), strict=True):
        for i in range(count):
            page_seed = seed * 100_003 + i
            image, facts = _render_page(cls.label, page_seed, size)
            path = new_file(cls)
            path.write_bytes(_jpeg(image))
            rel = path.relative_to(root).as_posix()
            entries.append(
                {"path": rel, "label": cls.label, "seed": page_seed, "copy_of": None}
                | {"copy_kind": None, **facts}
            )

    write_synthetic_sidecars(root, entries, seed=seed, size=size, layout=layout)
    if duplicates or conflicts or near_duplicates:
        warnings.warn(
            "write_synthetic_ecg_dataset(duplicates=, conflicts=, near_duplicates=) is "
            "deprecated: call medbatch.testing.planted_copies.plant_copies(root, ...) on the "
            "written folder",
            DeprecationWarning,
            stacklevel=2,
        )
        # The planting lives with the other test files; only this deprecated path reaches it.
        from medbatch.testing.planted_copies import plant_copies

        plant_copies(
            root, duplicates=duplicates, conflicts=conflicts, near_duplicates=near_duplicates
        )
    return root


def write_synthetic_sidecars(
    root: Path,
    entries: list[dict[str, Any]],
    *,
    seed: int,
    size: tuple[int, ...],
    layout: str,
) -> None:
    """(Re)write `labels.json`, `manifest.csv` (flat layout) and `README.txt` of a folder.

    Args:
        root: The folder.
        entries: Every file, as `labels.json` lists it (`copy_kind` set on planted copies).
        seed: The folder's base seed.
        size: Page size in pixels.
        layout: `kaggle` or `flat`.
    """
    kinds = [entry.get("copy_kind") for entry in entries]
    planted = {
        "duplicates": kinds.count("duplicate"),
        "conflicts": kinds.count("conflict"),
        "near_duplicates": kinds.count("near"),
    }
    sidecar = {
        "synthetic": True,
        "notice": "Synthetic ECG images, NOT clinical data.",
        "generator": "medbatch.datasets.synthetic",
        "seed": seed,
        "size": list(size),
        "layout": layout,
        "files": entries,
    }
    (root / "labels.json").write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    if layout == "flat":
        lines = ["path,label,id"]
        lines += [f"{e['path']},{e['label']},{Path(e['path']).stem}" for e in entries]
        (root / "manifest.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "README.txt").write_text(
        _README.format(
            seed=seed,
            count=len(entries),
            width=size[0],
            height=size[1],
            layout=layout,
            **planted,
        ),
        encoding="utf-8",
    )


class SyntheticECGDataset(Dataset):
    """Synthetic ECG pages generated on the fly, as in-memory JPEG records.

    Pages are rendered lazily while iterating (one page in memory at a time); iterating twice
    gives byte-identical images. Classes cycle NORMAL, ABNORMAL_HEARTBEAT,
    MYOCARDIAL_INFARCTION, POST_MI.

    Example:
        >>> ds = SyntheticECGDataset(8, seed=1, size=(1106, 786))
        >>> [r.label for r in ds][:2]
        ['NORMAL', 'ABNORMAL_HEARTBEAT']

    Args:
        n: Number of records.
        seed: Base seed.
        size: Page size in pixels.
        quality: JPEG quality.
    """

    def __init__(
        self,
        n: int,
        seed: int = 0,
        size: tuple[int, int] = KAGGLE_PAGE_SIZE,
        *,
        quality: int = 90,
    ) -> None:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.n = n
        self.seed = seed
        self.labels = LabelSet.from_names([cls.label for cls in ECG_CLASSES])
        self.size = size
        self.quality = quality

    def __len__(self) -> int:
        return self.n

    def _page(self, i: int) -> tuple[str, int]:
        cls = ECG_CLASSES[i % len(ECG_CLASSES)]
        return cls.label, self.seed * 100_003 + i // len(ECG_CLASSES)

    def __iter__(self) -> Iterator[Record]:
        for i in range(self.n):
            label, page_seed = self._page(i)
            image, facts = _render_page(label, page_seed, self.size)
            yield Record(
                id=f"synthetic-{i:06d}",
                image=ImageRef.from_bytes(_jpeg(image, self.quality), media_type="image/jpeg"),
                label=label,
                metadata={"synthetic": True, "seed": page_seed, **facts},
            )
