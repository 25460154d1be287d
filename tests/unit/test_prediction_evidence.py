"""`Prediction.evidence_start/evidence_end`: the parser's span, carried into stored rows."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from medbatch import get_task
from medbatch.parsing.answer import TAIL_CHARS
from medbatch.records import AnswerStatus, InferenceRequest, Prediction
from medbatch.store import PREDICTIONS, PREDICTIONS_TABLE, RunStore, load_predictions
from medbatch.testing import FunctionRunner

TASK = get_task("ecg")
# Long evidence (over the 240 characters `evidence` keeps) and an answer over TAIL_CHARS.
LONG = "Q waves in III " * 12 + "so the FINAL CLASSIFICATION: POST_MI, " + "as Q waves stay " * 10
ANSWERS = {
    "short": "Rhythm regular.\n\n**FINAL CLASSIFICATION:** NORMAL",
    "long": "x" * (TAIL_CHARS + 5000) + "\n" + LONG,
    "none": "I see an image.",
}


def _png(color: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (color, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    from medbatch import ImageRef, ListDataset, Record, classify

    records = [
        Record(id=name, image=ImageRef.from_bytes(_png(n * 40))) for n, name in enumerate(ANSWERS)
    ]

    def answer(request: InferenceRequest) -> str:
        return ANSWERS[request.record_id]

    classify(ListDataset(records), TASK, FunctionRunner(answer), store=tmp_path / "run")
    return tmp_path / "run"


def test_offsets_point_into_the_stored_answer(run_dir: Path) -> None:
    frame = load_predictions(run_dir).set_index("record_id")
    marked = {}
    for name in ("short", "long"):
        row = frame.loc[name]
        assert row["text"] == ANSWERS[name]
        marked[name] = row["text"][int(row["evidence_start"]) : int(row["evidence_end"])]
    assert marked == {"short": "NORMAL", "long": "POST_MI"}
    # Beyond the 32 KiB the parser read, the offsets still count from the answer's start.
    assert int(frame.loc["long", "evidence_start"]) == ANSWERS["long"].rindex("POST_MI")
    # The evidence string is cut at 240 characters: searching the answer for it fails,
    # which is why the offsets are carried.
    assert ANSWERS["long"].rfind(frame.loc["long", "evidence"]) < 0
    assert frame.loc["none", "status"] == AnswerStatus.UNPARSEABLE.value
    assert pd.isna(frame.loc["none", "evidence_start"])


def test_offsets_survive_jsonl_and_parquet(run_dir: Path) -> None:
    from_jsonl = RunStore(run_dir).predictions_frame().set_index("record_id")
    RunStore(run_dir).write_table()
    from_parquet = pd.read_parquet(run_dir / PREDICTIONS_TABLE).set_index("record_id")
    for column in ("evidence_start", "evidence_end"):
        # Integers with nulls, not floats, both ways.
        assert str(from_jsonl[column].dtype) == "Int64"
        assert str(from_parquet[column].dtype) == "Int64"
        assert from_jsonl.loc["long", column] == from_parquet.loc["long", column]
        assert from_jsonl.loc["long", column] > TAIL_CHARS


def test_rows_stored_before_the_fields_existed_load_with_nulls(run_dir: Path) -> None:
    jsonl = run_dir / PREDICTIONS
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    for row in rows:
        del row["evidence_start"], row["evidence_end"]
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))
    frame = RunStore(run_dir).predictions_frame()
    assert frame["evidence_start"].isna().all()
    assert frame["evidence_end"].isna().all()
    # A parquet table written by an older version, read without its JSONL.
    old = frame.drop(columns=["evidence_start", "evidence_end"])
    old.to_parquet(run_dir / PREDICTIONS_TABLE)
    jsonl.unlink()
    loaded = load_predictions(run_dir)
    assert loaded["evidence_start"].isna().all()
    assert loaded["evidence_end"].isna().all()
    assert Prediction.model_validate(rows[0]).evidence_start is None
