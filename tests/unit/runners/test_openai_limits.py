"""OpenAICompatibleRunner against slow, dead and partial servers: the whole request is
bounded, a dead server is given up on, list-of-parts answers and missing logprobs."""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any

import httpx
import pytest

from medbatch.records import GenerationParams, InferenceRequest, LabelConstraint
from medbatch.runners.openai import OpenAICompatibleRunner, completion_to_response
from medbatch.testing.contracts import make_request
from medbatch.testing.openai_server import OpenAITestServer

LABELS = ("NORMAL", "POST_MI")


class Sleeps:
    """Records the waits tenacity asks for instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class CountingTransport(httpx.AsyncHTTPTransport):
    """The real network transport, counting the attempts that go through it."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        return await super().handle_async_request(request)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _constrained(record_id: str) -> InferenceRequest:
    return make_request(record_id).model_copy(
        update={
            "constraint": LabelConstraint(labels=LABELS),
            "params": GenerationParams(max_tokens=16, logprobs=True),
        }
    )


# -- the whole request is bounded ------------------------------------------------------


@pytest.mark.timeout(60)
def test_timeout_bounds_the_whole_request_not_each_read() -> None:
    # A ~400-byte answer at one byte per 0.2 s takes 80 s; each read is well within 1 s.
    with OpenAITestServer(script=["trickle"], trickle_s=0.2) as server:
        runner = OpenAICompatibleRunner(
            base_url=server.base_url, model="m", api_key_env=None, timeout_s=1.0, max_retries=0
        )
        started = time.perf_counter()
        with runner:
            (response,) = runner.run([make_request("slow")])
        elapsed = time.perf_counter() - started
    assert elapsed < 4.0
    assert response.error is not None
    assert "no answer within 1 s" in response.error.message


def test_a_trickled_answer_within_the_timeout_is_read_whole() -> None:
    with OpenAITestServer(script=["trickle"], trickle_s=0.0005) as server:
        runner = OpenAICompatibleRunner(
            base_url=server.base_url, model="m", api_key_env=None, timeout_s=10.0, max_retries=0
        )
        with runner:
            (response,) = runner.run([make_request("slow")])
    assert response.ok, response.error


# -- a dead or hung server is given up on ------------------------------------------------


def test_a_dead_server_costs_a_few_attempts_not_every_records_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = CountingTransport()
    sleeps = Sleeps()
    runner = OpenAICompatibleRunner(
        base_url=f"http://127.0.0.1:{_closed_port()}/v1",
        model="m",
        api_key_env=None,
        transport=transport,
        sleep=sleeps,
    )
    caplog.set_level(logging.WARNING, logger="medbatch.runners.openai")
    started = time.perf_counter()
    with runner:
        responses = list(runner.run(make_request(f"r{i}") for i in range(300)))
    elapsed = time.perf_counter() - started
    assert len({r.record_id for r in responses}) == 300
    assert all(r.error is not None and r.error.kind == "request_failed" for r in responses)
    assert all(r.error is not None and r.error.retryable for r in responses)
    # Defaults: 16 in flight, 5 attempts each. Without giving up: 1,500 attempts and
    # 300 x 7.5 s of backoff; here the first wave's failures open the breaker.
    assert transport.attempts <= 2 * 16
    assert len(sleeps.waits) <= 2 * 16
    unsent = [r for r in responses if r.metadata.get("server_down")]
    assert len(unsent) >= 300 - 16
    assert unsent[0].error is not None
    assert "not sent" in unsent[0].error.message
    assert "retry_failed" in unsent[0].error.message
    warnings = [r for r in caplog.records if "remaining records" in r.getMessage()]
    assert len(warnings) == 1
    assert elapsed < 30


@pytest.mark.timeout(60)
def test_a_hung_server_costs_about_one_timeout_not_one_per_wave() -> None:
    with OpenAITestServer(fault_rate=1.0, faults=("timeout",), hang_s=30) as server:
        runner = OpenAICompatibleRunner(
            base_url=server.base_url,
            model="m",
            api_key_env=None,
            timeout_s=0.5,
            sleep=Sleeps(),
        )
        started = time.perf_counter()
        with runner:
            responses = list(runner.run(make_request(f"r{i}") for i in range(160)))
        elapsed = time.perf_counter() - started
        sent = server.request_count
    assert len(responses) == 160
    assert all(r.error is not None for r in responses)
    # Without giving up: 10 waves of 16 x 5 attempts x 0.5 s = 25 s and 800 requests.
    assert sent <= 2 * 16
    assert elapsed < 8


def _script(*outcomes: Any) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(outcomes)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        outcome = queue.pop(0) if queue else 200
        if isinstance(outcome, Exception):
            raise outcome
        body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "NORMAL"}}]}
        return httpx.Response(outcome, json=body if outcome == 200 else {"error": "busy"})

    return httpx.MockTransport(handle), seen


def test_the_count_is_of_attempts_in_a_row_and_a_new_run_tries_again() -> None:
    refused = httpx.ConnectError("refused")
    transport, seen = _script(*[refused] * 8)
    runner = OpenAICompatibleRunner(
        base_url="http://127.0.0.1:9/v1",
        model="m",
        api_key_env=None,
        concurrency=1,
        transport=transport,
        sleep=Sleeps(),
    )
    with runner:
        first = list(runner.run([make_request("a"), make_request("b")]))
        # One slot: whichever record takes it first (their images are encoded in parallel)
        # spends its 5 attempts, the other 3 more, and then the breaker opens.
        gave_up = [r for r in first if r.error and "gave up after 5 attempts" in r.error.message]
        down = [r for r in first if r.metadata.get("server_down")]
        assert len(gave_up) == 1
        assert len(down) == 1
        assert {r.record_id for r in first} == {"a", "b"}
        assert len(seen) == 8
        (again,) = runner.run([make_request("c")])  # the server is back
    assert again.ok
    assert len(seen) == 9


def test_any_http_answer_resets_the_count() -> None:
    refused = httpx.ConnectError("refused")
    transport, seen = _script(*[refused] * 7, 503, *[refused] * 7)
    runner = OpenAICompatibleRunner(
        base_url="http://127.0.0.1:9/v1",
        model="m",
        api_key_env=None,
        concurrency=1,
        max_retries=20,
        transport=transport,
        sleep=Sleeps(),
    )
    with runner:
        (response,) = runner.run([make_request("a")])
    assert response.ok
    assert len(seen) == 16


def test_zero_never_gives_up() -> None:
    refused = httpx.ConnectError("refused")
    transport, seen = _script(*[refused] * 30)
    runner = OpenAICompatibleRunner(
        base_url="http://127.0.0.1:9/v1",
        model="m",
        api_key_env=None,
        concurrency=1,
        max_connection_failures=0,
        transport=transport,
        sleep=Sleeps(),
    )
    with runner:
        responses = list(runner.run(make_request(f"r{i}") for i in range(7)))
    assert sum(r.ok for r in responses) == 1  # 6 records x 5 attempts, then the 7th answers
    assert len(seen) == 31


# -- answers servers really send ---------------------------------------------------------


def test_list_of_parts_content_is_joined() -> None:
    payload = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]},
                        {"type": "text", "text": "FINAL CLASSIFICATION: "},
                        {"type": "text", "text": "POST_MI"},
                    ],
                },
                "finish_reason": "stop",
            }
        ]
    }
    response = completion_to_response("a", payload)
    assert response.text == "FINAL CLASSIFICATION: POST_MI"
    constrained = json.loads(json.dumps(payload))
    constrained["choices"][0]["message"]["content"] = [
        {"type": "text", "text": '{"label": "NORMAL"}'}
    ]
    response = completion_to_response("b", constrained, constraint=LabelConstraint(labels=LABELS))
    assert response.text == "NORMAL"
    empty = json.loads(json.dumps(payload))
    empty["choices"][0]["message"]["content"] = []
    assert completion_to_response("c", empty).text is None


def test_missing_logprobs_are_warned_about_once_and_label_scores_stay_empty(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="medbatch.runners.openai")
    with OpenAITestServer(no_logprobs=True) as server:
        runner = OpenAICompatibleRunner(base_url=server.base_url, model="m", api_key_env=None)
        before = runner.capabilities.label_scores
        with runner:
            responses = list(runner.run([_constrained(f"r{i}") for i in range(5)]))
    assert before
    assert all(r.ok and r.label_scores is None for r in responses)
    assert all(r.metadata.get("logprobs_missing") for r in responses)
    assert not runner.capabilities.label_scores
    warnings = [r for r in caplog.records if "no logprobs" in r.getMessage()]
    assert len(warnings) == 1


def test_a_server_with_logprobs_keeps_the_capability(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="medbatch.runners.openai")
    with OpenAITestServer() as server:
        runner = OpenAICompatibleRunner(base_url=server.base_url, model="m", api_key_env=None)
        with runner:
            responses = list(runner.run([_constrained(f"r{i}") for i in range(3)]))
    assert all(r.label_scores is not None for r in responses)
    assert runner.capabilities.label_scores
    assert not [r for r in caplog.records if "no logprobs" in r.getMessage()]


# -- the loopback server reads bodies itself --------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        # vLLM: structured_outputs.choice -> the label itself
        ({"structured_outputs": {"choice": ["A", "B"]}}, "B"),
        # OpenAI: response_format json_schema -> a JSON object following the schema
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "answer",
                        "strict": True,
                        "schema": {
                            "type": "object",
                            "properties": {
                                "reasoning": {"type": "string"},
                                "label": {"type": "string", "enum": ["A", "B"]},
                            },
                            "required": ["reasoning", "label"],
                            "additionalProperties": False,
                        },
                    },
                }
            },
            {"reasoning": "", "label": "B"},
        ),
        ({}, "I would say B."),
    ],
)
def test_the_test_server_reads_hand_written_bodies(extra: dict[str, Any], expected: Any) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "Which?"}], **extra}
    with OpenAITestServer(lambda body: "I would say B.") as server:
        answer = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=10).json()
    content = answer["choices"][0]["message"]["content"]
    assert (json.loads(content) if isinstance(expected, dict) else content) == expected
