"""OpenAI Batch API JSONL: export requests, import answers, and a round trip through a run."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from medbatch import ListDataset, Record, classify, get_task
from medbatch.batch_jsonl import (
    build_requests,
    constraint_from_body,
    read_batch_output,
    write_batch_input,
)
from medbatch.records import ImageRef, LabelConstraint
from medbatch.runners.replay import ReplayRunner
from medbatch.testing.contracts import make_request
from medbatch.testing.openai_server import OpenAITestServer

LABELS = ("NORMAL", "POST_MI")


def _png(red: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (red, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _output_line(custom_id: str, text: str, status: int = 200, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "model": "gpt-test",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": 3},
    }
    if status != 200:
        body = {"error": {"message": text, "type": "invalid_request_error"}}
    return {
        "id": f"batch_req_{custom_id}",
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": "req_1", "body": body},
        "error": None,
        **extra,
    }


def _write(path: Path, lines: list[dict[str, Any]], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + tail)
    return path


def test_input_lines_are_openai_batch_requests(tmp_path: Path) -> None:
    requests = [make_request("r1"), make_request("r2")]
    constrained = requests[1].model_copy(update={"constraint": LabelConstraint(labels=LABELS)})
    export = write_batch_input([requests[0], constrained], tmp_path / "in.jsonl", model="gpt-4.1")
    assert export.files == [tmp_path / "in.jsonl"]
    assert export.count == 2
    assert export.failures == []
    first, second = _lines(tmp_path / "in.jsonl")
    assert set(first) == {"custom_id", "method", "url", "body"}
    assert first["custom_id"] == "r1"
    assert first["method"] == "POST"
    assert first["url"] == "/v1/chat/completions"
    assert first["body"]["model"] == "gpt-4.1"
    url = first["body"]["messages"][0]["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert "response_format" not in first["body"]
    assert second["body"]["response_format"]["json_schema"]["strict"] is True


def test_unreadable_images_are_reported_not_written(tmp_path: Path) -> None:
    broken = make_request("broken", image=ImageRef.from_bytes(b"not an image"))
    export = write_batch_input([broken, make_request("ok")], tmp_path / "in.jsonl", model="m")
    assert export.count == 1
    (failure,) = export.failures
    assert failure.record_id == "broken"
    assert failure.error is not None
    assert failure.error.kind == "image_error"
    assert [line["custom_id"] for line in _lines(tmp_path / "in.jsonl")] == ["ok"]


def test_duplicate_ids_and_missing_model_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        write_batch_input([make_request("a"), make_request("a")], tmp_path / "x.jsonl", model="m")
    with pytest.raises(ValueError, match="model"):
        write_batch_input([make_request("a")], tmp_path / "y.jsonl")


def test_large_exports_are_split_into_numbered_files(tmp_path: Path) -> None:
    requests = [make_request(f"r{i}") for i in range(5)]
    export = write_batch_input(requests, tmp_path / "in.jsonl", model="m", max_requests_per_file=2)
    assert [p.name for p in export.files] == ["in-0001.jsonl", "in-0002.jsonl", "in-0003.jsonl"]
    assert [len(_lines(p)) for p in export.files] == [2, 2, 1]
    assert not (tmp_path / "in.jsonl").exists()
    by_size = write_batch_input(requests, tmp_path / "s.jsonl", model="m", max_file_bytes=1200)
    assert len(by_size.files) > 1
    assert all(p.stat().st_size <= 1200 for p in by_size.files)
    assert sum(len(_lines(p)) for p in by_size.files) == 5


def test_output_lines_become_responses_errors_and_missing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    ids = ["ok", "choice", "http_error", "batch_error", "missing"]
    requests = [make_request(i) for i in ids]
    requests[1] = requests[1].model_copy(update={"constraint": LabelConstraint(labels=LABELS)})
    export = write_batch_input(requests, tmp_path / "in.jsonl", model="m")
    output = _write(
        tmp_path / "out.jsonl",
        [
            _output_line("ok", "FINAL CLASSIFICATION: NORMAL"),
            _output_line("choice", '{"label": "POST_MI"}'),
            _output_line("http_error", "image could not be decoded", status=400),
            _output_line("ok", "a repeated line is ignored"),
        ],
        tail='{"custom_id": "cut off mid-li',
    )
    errors = _write(
        tmp_path / "errors.jsonl",
        [
            {
                "id": "x",
                "custom_id": "batch_error",
                "response": None,
                "error": {"code": "batch_expired", "message": "the batch expired"},
            }
        ],
    )
    responses = {
        r.record_id: r for r in read_batch_output([output, errors], input_paths=export.files)
    }
    assert set(responses) == set(ids)
    assert responses["ok"].text == "FINAL CLASSIFICATION: NORMAL"
    assert responses["ok"].usage is not None
    assert responses["ok"].metadata["served_model"] == "gpt-test"
    assert responses["choice"].text == "POST_MI"  # unwrapped with the request's constraint
    http_error = responses["http_error"].error
    assert http_error is not None
    assert http_error.kind == "request_failed"
    assert "HTTP 400" in http_error.message
    assert not http_error.retryable
    batch_error = responses["batch_error"].error
    assert batch_error is not None
    assert "batch_expired" in batch_error.message
    missing = responses["missing"].error
    assert missing is not None
    assert missing.kind == "missing_response"
    assert "not JSON" in caplog.text
    assert "repeats" in caplog.text


def test_constraint_from_body_reads_every_transport() -> None:
    choice = constraint_from_body({"structured_outputs": {"choice": ["A", "B"]}})
    assert choice == LabelConstraint(labels=("A", "B"), mode="choice")
    schema = LabelConstraint(labels=("A", "B"), mode="json", reasoning=True).json_schema()
    assert constraint_from_body({"structured_outputs": {"json": schema}}) == LabelConstraint(
        labels=("A", "B"), mode="json", reasoning=True
    )
    wrapped = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    assert constraint_from_body({"response_format": wrapped}) is not None
    assert constraint_from_body({"response_format": {"type": "json_object"}}) is None
    assert constraint_from_body({}) is None


def test_a_run_goes_through_a_batch_and_comes_back(tmp_path: Path) -> None:
    task = get_task("ecg")
    records = [
        Record(
            id=f"ecg-{i}",
            image=ImageRef.from_bytes(_png(250 if i % 2 else 10)),
            label="POST_MI" if i % 2 else "NORMAL",
        )
        for i in range(6)
    ]
    dataset = ListDataset(records)
    export = write_batch_input(
        build_requests(dataset, task, constrained=True),
        tmp_path / "in.jsonl",
        model="m",
        structured_outputs="vllm",
    )

    # "The batch API": every input line answered by the loopback server, in the output format.
    def answer(body: dict[str, Any]) -> str:
        url = body["messages"][-1]["content"][-1]["image_url"]["url"]
        return "POST_MI" if url == _data_url(_png(250)) else "NORMAL"

    output_lines = []
    with OpenAITestServer(answer=answer) as server, httpx.Client(verify=False) as client:
        for line in _lines(export.files[0]):
            reply = client.post(
                server.base_url.removesuffix("/v1") + line["url"], json=line["body"]
            )
            output_lines.append(
                {
                    "custom_id": line["custom_id"],
                    "error": None,
                    "response": {"status_code": reply.status_code, "body": reply.json()},
                }
            )
    output = _write(tmp_path / "out.jsonl", output_lines)
    runner = ReplayRunner(
        [*export.failures, *read_batch_output(output, input_paths=export.files)], model_id="m"
    )
    result = classify(dataset, task, runner, constrained=True)
    assert (result.predictions["label"] == result.predictions["truth"]).all()
    assert (result.predictions["method"] == "constrained").all()


def _data_url(data: bytes) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(data).decode()
