"""Plant copies in a synthetic ECG folder: the duplicates and label conflicts real sets hold.

Public image sets carry byte-identical copies (sometimes filed under another class) and
re-encoded near-copies. Tests of deduplication, sampling and `medbatch validate` need such
files on purpose; this module adds them to a folder written by
`medbatch.datasets.synthetic.write_synthetic_ecg_dataset` and records each copy (and the
file it copies) in the folder's `labels.json`, `manifest.csv` and `README.txt`.

Example:
    >>> import tempfile
    >>> from medbatch.datasets.synthetic import write_synthetic_ecg_dataset
    >>> root = write_synthetic_ecg_dataset(tempfile.mkdtemp(), 4, size=(300, 214))
    >>> [copy["copy_kind"] for copy in plant_copies(root, duplicates=1, conflicts=1)]
    ['duplicate', 'conflict']
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medbatch.datasets.synthetic import write_synthetic_sidecars
from medbatch.tasks.ecg.paper import _jpeg
from medbatch.tasks.ecg.signals import ECG_CLASSES, KAGGLE_ECG_SUBDIR

__all__ = ["plant_copies"]


def plant_copies(
    root: str | Path,
    *,
    duplicates: int = 0,
    conflicts: int = 0,
    near_duplicates: int = 0,
) -> list[dict[str, Any]]:
    """Add copies of existing pages to a synthetic ECG folder, seeded by the folder's seed.

    Copies are drawn from the original pages (never from earlier copies), in this order:
    exact duplicates in the same class, exact copies filed under a *different* class, then
    copies re-encoded at JPEG quality 75. Each gets the next free name of its class.

    Args:
        root: A folder written by `write_synthetic_ecg_dataset` (it reads `labels.json`).
        duplicates: Extra byte-identical copies of existing pages, in the same class.
        conflicts: Extra byte-identical copies filed under a different class (a label
            conflict, as the real set has).
        near_duplicates: Extra copies re-encoded at another JPEG quality (same picture,
            different bytes), for perceptual-hash tests.

    Returns:
        The `labels.json` entries of the new files (`path`, `label`, `copy_of`,
        `copy_kind`).

    Raises:
        ValueError: A negative count, or copies asked of a folder without pages.
        FileNotFoundError: `root` holds no `labels.json`.
    """
    if duplicates < 0 or conflicts < 0 or near_duplicates < 0:
        raise ValueError("duplicates, conflicts and near_duplicates must be >= 0")
    root = Path(root)
    sidecar = json.loads((root / "labels.json").read_text("utf-8"))
    entries: list[dict[str, Any]] = list(sidecar["files"])
    originals = [entry for entry in entries if entry["copy_of"] is None]
    if (duplicates or conflicts or near_duplicates) and not originals:
        raise ValueError("cannot plant copies in an empty set: use n >= 1")
    layout, seed = sidecar["layout"], int(sidecar["seed"])
    by_label = {cls.label: cls for cls in ECG_CLASSES}
    next_index = {cls.label: 1 for cls in ECG_CLASSES}
    for entry in entries:
        next_index[entry["label"]] += 1
    # The stream the writer drew its copies from before they moved here: same seed, same files.
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 0xD0B1E])
    planted: list[dict[str, Any]] = []

    for kind, count in (
        ("duplicate", duplicates),
        ("conflict", conflicts),
        ("near", near_duplicates),
    ):
        for _ in range(count):
            source = originals[int(rng.integers(len(originals)))]
            cls = by_label[source["label"]]
            if kind == "conflict":
                others = [c for c in ECG_CLASSES if c.label != cls.label]
                cls = others[int(rng.integers(len(others)))]
            data = (root / source["path"]).read_bytes()
            if kind == "near":
                with Image.open(io.BytesIO(data)) as img:
                    data = _jpeg(img.convert("RGB"), quality=75)
            folder = root / KAGGLE_ECG_SUBDIR / cls.folder if layout == "kaggle" else root
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{cls.prefix}({next_index[cls.label]}).jpg"
            next_index[cls.label] += 1
            path.write_bytes(data)
            planted.append({"path": path.relative_to(root).as_posix(), "label": cls.label,
                            "seed": source["seed"], "copy_of": source["path"],
                            "copy_kind": kind})  # fmt: skip

    write_synthetic_sidecars(
        root, entries + planted, seed=seed, size=tuple(sidecar["size"]), layout=layout
    )
    return planted
