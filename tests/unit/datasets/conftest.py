"""Fixtures for dataset tests: a small Kaggle-shaped ECG folder (built by the generator)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medbatch.datasets.synthetic import write_synthetic_ecg_dataset
from medbatch.testing.planted_copies import plant_copies

SMALL_PAGE = (553, 393)  # a quarter of the Kaggle scans' 2213×1572: fast, still readable


@pytest.fixture(scope="session")
def kaggle_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Kaggle-shaped ECG download: 12 pages, 2 planted copies, 2 label conflicts, 1
    re-encoded near-copy. Shared read-only by the session (tests must not write into it)."""
    root = write_synthetic_ecg_dataset(
        tmp_path_factory.mktemp("kaggle") / "download", 12, seed=5, size=SMALL_PAGE
    )
    plant_copies(root, duplicates=2, conflicts=2, near_duplicates=1)
    return root
