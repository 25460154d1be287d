from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import pytest

from medbatch.records import InferenceRequest, InferenceResponse
from medbatch.runners.base import BatchRunner
from medbatch.runners.replay import ReplayRunner
from medbatch.testing import FunctionRunner
from medbatch.testing.contracts import RunnerContract, make_request


class Misbehaving(BatchRunner):
    """Drops one answer, answers one twice, invents one, and raises on a marked batch."""

    name = "misbehaving"
    model_id = "bad"
    batch_size = 3

    def _run_batch(self, requests: Sequence[InferenceRequest]) -> Iterable[InferenceResponse]:
        if any(r.record_id == "explode" for r in requests):
            yield InferenceResponse(record_id=requests[0].record_id, text="first")
            raise RuntimeError("engine died")
        for request in requests[1:]:
            yield InferenceResponse(record_id=request.record_id, text="x")
            yield InferenceResponse(record_id=request.record_id, text="again")
        yield InferenceResponse(record_id="stranger", text="?")


def test_base_enforces_exactly_once(caplog: pytest.LogCaptureFixture) -> None:
    requests = [make_request(f"r{i}") for i in range(6)]
    with caplog.at_level(logging.WARNING):
        responses = list(Misbehaving().run(requests))
    assert sorted(r.record_id for r in responses) == [f"r{i}" for i in range(6)]
    missing = [r for r in responses if r.error is not None]
    assert {r.record_id for r in missing} == {"r0", "r3"}
    assert all(r.error and r.error.kind == "missing_response" for r in missing)
    assert "stranger" in caplog.text


def test_a_batch_exception_fails_only_that_batch() -> None:
    ids = ["a", "b", "c", "explode", "e", "f", "g", "h", "i"]
    responses = {r.record_id: r for r in Misbehaving().run(make_request(i) for i in ids)}
    assert set(responses) == set(ids)
    kinds = {rid: (r.error.kind if r.error else None) for rid, r in responses.items()}
    assert kinds == {
        "a": "missing_response",
        "b": None,
        "c": None,
        "explode": None,  # answered before the engine died: kept
        "e": "runner_error",
        "f": "runner_error",
        "g": "missing_response",
        "h": None,
        "i": None,
    }
    assert responses["e"].error is not None
    assert "engine died" in responses["e"].error.message


def test_runs_stream_batch_by_batch() -> None:
    consumed: list[str] = []

    def requests() -> Iterable[InferenceRequest]:
        for i in range(6):
            consumed.append(f"r{i}")
            yield make_request(f"r{i}")

    runner = FunctionRunner(lambda request: "NORMAL", batch_size=2)
    stream = runner.run(requests())
    next(stream)
    assert consumed == ["r0", "r1"]  # the rest is not read before it is needed
    assert len(list(stream)) == 5


class TestFunctionRunnerContract(RunnerContract):
    decodes_images = False

    @pytest.fixture
    def runner(self) -> BatchRunner:
        return FunctionRunner(lambda request: "NORMAL")


class TestReplayRunnerContract(RunnerContract):
    decodes_images = False

    @pytest.fixture
    def runner(self) -> BatchRunner:
        return ReplayRunner({f"r{i}": "NORMAL" for i in range(5)} | {"ok-1": "A", "ok-2": "B"})


def test_replay_marks_missing_recordings() -> None:
    runner = ReplayRunner({"a": "NORMAL"})
    responses = {r.record_id: r for r in runner.run([make_request("a"), make_request("b")])}
    assert responses["a"].text == "NORMAL"
    assert responses["b"].error is not None
    assert responses["b"].error.kind == "missing_recording"
