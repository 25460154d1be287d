"""Shared fixtures of the docs tests: one tiny random-weight VLM for every example and page."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`medbatch.testing.tiny_vlm` built once; copies of it are recognised and not rebuilt."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from medbatch.testing.tiny_vlm import tiny_vlm

    return tiny_vlm(tmp_path_factory.mktemp("shared") / "tiny-vlm")


@pytest.fixture
def seed_tiny_vlm(tiny_vlm_dir: Path) -> Callable[[Path], None]:
    """Put a copy of the shared tiny model where an example or page will build one."""

    def seed(target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(tiny_vlm_dir, target)

    return seed
