"""`classify` with a store holds no row per record: memory stays flat as N grows."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

import medbatch.store as store_module
from medbatch.datasets.base import Dataset
from medbatch.evaluation import summarize
from medbatch.pipeline import classify
from medbatch.records import ImageRef, Record
from medbatch.tasks.registry import get_task
from medbatch.testing import FunctionRunner

TASK = get_task("ecg")
_ANSWERS = ["FINAL CLASSIFICATION: NORMAL", "FINAL CLASSIFICATION: AFIB", "I cannot tell."]


class _Generated(Dataset):
    """N records made on demand, so the dataset itself holds nothing per record."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.labels = TASK.labels

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Record]:
        for i in range(self.n):
            data = b"\x89PNG fake " + i.to_bytes(4, "big")
            yield Record(id=f"r{i:06d}", image=ImageRef.from_bytes(data), label="NORMAL")

    def fingerprint(self) -> str:
        return f"generated-{self.n}"


def _answer(request: object) -> str:
    return _ANSWERS[int(request.record_id[1:]) % 3]  # type: ignore[attr-defined]


def _peak_bytes(n: int, run_dir: Path) -> int:
    runner = FunctionRunner(_answer, batch_size=16)
    gc.collect()
    tracemalloc.start()
    try:
        classify(_Generated(n), TASK, runner, store=run_dir, canary=0, progress=False)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_does_not_grow_with_the_number_of_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Row groups far smaller than the run, as at 100k records with the default 10k.
    monkeypatch.setattr(store_module, "TABLE_ROW_GROUP", 100)
    _peak_bytes(300, tmp_path / "warm-up")  # first-use costs (imports, caches) land here
    # Both sizes above a durable group (1024 predictions, held until written: constant).
    small = _peak_bytes(1500, tmp_path / "small")
    large = _peak_bytes(6000, tmp_path / "large")
    per_record = (large - small) / 4500
    # Held predictions cost ~3-4 kB a record (pydantic models, the rows, the frame); what
    # still grows is the dataset order and a status per record (~250 bytes a record).
    assert per_record < 1000, f"peak grows {per_record:.0f} B per record ({small} -> {large})"


def test_result_loads_the_rows_from_the_store_with_the_same_metrics(tmp_path: Path) -> None:
    runner = FunctionRunner(_answer, batch_size=4)
    result = classify(_Generated(30), TASK, runner, store=tmp_path / "run", canary=0)
    assert result._predictions is None  # nothing held until asked
    frame = result.predictions
    assert list(frame["record_id"]) == [f"r{i:06d}" for i in range(30)]
    assert result.metrics == summarize(frame)
    assert result.manifest.counts["answered_now"] == 30
    assert result.manifest.counts["status_parsed"] == 20
