"""OpenAICompatibleRunner: request shape, retries (without sleeping), failures, secrets, scale."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections import Counter
from collections.abc import Generator, Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any, cast

import httpx
import pytest
from PIL import Image

from medbatch import ListDataset, Record, classify, get_task
from medbatch.errors import ConfigError
from medbatch.images import load_image
from medbatch.records import (
    GenerationParams,
    ImageRef,
    InferenceRequest,
    InferenceResponse,
    LabelConstraint,
)
from medbatch.registry import RUNNERS
from medbatch.runners.openai import OpenAICompatibleRunner, OpenAICompatibleRunnerConfig
from medbatch.testing.contracts import RunnerContract, make_request
from medbatch.testing.openai_server import OpenAITestServer

SECRET = "sk-test-0123456789abcdefSECRET"
LABELS = ("NORMAL", "POST_MI")


def _completion(text: str = "FINAL CLASSIFICATION: NORMAL", **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "model": "served-model-2025",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 300, "completion_tokens": 12},
        **extra,
    }


class Script:
    """A scripted MockTransport: each call takes the next outcome, and is recorded."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        if isinstance(outcome, Exception):
            raise outcome
        if isinstance(outcome, httpx.Response):
            return outcome
        if outcome == "ok":
            return httpx.Response(200, json=_completion())
        if outcome == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        raise AssertionError(outcome)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(request.content) for request in self.requests]


class Sleeps:
    """Records the waits tenacity asks for instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def _runner(
    script: Script, sleeps: Sleeps | None = None, **settings: Any
) -> OpenAICompatibleRunner:
    options: dict[str, Any] = {
        "base_url": "http://127.0.0.1:8000/v1",
        "model": "google/medgemma-4b-it",
        "api_key_env": None,
        "jitter_s": 0.0,
        **settings,
    }
    return OpenAICompatibleRunner(
        transport=httpx.MockTransport(script), sleep=sleeps or Sleeps(), **options
    )


def _run(runner: OpenAICompatibleRunner, requests: list[InferenceRequest]) -> dict[str, Any]:
    with runner:
        return {response.record_id: response for response in runner.run(requests)}


def _constrained(record_id: str, mode: str = "choice", logprobs: bool = False) -> InferenceRequest:
    return make_request(record_id).model_copy(
        update={
            "constraint": LabelConstraint(labels=LABELS, mode=mode),
            "params": GenerationParams(max_tokens=16, seed=3, stop=("\n\n",), logprobs=logprobs),
        }
    )


# -- request shape -----------------------------------------------------------------------


def test_request_body_is_an_openai_chat_completion() -> None:
    script = Script("ok")
    _run(_runner(script), [_constrained("r1")])
    (request,) = script.requests
    assert request.method == "POST"
    assert str(request.url) == "http://127.0.0.1:8000/v1/chat/completions"
    body = script.bodies[0]
    assert body["model"] == "google/medgemma-4b-it"
    assert body["temperature"] == 0.0
    assert body["max_tokens"] == 16
    assert body["seed"] == 3
    assert body["stop"] == ["\n\n"]
    user = body["messages"][0]
    assert user["role"] == "user"
    text, image = user["content"]
    assert text == {"type": "text", "text": "Classify this image."}
    assert image["type"] == "image_url"
    assert image["image_url"]["url"].startswith("data:image/png;base64,iVBOR")
    assert body["response_format"]["type"] == "json_schema"
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["label"]["enum"] == list(LABELS)
    assert "structured_outputs" not in body
    assert not any(key.startswith("guided_") for key in body)


def test_vllm_style_sends_structured_outputs_never_guided_choice() -> None:
    script = Script("ok", "ok")
    runner = _runner(script, structured_outputs="vllm")
    _run(runner, [_constrained("c"), _constrained("j", mode="json")])
    bodies = {body["structured_outputs"].get("choice") is not None: body for body in script.bodies}
    assert bodies[True]["structured_outputs"] == {"choice": list(LABELS)}
    assert bodies[False]["structured_outputs"]["json"]["properties"]["label"]["enum"] == list(
        LABELS
    )
    for body in script.bodies:
        assert "response_format" not in body
        assert not any(key.startswith("guided_") for key in body)


def test_none_style_sends_no_constraint_and_options_reach_the_body() -> None:
    script = Script("ok")
    runner = _runner(
        script,
        structured_outputs="none",
        max_tokens_field="max_completion_tokens",
        logprobs=True,
        top_logprobs=7,
        extra_body={"top_k": 1},
        extra_query={"api-version": "2025-01-01"},
    )
    _run(runner, [_constrained("r1")])
    body = script.bodies[0]
    assert "response_format" not in body
    assert "structured_outputs" not in body
    assert body["max_completion_tokens"] == 16
    assert "max_tokens" not in body
    assert body["logprobs"] is True
    assert body["top_logprobs"] == 7
    assert body["top_k"] == 1
    assert script.requests[0].url.params["api-version"] == "2025-01-01"


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1/chat/completions"),
        ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000/v1/chat/completions"),
        ("http://127.0.0.1:11434", "http://127.0.0.1:11434/v1/chat/completions"),
        (
            "https://x.openai.azure.com/openai/v1",
            "https://x.openai.azure.com/openai/v1/chat/completions",
        ),
    ],
)
def test_base_url_gets_the_chat_completions_path(base_url: str, expected: str) -> None:
    runner = OpenAICompatibleRunner(base_url=base_url, model="m")
    assert runner.url == expected


def test_a_base_url_that_is_not_http_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not an http"):
        OpenAICompatibleRunner(base_url="127.0.0.1:8000", model="m")


def test_api_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", SECRET)
    bearer, azure = Script("ok"), Script("ok")
    _run(_runner(bearer, api_key_env="MY_KEY"), [make_request("a")])
    _run(_runner(azure, api_key_env="MY_KEY", api_key_header="api-key"), [make_request("a")])
    assert bearer.requests[0].headers["Authorization"] == f"Bearer {SECRET}"
    assert azure.requests[0].headers["api-key"] == SECRET
    assert "Authorization" not in azure.requests[0].headers


def test_no_key_is_sent_when_the_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    script = Script("ok")
    _run(_runner(script, api_key_env="OPENAI_API_KEY"), [make_request("a")])
    assert "Authorization" not in script.requests[0].headers


# -- answers -----------------------------------------------------------------------------


def test_answer_usage_finish_reason_and_provenance_are_mapped() -> None:
    script = Script(httpx.Response(200, json=_completion("FINAL: POST_MI")))
    response = _run(_runner(script), [make_request("a")])["a"]
    assert response.ok
    assert response.text == "FINAL: POST_MI"
    assert response.finish_reason == "stop"
    assert response.usage is not None
    assert response.usage.prompt_tokens == 300
    assert response.usage.completion_tokens == 12
    assert response.metadata["served_model"] == "served-model-2025"
    assert response.metadata["attempts"] == 1
    assert response.latency_s is not None
    assert response.latency_s >= 0


def test_choice_answers_over_json_schema_are_unwrapped_to_the_label() -> None:
    script = Script(
        httpx.Response(200, json=_completion('{"label": "POST_MI"}')),
        httpx.Response(200, json=_completion("I think POST_MI")),
    )
    responses = _run(_runner(script, concurrency=1), [_constrained("a"), _constrained("b")])
    texts = sorted(r.text or "" for r in responses.values())
    assert texts == ["I think POST_MI", "POST_MI"]  # an ignored constraint stays visible
    unwrapped = next(r for r in responses.values() if r.text == "POST_MI")
    assert unwrapped.metadata["raw_text"] == '{"label": "POST_MI"}'


def test_logprobs_become_label_scores() -> None:
    with OpenAITestServer(answer=lambda body: "POST_MI") as server:
        runner = OpenAICompatibleRunner(
            base_url=server.base_url, model="m", api_key_env=None, structured_outputs="vllm"
        )
        response = _run(runner, [_constrained("a", logprobs=True)])["a"]
    assert response.text == "POST_MI"
    assert response.label_scores == pytest.approx({"POST_MI": 0.7, "NORMAL": 0.3})


# -- retries -----------------------------------------------------------------------------


def test_scripted_ok_timeout_429_ok_backs_off_then_honours_retry_after() -> None:
    rate_limited = httpx.Response(
        429, json={"error": {"message": "slow down"}}, headers={"Retry-After": "7"}
    )
    script = Script("ok", "timeout", rate_limited, "ok")
    sleeps = Sleeps()
    responses = _run(_runner(script, sleeps, concurrency=1), [make_request("a"), make_request("b")])
    assert all(r.ok for r in responses.values())
    assert sorted(r.metadata["attempts"] for r in responses.values()) == [1, 3]
    assert sleeps.waits == [0.5, 7.0]  # backoff_initial_s, then the server's Retry-After
    assert len(script.requests) == 4


def test_backoff_doubles_up_to_the_cap_then_the_record_fails() -> None:
    errors = [httpx.Response(503, json={"error": {"message": "overloaded"}}) for _ in range(6)]
    sleeps = Sleeps()
    runner = _runner(
        Script(*errors), sleeps, max_retries=5, backoff_initial_s=1.0, backoff_max_s=5.0
    )
    response = _run(runner, [make_request("a")])["a"]
    assert sleeps.waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert response.error is not None
    assert response.error.kind == "request_failed"
    assert "HTTP 503" in response.error.message
    assert "overloaded" in response.error.message
    assert "gave up after 6 attempts" in response.error.message
    assert response.error.retryable
    assert response.metadata["status"] == 503


def test_jitter_adds_up_to_jitter_s() -> None:
    errors = [httpx.Response(500) for _ in range(4)]
    sleeps = Sleeps()
    _run(_runner(Script(*errors), sleeps, max_retries=3, jitter_s=0.25), [make_request("a")])
    for wait, base in zip(sleeps.waits, [0.5, 1.0, 2.0], strict=True):
        assert base <= wait <= base + 0.25


def test_retry_after_as_http_date_ms_and_capped() -> None:
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    script = Script(
        httpx.Response(429, headers={"Retry-After": later}),
        httpx.Response(429, headers={"retry-after-ms": "1500"}),
        httpx.Response(429, headers={"Retry-After": "3600"}),
        "ok",
    )
    sleeps = Sleeps()
    response = _run(_runner(script, sleeps, retry_after_max_s=60), [make_request("a")])["a"]
    assert response.ok
    assert 25 <= sleeps.waits[0] <= 30
    assert sleeps.waits[1:] == [1.5, 60.0]


def test_garbage_truncated_and_dropped_connections_are_retried() -> None:
    script = Script(
        httpx.Response(200, content=b'{"choices": [', headers={"content-type": "application/json"}),
        httpx.Response(200, json={"object": "error"}),
        httpx.RemoteProtocolError("peer closed connection without sending complete body"),
        httpx.ConnectError("connection refused"),
        "ok",
    )
    sleeps = Sleeps()
    response = _run(_runner(script, sleeps, max_retries=4), [make_request("a")])["a"]
    assert response.ok
    assert response.metadata["attempts"] == 5
    assert len(sleeps.waits) == 4


def test_malformed_bodies_fail_the_record_after_the_retries() -> None:
    garbage = [httpx.Response(200, content=b"<html>oops") for _ in range(3)]
    response = _run(_runner(Script(*garbage), max_retries=2), [make_request("a")])["a"]
    assert response.error is not None
    assert response.error.kind == "request_failed"
    assert "not JSON" in response.error.message


def test_client_errors_are_not_retried_and_fail_only_their_record() -> None:
    bad = httpx.Response(400, json={"error": {"message": "image too large"}})
    sleeps = Sleeps()
    responses = _run(
        _runner(Script(bad, "ok"), sleeps, concurrency=1), [make_request("a"), make_request("b")]
    )
    failed = [r for r in responses.values() if not r.ok]
    assert len(failed) == 1
    assert len(responses) == 2
    error = failed[0].error
    assert error is not None
    assert error.kind == "request_failed"
    assert not error.retryable
    assert "HTTP 400" in error.message
    assert "image too large" in error.message
    assert sleeps.waits == []


def test_a_broken_image_fails_before_any_request() -> None:
    script = Script("ok")
    broken = make_request("broken", image=ImageRef.from_bytes(b"not an image"))
    responses = _run(_runner(script), [broken, make_request("fine")])
    assert responses["broken"].error is not None
    assert responses["broken"].error.kind == "image_error"
    assert responses["fine"].ok
    assert len(script.requests) == 1


# -- secrets -----------------------------------------------------------------------------


def test_the_api_key_never_leaks(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    echo = httpx.Response(401, json={"error": {"message": f"Incorrect API key provided: {SECRET}"}})
    script = Script(echo, httpx.Response(500, text=f"upstream saw key {SECRET}"), "ok")
    runner = _runner(script, api_key_env="OPENAI_API_KEY", max_retries=0, concurrency=1)
    responses = _run(runner, [make_request("a"), make_request("b"), make_request("c")])
    messages = [str(r.error) for r in responses.values() if r.error is not None]
    assert len(messages) == 2
    assert any("$OPENAI_API_KEY" in m for m in messages)
    everything = " ".join(
        [
            *messages,
            caplog.text,
            json.dumps(runner.describe()),
            repr(runner.config),
            runner.config.model_dump_json(),
        ]
    )
    assert SECRET not in everything
    assert "***" in " ".join(messages)


def test_describe_hides_credentials_in_the_url() -> None:
    runner = OpenAICompatibleRunner(
        base_url="https://user:pw@example.org/v1?api-key=abc", model="m"
    )
    described = runner.describe()
    assert described["base_url"] == "https://example.org/v1"
    assert described["api_key_env"] == "OPENAI_API_KEY"
    assert described["runner"] == "openai"
    assert described["model_id"] == "m"


# -- lifecycle, config -------------------------------------------------------------------


def test_registry_and_config() -> None:
    assert RUNNERS.get("openai") is OpenAICompatibleRunner
    config = OpenAICompatibleRunnerConfig(base_url="http://127.0.0.1:8000/v1", model="m")
    runner = OpenAICompatibleRunner.from_config(config)
    assert runner.config == config
    assert runner.batch_size == 4 * 16
    assert runner.capabilities.constrained_decoding
    with pytest.raises(ValueError, match="api_key"):
        OpenAICompatibleRunnerConfig(base_url="http://x/v1", model="m", api_key="sk-1")  # type: ignore[call-arg]
    for name, field in OpenAICompatibleRunnerConfig.model_fields.items():
        assert field.description, name


def test_works_inside_a_running_event_loop() -> None:
    async def notebook_cell() -> list[str]:
        runner = _runner(Script("ok", "ok"))
        with runner:
            return [r.record_id for r in runner.run([make_request("a"), make_request("b")])]

    assert sorted(asyncio.run(notebook_cell())) == ["a", "b"]


def test_results_stream_and_an_abandoned_run_closes_cleanly() -> None:
    with OpenAITestServer(latency_s=0.02) as server:
        runner = OpenAICompatibleRunner(
            base_url=server.base_url, model="m", api_key_env=None, concurrency=2, batch_size=4
        )
        with runner:
            stream = cast(
                "Generator[InferenceResponse, None, None]",
                runner.run(make_request(f"r{i}") for i in range(20)),
            )
            first = next(stream)
            seen_at_first = server.request_count
            stream.close()  # the consumer stops early
        assert first.ok
        assert seen_at_first <= 4  # only the first batch was in flight
    runner.close()  # idempotent


# -- contract and scale ------------------------------------------------------------------


class TestOpenAIRunnerContract(RunnerContract):
    @pytest.fixture
    def runner(self) -> Iterator[OpenAICompatibleRunner]:
        with OpenAITestServer(answer=lambda body: "FINAL CLASSIFICATION: NORMAL") as server:
            yield OpenAICompatibleRunner(base_url=server.base_url, model="m", api_key_env=None)


def _png(label: str, index: int) -> bytes:
    buffer = io.BytesIO()
    red = 250 if label == "POST_MI" else 10
    Image.new("RGB", (8, 8), (red, index % 250, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def _oracle(request: InferenceRequest) -> str:
    (image,) = request.images
    red = load_image(image).getpixel((0, 0))[0]  # type: ignore[index]
    label = "POST_MI" if red > 128 else "NORMAL"
    return f"Findings.\n\n**FINAL CLASSIFICATION:** {label}"


def test_500_records_with_20_percent_faults_are_each_answered_exactly_once() -> None:
    labels = ["NORMAL", "POST_MI"]
    records = [
        Record(
            id=f"ecg-{i:03d}",
            image=ImageRef.from_bytes(_png(labels[i % 2], i), media_type="image/png"),
            label=labels[i % 2],
        )
        for i in range(500)
    ]
    seen: list[str] = []
    sleeps = Sleeps()
    with OpenAITestServer(
        backend=_oracle, fault_rate=0.2, seed=11, hang_s=2.0, retry_after_s=0.5
    ) as server:
        runner = OpenAICompatibleRunner(
            base_url=server.base_url,
            model="m",
            api_key_env=None,
            timeout_s=0.5,
            max_retries=3,
            sleep=sleeps,
        )
        result = classify(
            ListDataset(records),
            get_task("ecg"),
            runner,
            on_prediction=lambda prediction: seen.append(prediction.record_id),
        )
    counts = Counter(seen)
    assert set(counts) == {r.id for r in records}
    assert set(counts.values()) == {1}
    frame = result.predictions
    assert len(frame) == 500
    answered = frame[frame["status"] != "error"]
    assert (answered["label"] == answered["truth"]).all()
    assert len(answered) >= 495  # 4 attempts all failing at 20 %: ~0.16 % of records
    faults = {kind: n for kind, n in server.outcomes.items() if kind != "ok"}
    assert set(faults) == {"429", "500", "timeout", "garbage", "truncated"}
    assert sum(faults.values()) >= 60
    failed = int((frame["status"] == "error").sum())
    # Every injected fault but a record's last is retried (a slow answer may add a timeout).
    assert len(sleeps.waits) >= sum(faults.values()) - failed
    assert sleeps.waits.count(0.5) >= faults["429"]


def test_ignored_constraints_are_flagged_by_the_pipeline() -> None:
    records = [
        Record(id=f"r{i}", image=ImageRef.from_bytes(_png("NORMAL", i)), label="NORMAL")
        for i in range(6)
    ]
    with OpenAITestServer(backend=_oracle, ignore_response_format=True) as server:
        runner = OpenAICompatibleRunner(base_url=server.base_url, model="m", api_key_env=None)
        result = classify(ListDataset(records), get_task("ecg"), runner, constrained=True)
    assert result.constraint_ignored == 6
    with OpenAITestServer(backend=_oracle) as server:
        runner = OpenAICompatibleRunner(base_url=server.base_url, model="m", api_key_env=None)
        result = classify(ListDataset(records), get_task("ecg"), runner, constrained=True)
    assert result.constraint_ignored == 0
    assert (result.predictions["label"] == "NORMAL").all()
    assert (result.predictions["method"] == "constrained").all()
