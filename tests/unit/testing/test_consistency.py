"""Consistency checks with the tiny Gemma 3: batching and serving must not change answers."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from medbatch import GenerationParams, ImageRef, Record, get_task
from medbatch.records import InferenceRequest, InferenceResponse
from medbatch.runners.transformers import TransformersRunner
from medbatch.testing import FunctionRunner
from medbatch.testing.consistency import (
    check_batch_invariance,
    compare_responses,
    compare_runners,
)

TASK = get_task("ecg", prompt="direct-v1")


def _requests(n: int = 5) -> list[InferenceRequest]:
    requests = []
    for i in range(n):
        buffer = io.BytesIO()
        # Different sizes too, so batching needs padding of image-free text around them.
        Image.new("RGB", (60 + 17 * i, 50), (30 * i, 90, 200 - 20 * i)).save(buffer, "PNG")
        record = Record(id=f"r{i}", image=ImageRef.from_bytes(buffer.getvalue()))
        requests.append(
            InferenceRequest(
                record_id=record.id,
                messages=TASK.prompt.render(record),
                params=GenerationParams(max_tokens=6),
            )
        )
    return requests


def test_batched_answers_equal_single_row_answers(tiny_model_path: Path) -> None:
    runner = TransformersRunner(tiny_model_path, batch_size=5)
    report = check_batch_invariance(_requests(), runner)
    assert report.n == 5
    assert report.compared_prompts == 5
    assert report.consistent, report.mismatches


def test_constrained_batched_answers_and_scores_are_stable(tiny_model_path: Path) -> None:
    constrained = [r.model_copy(update={"constraint": TASK.constraint()}) for r in _requests()]
    runner = TransformersRunner(tiny_model_path, batch_size=5)
    with runner:
        batched = {r.record_id: r for r in runner.run(constrained)}
        runner.batch_size = 1
        single = {r.record_id: r for r in runner.run(constrained)}
    assert compare_responses(batched.values(), single.values()).consistent
    for record_id, response in batched.items():
        assert response.label_scores is not None
        other = single[record_id].label_scores
        assert other is not None
        for label, value in response.label_scores.items():
            assert value == pytest.approx(other[label], abs=1e-4)


def test_a_differing_runner_is_reported() -> None:
    requests = _requests(3)
    first = FunctionRunner(lambda r: "NORMAL")
    second = FunctionRunner(lambda r: "NORMAL" if r.record_id != "r1" else "POST_MI")
    report = compare_runners(requests, first, second)
    assert not report.consistent
    assert [(m.record_id, m.field) for m in report.mismatches] == [("r1", "text")]


def test_missing_and_failed_answers_are_mismatches() -> None:
    a = [InferenceResponse(record_id="x", text="A"), InferenceResponse(record_id="y", text="B")]
    b = [InferenceResponse.failure("x", "request_failed", "HTTP 500")]
    fields = {(m.record_id, m.field) for m in compare_responses(a, b).mismatches}
    assert fields == {("x", "error"), ("y", "missing")}


def test_served_tiny_model_answers_like_the_in_process_one(tiny_model_path: Path) -> None:
    from medbatch.runners.openai import OpenAICompatibleRunner
    from medbatch.testing.consistency import RecordingRunner
    from medbatch.testing.openai_server import OpenAITestServer

    requests = _requests(3)
    local = TransformersRunner(tiny_model_path, batch_size=3)
    with local:
        direct = list(local.run(requests))
    backend = RecordingRunner(TransformersRunner(tiny_model_path, batch_size=1))
    with backend, OpenAITestServer(backend=backend, max_requests=50) as server:
        served_runner = OpenAICompatibleRunner(
            base_url=server.base_url, model="tiny", concurrency=2
        )
        with served_runner:
            served = list(served_runner.run(requests))
    # The same greedy answers over HTTP...
    assert compare_responses(direct, served).consistent

    # ...because the server's model saw exactly the prompts the in-process runner rendered.
    # (The server names requests by arrival order, so pair them by content, not by id.)
    def seen(responses: list[InferenceResponse]) -> list[tuple[str, str | None]]:
        return sorted((r.metadata["rendered_prompt_sha256"], r.text) for r in responses)

    assert len(backend.responses) == 3
    assert seen(direct) == seen(list(backend.responses.values()))


def test_a_server_that_drops_images_is_stopped_by_the_canary(tmp_path: Path) -> None:
    from medbatch import ListDataset, classify
    from medbatch.canary import ImageNotSeenError
    from medbatch.runners.openai import OpenAICompatibleRunner
    from medbatch.testing.openai_server import OpenAITestServer

    records = []
    for i in range(80):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (i, 0, 0)).save(buffer, "PNG")
        records.append(
            Record(
                id=f"r{i}",
                image=ImageRef.from_bytes(buffer.getvalue()),
                label=TASK.labels.names[i % 4],
            )
        )
    dataset = ListDataset(records, labels=TASK.labels)
    with OpenAITestServer(lambda body: "NORMAL", drop_images=True, max_requests=100) as server:
        runner = OpenAICompatibleRunner(base_url=server.base_url, model="m", concurrency=4)
        with pytest.raises(ImageNotSeenError):
            classify(dataset, TASK, runner, store=tmp_path / "run")
        assert server.request_count <= 10  # 8 canary requests and the text-only probe
