"""`FunctionRunner` keeps the requests it was asked only when told to (flat memory)."""

from __future__ import annotations

import pytest

from medbatch.records import ChatMessage, InferenceRequest
from medbatch.testing import FunctionRunner


def _requests(n: int) -> list[InferenceRequest]:
    return [
        InferenceRequest(record_id=f"r{i}", messages=(ChatMessage.text("user", "Which rhythm?"),))
        for i in range(n)
    ]


def test_by_default_only_counts_requests() -> None:
    runner = FunctionRunner(lambda request: "NORMAL", batch_size=2)
    answers = list(runner.run(_requests(5)))
    assert [a.record_id for a in answers] == [f"r{i}" for i in range(5)]
    assert runner.requests_count == 5
    assert runner._requests_seen == []  # nothing (no image bytes) is held
    with pytest.raises(RuntimeError, match="keep_requests=True"):
        runner.requests_seen  # noqa: B018  (an empty list would read as "nothing asked")


def test_keep_requests_keeps_every_request_in_order() -> None:
    runner = FunctionRunner(lambda request: "NORMAL", batch_size=2, keep_requests=True)
    list(runner.run(_requests(3)))
    assert [r.record_id for r in runner.requests_seen] == ["r0", "r1", "r2"]
    assert runner.requests_count == 3
