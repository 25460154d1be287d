from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from medbatch import (
    AnswerStatus,
    ImageFolderDataset,
    ImageRef,
    ListDataset,
    Record,
    classify,
    get_task,
)
from medbatch.errors import RunStoreError
from medbatch.records import InferenceRequest, InferenceResponse
from medbatch.store import RunStore, load_predictions
from medbatch.testing import FunctionRunner

TASK = get_task("ecg")
VERDICT = {
    "NORMAL": "Rhythm regular.\n\n**FINAL CLASSIFICATION:** NORMAL",
    "POST_MI": "Q waves in III.\n\n**FINAL CLASSIFICATION:** POST_MI",
}


def _png(color: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (color, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def ecg_folder(tmp_path: Path) -> Path:
    root = tmp_path / "ecg"
    for folder, count in (("normal_ecg_images", 6), ("post_mi_history_ecg_images", 4)):
        (root / folder).mkdir(parents=True)
        for i in range(count):
            (root / folder / f"{folder[:3]}({i}).png").write_bytes(_png(i * 20 + len(folder)))
    (root / "notes").mkdir()
    (root / "notes" / "x.png").write_bytes(_png(1))  # unmapped folder: skipped
    return root


def _oracle(request: InferenceRequest) -> str:
    # Answers from the folder name embedded in the record id (an "ideal" model).
    return VERDICT["NORMAL" if request.record_id.startswith("normal") else "POST_MI"]


def _dataset(root: Path) -> ImageFolderDataset:
    return ImageFolderDataset(root, TASK.folder_map, labels=TASK.labels)


def test_classify_joins_results_to_records(ecg_folder: Path, tmp_path: Path) -> None:
    result = classify(_dataset(ecg_folder), TASK, FunctionRunner(_oracle), store=tmp_path / "run")
    frame = result.predictions
    assert len(frame) == 10
    assert list(frame["record_id"]) == [r.id for r in _dataset(ecg_folder)]
    assert (frame["label"] == frame["truth"]).all()
    assert result.metrics["accuracy"] == 1.0
    assert result.metrics["coverage"] == 1.0
    assert frame["image_sha256"].str.len().eq(64).all()
    stored = load_predictions(tmp_path / "run")
    assert stored["record_id"].tolist() == frame["record_id"].tolist()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["prompt_fingerprint"] == TASK.prompt.fingerprint
    assert manifest["counts"]["records"] == 10


class CrashError(Exception):
    pass


def test_interrupted_run_resumes_without_loss_or_duplicates(
    ecg_folder: Path, tmp_path: Path
) -> None:
    store = tmp_path / "run"
    calls: list[str] = []

    def crashing(request: InferenceRequest) -> str:
        if len(calls) == 5:
            raise CrashError("power cut")
        calls.append(request.record_id)
        return _oracle(request)

    # batch_size=1 with the crash escaping the runner simulates a killed process.
    runner = FunctionRunner(crashing, batch_size=1)
    runner._answer_batch = _no_isolation(runner)  # type: ignore[method-assign]
    with pytest.raises(CrashError):
        classify(_dataset(ecg_folder), TASK, runner, store=store)
    assert json.loads((store / "manifest.json").read_text())["status"] == "failed"
    first_calls = list(calls)

    seen_again: list[str] = []

    def second(request: InferenceRequest) -> str:
        seen_again.append(request.record_id)
        return _oracle(request)

    result = classify(_dataset(ecg_folder), TASK, FunctionRunner(second), store=store)
    assert result.skipped == len(first_calls)
    assert set(seen_again).isdisjoint(first_calls)
    assert sorted(result.predictions["record_id"]) == sorted(r.id for r in _dataset(ecg_folder))
    assert result.predictions["record_id"].is_unique
    assert result.metrics["accuracy"] == 1.0


def _no_isolation(runner: FunctionRunner):  # type: ignore[no-untyped-def]
    def answer(batch):  # type: ignore[no-untyped-def]
        yield from runner._run_batch(batch)

    return answer


def test_resume_twice_changes_nothing(ecg_folder: Path, tmp_path: Path) -> None:
    first = classify(_dataset(ecg_folder), TASK, FunctionRunner(_oracle), store=tmp_path / "r")
    runner = FunctionRunner(keep_requests=True, fn=_oracle)
    second = classify(_dataset(ecg_folder), TASK, runner, store=tmp_path / "r")
    assert runner.requests_seen == []
    assert second.skipped == 10
    columns = ["record_id", "label", "status", "image_sha256"]
    assert first.predictions[columns].equals(second.predictions[columns])


def test_changing_the_prompt_reruns(ecg_folder: Path, tmp_path: Path) -> None:
    classify(_dataset(ecg_folder), TASK, FunctionRunner(_oracle), store=tmp_path / "r")
    runner = FunctionRunner(keep_requests=True, fn=lambda r: "NORMAL")
    direct = TASK.with_prompt("direct-v1")
    with pytest.raises(RunStoreError, match=r"prompt 'cot-v1 \w+' → 'direct-v1"):
        classify(_dataset(ecg_folder), direct, runner, store=tmp_path / "r")
    assert runner.requests_seen == []
    classify(_dataset(ecg_folder), direct, runner, store=tmp_path / "r", add_to_run=True)
    assert len(runner.requests_seen) == 10


def test_retry_failed_redoes_only_errors(ecg_folder: Path, tmp_path: Path) -> None:
    def flaky(request: InferenceRequest) -> str | InferenceResponse:
        if request.record_id.startswith("post"):
            return InferenceResponse.failure(request.record_id, "request_failed", "HTTP 503")
        return _oracle(request)

    first = classify(_dataset(ecg_folder), TASK, FunctionRunner(flaky), store=tmp_path / "r")
    assert first.metrics["status_counts"]["error"] == 4
    plain = FunctionRunner(keep_requests=True, fn=_oracle)
    classify(_dataset(ecg_folder), TASK, plain, store=tmp_path / "r")
    assert plain.requests_seen == []  # errors are kept unless asked to retry
    retry = FunctionRunner(keep_requests=True, fn=_oracle)
    result = classify(_dataset(ecg_folder), TASK, retry, store=tmp_path / "r", retry_failed=True)
    assert sorted(r.record_id for r in retry.requests_seen) == sorted(
        rid for rid in result.predictions["record_id"] if rid.startswith("post")
    )
    assert result.metrics["status_counts"]["error"] == 0
    assert result.predictions["record_id"].is_unique


def test_unreadable_image_is_that_records_error(tmp_path: Path) -> None:
    records = [
        Record(id="good", image=ImageRef.from_bytes(_png(3)), label="NORMAL"),
        Record(id="gone", image=ImageRef.from_path(tmp_path / "nope.png"), label="NORMAL"),
    ]
    runner = FunctionRunner(keep_requests=True, fn=_oracle)
    result = classify(ListDataset(records, labels=TASK.labels), TASK, runner)
    by_id = result.predictions.set_index("record_id")
    assert by_id.loc["gone", "status"] == AnswerStatus.ERROR
    assert by_id.loc["gone", "error_kind"] == "image_error"
    assert "nope.png" in by_id.loc["gone", "error_message"]
    assert by_id.loc["good", "status"] == AnswerStatus.PARSED
    assert [r.record_id for r in runner.requests_seen] == ["good"]


def test_constrained_run_uses_direct_prompt_and_flags_ignored_constraint(
    ecg_folder: Path,
) -> None:
    answers = iter(["NORMAL", "POST_MI", "I think this is POST_MI, final answer: POST_MI"] * 4)
    runner = FunctionRunner(keep_requests=True, fn=lambda request: next(answers))
    result = classify(_dataset(ecg_folder), TASK, runner, constrained=True)
    request = runner.requests_seen[0]
    assert request.constraint is not None
    assert request.constraint.labels == TASK.labels.names
    assert "Answer with the label name only" in request.messages[-1].content[0].text  # type: ignore[union-attr]
    assert result.constraint_ignored == 3
    methods = set(result.predictions["method"])
    assert "constrained" in methods


def test_limit_and_in_memory_run(ecg_folder: Path) -> None:
    result = classify(_dataset(ecg_folder), TASK, FunctionRunner(_oracle), limit=3)
    assert len(result.predictions) == 3
    assert result.run_dir is None


def test_store_refuses_a_second_writer(tmp_path: Path) -> None:
    from medbatch.errors import RunStoreError

    with RunStore(tmp_path / "r"), pytest.raises(RunStoreError, match="in use"):
        RunStore(tmp_path / "r").open()
