"""How many image threads `TransformersRunner` starts next to torch (issue 19)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medbatch.runners.transformers import (
    MAX_IMAGE_WORKERS,
    TransformersRunner,
    image_workers_for,
    usable_cpus,
)


@pytest.mark.parametrize(
    ("device", "torch_threads", "cpus", "expected"),
    [
        # torch already fills every core: one image thread, not four on top of it
        ("cpu", 2, 2, 1),
        ("cpu", 16, 16, 1),
        ("cpu", 8, 4, 1),
        # cores torch leaves free go to images
        ("cpu", 2, 4, 2),
        ("cpu", 4, 7, 3),
        ("cpu", 4, 32, MAX_IMAGE_WORKERS),
        # on a GPU the cores are free, minus one to drive it
        ("cuda", 16, 16, MAX_IMAGE_WORKERS),
        ("cuda", 2, 2, 1),
        ("cuda", 1, 3, 2),
        ("cuda", 1, 1, 1),
    ],
)
def test_image_workers_leave_torch_its_cores(
    device: str, torch_threads: int, cpus: int, expected: int
) -> None:
    assert image_workers_for(device, torch_threads, cpus) == expected


def test_usable_cpus_is_positive() -> None:
    assert usable_cpus() >= 1


def test_auto_pool_is_sized_from_torch_threads(tiny_model_path: Path) -> None:
    import torch

    threads = torch.get_num_threads()
    runner = TransformersRunner(tiny_model_path, device="cpu", batch_size=2)
    assert runner.config.num_image_workers is None
    with runner:
        assert runner.image_workers == image_workers_for("cpu", threads, usable_cpus())
        assert runner._pool is not None
        assert runner._pool._max_workers == runner.image_workers


def test_explicit_workers_are_kept(tiny_model_path: Path) -> None:
    with TransformersRunner(tiny_model_path, device="cpu", num_image_workers=3) as runner:
        assert runner.image_workers == 3
        assert runner._pool is not None
        assert runner._pool._max_workers == 3
