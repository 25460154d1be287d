from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medbatch.errors import RunStoreError
from medbatch.records import AnswerStatus, Prediction
from medbatch.store import RunStore


def _prediction(record_id: str, label: str | None = "NORMAL", **extra: object) -> Prediction:
    fields: dict[str, object] = {
        "record_id": record_id,
        "image_sha256": "0" * 64,
        "label": label,
        "status": AnswerStatus.PARSED if label else AnswerStatus.UNPARSEABLE,
        "model_id": "m",
        "runner": "function",
        "prompt_fingerprint": "p",
        "params_fingerprint": "q",
        "created_at": "2026-11-25T00:00:00+00:00",
    }
    fields.update(extra)
    return Prediction.model_validate(fields)


def test_torn_last_line_is_dropped_not_fatal(tmp_path: Path) -> None:
    with RunStore(tmp_path) as store:
        store.append([_prediction("a"), _prediction("b")])
    path = tmp_path / "predictions.jsonl"
    path.write_bytes(path.read_bytes() + b'{"record_id": "c", "imag')  # crash mid-write
    store = RunStore(tmp_path)
    assert set(store.latest()) == {"a", "b"}
    with store:
        store.append([_prediction("c")])
    assert set(RunStore(tmp_path).latest()) == {"a", "b", "c"}
    assert path.read_bytes().endswith(b"\n")


def test_latest_line_per_record_wins(tmp_path: Path) -> None:
    with RunStore(tmp_path) as store:
        store.append([_prediction("a", None)])
        store.append([_prediction("a", "POST_MI")])
    assert RunStore(tmp_path).latest()["a"].label == "POST_MI"


def test_append_requires_open(tmp_path: Path) -> None:
    with pytest.raises(RunStoreError, match="before open"):
        RunStore(tmp_path).append([_prediction("a")])


def test_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RunStoreError, match="cannot write"):
        RunStore(blocker / "run").open()


@settings(max_examples=50, deadline=None)
@given(
    record_id=st.text(min_size=1, max_size=40),
    text=st.one_of(st.none(), st.text(max_size=200)),
    scores=st.one_of(
        st.none(),
        st.dictionaries(st.sampled_from(["A", "B"]), st.floats(0, 1, allow_nan=False), min_size=1),
    ),
    metadata=st.dictionaries(st.text(max_size=10), st.integers() | st.text(max_size=10)),
)
def test_store_round_trips_any_prediction(
    tmp_path_factory: pytest.TempPathFactory,
    record_id: str,
    text: str | None,
    scores: dict[str, float] | None,
    metadata: dict[str, object],
) -> None:
    path = tmp_path_factory.mktemp("store")
    prediction = _prediction(record_id, text=text, label_scores=scores, metadata=metadata)
    with RunStore(path) as store:
        store.append([prediction])
    assert RunStore(path).latest()[record_id] == prediction


def test_append_fsyncs_the_predictions_file_after_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[tuple[int, int]] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        # What is on disk for this descriptor when fsync is asked: the whole group.
        synced.append((os.fstat(fd).st_ino, os.fstat(fd).st_size))
        real_fsync(fd)

    with RunStore(tmp_path / "run") as store:
        monkeypatch.setattr(os, "fsync", spy)
        store.append([_prediction("a"), _prediction("b")])
        monkeypatch.setattr(os, "fsync", real_fsync)
        path = store.predictions_path
    inode, size = os.stat(path).st_ino, os.stat(path).st_size
    assert synced == [(inode, size)]
    assert size == len(path.read_bytes())
    assert path.read_text().count("\n") == 2
