"""OpenAICompatibleRunner keeps `concurrency` requests in flight across the whole stream.

Issue 19: the runner used to answer `batch_size` requests with one `gather`, then read the
next chunk, so every chunk waited for its slowest request with the other slots idle.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from medbatch.records import InferenceRequest, InferenceResponse
from medbatch.runners.openai import OpenAICompatibleRunner
from medbatch.testing.contracts import make_request

CONCURRENCY = 4


class SlowFirst:
    """An async transport handler: the first request takes `slow_s`, the others `fast_s`.

    It records when each request starts and ends and how many are in flight at once.
    """

    def __init__(self, slow_s: float = 0.4, fast_s: float = 0.005) -> None:
        self.slow_s = slow_s
        self.fast_s = fast_s
        self.in_flight = 0
        self.max_in_flight = 0
        self.starts: list[float] = []
        self.slow_ended: float | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        first = not self.starts
        self.starts.append(time.perf_counter())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(self.slow_s if first else self.fast_s)
        self.in_flight -= 1
        if first:
            self.slow_ended = time.perf_counter()
        body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "NORMAL"}}]}
        return httpx.Response(200, json=body)


def _runner(handler: Any, **settings: Any) -> OpenAICompatibleRunner:
    return OpenAICompatibleRunner(
        transport=httpx.MockTransport(handler),
        base_url="http://127.0.0.1:8000/v1",
        model="m",
        api_key_env=None,
        concurrency=CONCURRENCY,
        **settings,
    )


def _requests(n: int) -> list[InferenceRequest]:
    return [make_request(f"r{i:03d}") for i in range(n)]


@pytest.mark.timeout(60)
def test_later_chunks_start_while_a_slow_request_of_the_first_is_in_flight() -> None:
    n = 4 * CONCURRENCY + 3  # not a multiple of the read-ahead
    handler = SlowFirst()
    # batch_size == concurrency: the old per-chunk `gather` sent request #5 only once the
    # slow request #1 had been answered.
    with _runner(handler, batch_size=CONCURRENCY) as runner:
        responses = list(runner.run(_requests(n)))
    assert handler.slow_ended is not None
    started_meanwhile = sum(start < handler.slow_ended for start in handler.starts)
    # Every other request fits in the slow one's 0.4 s on 3 free slots (5 ms each).
    assert started_meanwhile >= 3 * CONCURRENCY
    assert handler.max_in_flight == CONCURRENCY  # the semaphore still bounds the stream
    counts = Counter(response.record_id for response in responses)
    assert counts == Counter(f"r{i:03d}" for i in range(n))
    assert all(response.ok for response in responses)


@pytest.mark.timeout(60)
def test_the_window_stays_full_with_the_default_read_ahead() -> None:
    n = 100 * CONCURRENCY + 7
    handler = SlowFirst(slow_s=0.3, fast_s=0.002)
    with _runner(handler) as runner:
        ids = [response.record_id for response in runner.run(_requests(n))]
    assert handler.slow_ended is not None
    started_meanwhile = sum(start < handler.slow_ended for start in handler.starts)
    assert started_meanwhile > 4 * CONCURRENCY + 1  # more than the old first chunk
    assert sorted(ids) == [f"r{i:03d}" for i in range(n)]


def test_reading_stays_bounded_by_the_read_ahead() -> None:
    handler = SlowFirst(slow_s=0.01, fast_s=0.001)
    read = 0

    def source() -> Any:
        nonlocal read
        for request in _requests(50):
            read += 1
            yield request

    with _runner(handler, batch_size=6) as runner:
        stream = runner.run(source())
        first = next(stream)
        read_at_first = read
        rest = list(stream)
    assert first.ok
    assert read_at_first <= 6
    assert len(rest) == 49


class Boom(BaseException):
    """Not an `Exception`: escapes the per-record handler, like a cancelled coroutine."""


def test_a_record_whose_coroutine_dies_is_still_answered_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = _runner(SlowFirst(slow_s=0.01, fast_s=0.001))
    original = runner._answer

    async def answer(request: InferenceRequest) -> InferenceResponse:
        if request.record_id == "r003":
            raise Boom("lost")
        return await original(request)

    monkeypatch.setattr(runner, "_answer", answer)
    with runner:
        responses = {r.record_id: r for r in runner.run(_requests(9))}
    assert sorted(responses) == [f"r{i:03d}" for i in range(9)]
    lost = responses["r003"]
    assert lost.error is not None
    assert lost.error.kind == "runner_error"
    assert "Boom" in lost.error.message
    assert all(r.ok for rid, r in responses.items() if rid != "r003")


def test_duplicate_ids_are_refused() -> None:
    with _runner(SlowFirst(slow_s=0.001)) as runner, pytest.raises(ValueError, match="dup"):
        list(runner.run([make_request("a"), make_request("a")]))
