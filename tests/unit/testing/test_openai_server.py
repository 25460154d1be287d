"""The loopback fault-injecting server: answers, faults, schedule, limits, backends."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from medbatch.records import InferenceRequest, InferenceResponse
from medbatch.testing import FunctionRunner
from medbatch.testing.openai_server import OpenAITestServer, request_from_body


def _png_url(color: int = 10) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (color, 0, 0)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _body(n: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "model": "test-model",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": f"Classify image {n}."},
                    {"type": "image_url", "image_url": {"url": _png_url(n % 250)}},
                ],
            },
        ],
        "max_tokens": 64,
        **extra,
    }


CHOICE: dict[str, Any] = {"structured_outputs": {"choice": ["NORMAL", "POST_MI"]}}
SCHEMA: dict[str, Any] = {
    "response_format": {
        "type": "json_schema",
        "json_schema": {
            "name": "label_answer",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"label": {"type": "string", "enum": ["NORMAL", "POST_MI"]}},
                "required": ["label"],
                "additionalProperties": False,
            },
        },
    }
}


# One client for the module: building one per call (its TLS context) costs ~0.1 s.
_CLIENT = httpx.Client(timeout=5, verify=False)


@pytest.fixture(scope="module", autouse=True)
def _close_client() -> Iterator[None]:
    yield
    _CLIENT.close()


def _post(server: OpenAITestServer, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return _CLIENT.post(f"{server.base_url}/chat/completions", json=body, **kwargs)


def test_answers_in_openai_shape_and_records_bodies_without_image_bytes() -> None:
    with OpenAITestServer(answer=lambda body: "FINAL CLASSIFICATION: NORMAL") as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        assert server.base_url.endswith("/v1")
        response = _post(server, _body())
        models = _CLIENT.get(f"{server.base_url}/models").json()
    assert response.status_code == 200
    payload = response.json()
    assert payload["choices"][0]["message"] == {
        "role": "assistant",
        "content": "FINAL CLASSIFICATION: NORMAL",
    }
    assert payload["choices"][0]["finish_reason"] == "stop"
    assert payload["usage"]["completion_tokens"] > 0
    assert payload["model"] == "test-model"
    assert models["data"][0]["id"] == "medbatch-test"
    seen = server.requests_seen[0]
    url = seen["messages"][1]["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,<")
    assert "sha256:" in url
    assert "iVBOR" not in json.dumps(server.requests_seen)  # no PNG bytes kept
    assert server.outcomes == Counter({"ok": 1})


def test_sustains_concurrent_requests_with_latency() -> None:
    async def burst(server: OpenAITestServer, n: int) -> tuple[list[int], float]:
        async with httpx.AsyncClient(timeout=10, verify=False) as client:
            url = f"{server.base_url}/chat/completions"
            bodies = [_body(i) for i in range(n)]
            started = time.perf_counter()
            replies = await asyncio.gather(*(client.post(url, json=body) for body in bodies))
            elapsed = time.perf_counter() - started
        return [reply.status_code for reply in replies], elapsed

    with OpenAITestServer(latency_s=0.05) as server:
        statuses, elapsed = asyncio.run(burst(server, 32))
    assert statuses == [200] * 32
    # Answered side by side, not one after the other (which would take 32 × 50 ms = 1.6 s);
    # the bounds are loose because a busy CI machine slows the client, not the server.
    assert server.peak_in_flight >= 8
    assert elapsed < 0.05 * 32


def test_fault_schedule_is_deterministic_and_order_independent() -> None:
    bodies = [_body(i) for i in range(60)]

    def outcomes(order: list[int]) -> dict[int, int]:
        with OpenAITestServer(fault_rate=0.3, faults=("429", "500", "503"), seed=7) as server:
            return {i: _post(server, bodies[i]).status_code for i in order}

    forward = outcomes(list(range(60)))
    backward = outcomes(list(reversed(range(60))))
    assert forward == backward
    failed = sum(status != 200 for status in forward.values())
    assert 5 <= failed <= 35  # about 30 %
    with OpenAITestServer(fault_rate=0.3, faults=("429", "500", "503"), seed=8) as server:
        other_seed = {i: _post(server, bodies[i]).status_code for i in range(60)}
    assert other_seed != forward


def test_scripted_faults_each_misbehave_as_named() -> None:
    script = ["429", "500", "garbage", "truncated", "timeout", "ok"]
    with OpenAITestServer(script=script, retry_after_s=2, hang_s=1.0) as server:
        rate_limited = _post(server, _body(1))
        server_error = _post(server, _body(2))
        garbage = _post(server, _body(3))
        with pytest.raises(httpx.RemoteProtocolError):
            _post(server, _body(4))
        with pytest.raises(httpx.ReadTimeout):
            _CLIENT.post(f"{server.base_url}/chat/completions", json=_body(5), timeout=0.2)
        fine = _post(server, _body(6))
    assert rate_limited.status_code == 429
    assert rate_limited.headers["Retry-After"] == "2"
    assert rate_limited.json()["error"]["type"] == "rate_limit_error"
    assert server_error.status_code == 500
    assert garbage.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        garbage.json()
    assert fine.status_code == 200
    assert server.outcomes == Counter(dict.fromkeys(script, 1))


def test_constraints_are_honoured_or_ignored() -> None:
    def free_text(body: dict[str, Any]) -> str:
        return "The tracing shows POST_MI changes."

    with OpenAITestServer(answer=free_text) as server:
        choice = _post(server, _body(**CHOICE)).json()["choices"][0]["message"]["content"]
        schema = _post(server, _body(**SCHEMA)).json()["choices"][0]["message"]["content"]
    assert choice == "POST_MI"
    assert json.loads(schema) == {"label": "POST_MI"}
    with OpenAITestServer(answer=free_text, ignore_response_format=True) as server:
        ignored = _post(server, _body(**SCHEMA)).json()["choices"][0]["message"]["content"]
    assert ignored == "The tracing shows POST_MI changes."


def test_logprobs_name_every_label_at_the_label_token() -> None:
    with OpenAITestServer() as server:
        body = _body(**CHOICE, logprobs=True, top_logprobs=5)
        content = _post(server, body).json()["choices"][0]["logprobs"]["content"]
    assert content[0]["token"] == "NORMAL"
    assert [alt["token"] for alt in content[0]["top_logprobs"]] == ["NORMAL", "POST_MI"]
    assert all(item["logprob"] <= 0 for item in content)


def test_max_tokens_truncates_with_finish_reason_length() -> None:
    with OpenAITestServer(answer=lambda body: "one two three four five six") as server:
        payload = _post(server, {**_body(), "max_tokens": 3}).json()
    assert payload["choices"][0]["finish_reason"] == "length"
    assert payload["usage"]["completion_tokens"] == 3


def test_function_backend_gets_the_decoded_request() -> None:
    seen: list[InferenceRequest] = []

    def backend(request: InferenceRequest) -> str:
        seen.append(request)
        return "POST_MI"

    with OpenAITestServer(backend=backend) as server:
        _post(server, _body(3, **CHOICE))
    (request,) = seen
    assert request.constraint is not None
    assert request.constraint.labels == ("NORMAL", "POST_MI")
    assert request.params.max_tokens == 64
    (image,) = request.images
    assert image.read_bytes().startswith(b"\x89PNG")
    assert [m.role for m in request.messages] == ["system", "user"]


def test_batch_runner_backend_and_its_errors() -> None:
    def answer(request: InferenceRequest) -> str | InferenceResponse:
        if "fail" in request.messages[-1].text_content:
            return InferenceResponse.failure(request.record_id, "runner_error", "boom")
        return "NORMAL"

    runner = FunctionRunner(answer, keep_requests=True)
    with OpenAITestServer(backend=runner) as server:
        ok = _post(server, _body())
        failing = _body()
        failing["messages"][1]["content"][0]["text"] = "please fail"
        failed = _post(server, failing)
    assert ok.json()["choices"][0]["message"]["content"] == "NORMAL"
    assert failed.status_code == 500
    assert len(runner.requests_seen) == 2


def test_stops_by_itself_after_max_requests() -> None:
    with OpenAITestServer(max_requests=2) as server:
        url = f"{server.base_url}/chat/completions"
        assert _post(server, _body(1)).status_code == 200
        assert _post(server, _body(2)).status_code == 200
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                _CLIENT.post(url, json=_body(3), timeout=0.5)
            except httpx.TransportError:
                break  # the port is closed: the server stopped
            time.sleep(0.1)
        else:
            pytest.fail("the server kept serving past max_requests")
    assert server.request_count >= 2
    assert len(server.requests_seen) == 2


def test_api_key_is_required_when_set() -> None:
    with OpenAITestServer(api_key="sk-local") as server:
        missing = _post(server, _body())
        bearer = _post(server, _body(), headers={"Authorization": "Bearer sk-local"})
        azure = _post(server, _body(), headers={"api-key": "sk-local"})
    assert missing.status_code == 401
    assert bearer.status_code == 200
    assert azure.status_code == 200


def test_request_from_body_accepts_plain_string_content() -> None:
    request = request_from_body({"messages": [{"role": "user", "content": "hi"}]})
    assert request.messages[0].text_content == "hi"
    assert request.constraint is None
    with pytest.raises(ValueError, match="no messages"):
        request_from_body({})


def test_unknown_fault_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        OpenAITestServer(faults=("explode",), fault_rate=0.1)
