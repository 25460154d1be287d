"""The parquet table is written in row groups from the JSONL, with the same content."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import medbatch.store as store_module
from medbatch.records import AnswerStatus, Prediction
from medbatch.store import RunStore


def _prediction(
    i: int, *, attempt: int = 0, full: bool = True, first_keys: bool = True
) -> Prediction:
    error = i % 4 == 3
    fields: dict[str, object] = {
        "record_id": f"r{i}",
        "image_sha256": f"{i:064x}",
        "truth": "NORMAL" if i % 2 else "AFIB",
        "label": None if error else ("NORMAL" if i % 3 else "AFIB"),
        "status": AnswerStatus.ERROR if error else AnswerStatus.PARSED,
        "model_id": "m",
        "runner": "function",
        "prompt_fingerprint": "p",
        "params_fingerprint": f"q{attempt}",
        "created_at": f"2026-11-25T00:00:{attempt:02d}+00:00",
    }
    if full:
        fields.update(
            method="final_line",
            evidence=None if error else "FINAL CLASSIFICATION: NORMAL",
            evidence_start=None if error else i,
            evidence_end=None if error else i + 7,
            text=f"answer {i} try {attempt}",
            finish_reason="stop",
            label_scores={"NORMAL": 0.25 * (i % 4), "AFIB": 1.0},
            error_kind="request_failed" if error else None,
            error_message="HTTP 503" if error else None,
            retryable=True if error else None,
            latency_s=0.5 + i,
            prompt_tokens=100 + i,
            completion_tokens=3,
            metadata={"site": f"s{i % 3}"} if first_keys or i != 21 else {"other": 1},
        )
    return Prediction.model_validate(fields)


def _reference(run_dir: Path, out: Path) -> None:
    """The table as it was written before row groups: one frame, one `to_parquet`."""
    RunStore(run_dir).predictions_frame().to_parquet(out, index=False)


def _fill(run_dir: Path, first_full: bool) -> None:
    with RunStore(run_dir) as store:
        store.append(
            [_prediction(i, full=i >= 5 or i == 0, first_keys=first_full) for i in range(24)]
        )
        # Retries of a few records: their last line wins, at their first position.
        store.append([_prediction(i, attempt=1) for i in (20, 2, 11)])
    path = run_dir / "predictions.jsonl"
    path.write_bytes(path.read_bytes() + b"not json\n" + b'{"record_id": "torn"')


@pytest.mark.parametrize("first_full", [True, False], ids=["same-keys", "other-keys"])
def test_table_in_row_groups_matches_one_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first_full: bool
) -> None:
    monkeypatch.setattr(store_module, "TABLE_ROW_GROUP", 5)
    run_dir = tmp_path / "run"
    _fill(run_dir, first_full)
    stamp = RunStore(run_dir).write_table()
    _reference(run_dir, tmp_path / "reference.parquet")
    written = pq.ParquetFile(run_dir / "predictions.parquet")
    reference = pq.ParquetFile(tmp_path / "reference.parquet")
    assert stamp["rows"] == 24
    assert written.schema_arrow.equals(reference.schema_arrow, check_metadata=True)
    new, old = (
        pd.read_parquet(run_dir / "predictions.parquet"),
        pd.read_parquet(tmp_path / "reference.parquet"),
    )
    pd.testing.assert_frame_equal(new, old)
    assert list(new["record_id"][:3]) == ["r0", "r1", "r2"]
    assert new.set_index("record_id").loc["r2", "params_fingerprint"] == "q1"
    # Streamed: one row group per 5 rows, though some groups lack values (nulls, integers
    # among nulls) the others hold.
    assert written.num_row_groups == 5
