"""The runner starts only when a record needs it: a resume with nothing left loads nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from medbatch.datasets.base import ListDataset
from medbatch.pipeline import classify
from medbatch.records import ImageRef, InferenceRequest, Record
from medbatch.tasks.registry import get_task
from medbatch.testing import FunctionRunner


class CountingRunner(FunctionRunner):
    """A FunctionRunner that counts how often it was started (a model load)."""

    def __init__(self) -> None:
        super().__init__(keep_requests=True, fn=lambda request: "FINAL CLASSIFICATION: NORMAL")
        self.starts = 0
        self.closes = 0

    def start(self) -> None:
        self.starts += 1

    def close(self) -> None:
        self.closes += 1


def _dataset(tmp_path: Path, n: int) -> ListDataset:
    task = get_task("ecg")
    records = []
    for i in range(n):
        image = tmp_path / f"{i}.png"
        image.write_bytes(b"\x89PNG fake " + bytes([i]))
        records.append(Record(id=f"r{i}", image=ImageRef.from_path(image), label="NORMAL"))
    return ListDataset(records, labels=task.labels)


def test_resume_with_nothing_left_never_starts_the_runner(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path, 5)
    first = CountingRunner()
    classify(dataset, get_task("ecg"), first, store=tmp_path / "run", progress=False)
    assert first.starts == 1
    again = CountingRunner()
    result = classify(dataset, get_task("ecg"), again, store=tmp_path / "run", progress=False)
    assert result.skipped == 5
    assert again.starts == 0
    assert again.requests_seen == []
    assert again.closes == 1  # closing is still the pipeline's job


def test_resume_with_one_record_left_starts_it_once(tmp_path: Path) -> None:
    classify(_dataset(tmp_path, 4), get_task("ecg"), CountingRunner(), store=tmp_path / "run",
             progress=False)  # fmt: skip
    runner = CountingRunner()
    classify(_dataset(tmp_path, 6), get_task("ecg"), runner, store=tmp_path / "run",
             progress=False)  # fmt: skip
    assert runner.starts == 1
    assert [r.record_id for r in runner.requests_seen] == ["r4", "r5"]


def test_transformers_runner_loads_nothing_for_no_requests() -> None:
    pytest.importorskip("transformers", reason="TransformersRunner needs the local extra")
    from medbatch.runners.transformers import TransformersRunner

    # A folder that does not exist: loading it would raise.
    runner = TransformersRunner("/nonexistent/model", device="cpu")
    requests: list[InferenceRequest] = []
    assert list(runner.run(requests)) == []
    assert runner._loaded is None
    runner.close()
