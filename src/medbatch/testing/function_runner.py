"""`FunctionRunner`: a runner whose answers come from a Python function (a test double)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from medbatch.records import InferenceRequest, InferenceResponse
from medbatch.runners.base import BatchRunner, RunnerCapabilities

__all__ = ["FunctionRunner"]

AnswerFn = Callable[[InferenceRequest], "str | InferenceResponse"]


class FunctionRunner(BatchRunner):
    """Answers each request with `fn(request)`: a string (the answer text) or a response.

    Records every request it was asked in `requests_seen`, so tests can check what reached
    the back-end. Deterministic, no model, no network.

    Example:
        >>> runner = FunctionRunner(lambda request: "FINAL CLASSIFICATION: NORMAL")
    """

    name = "function"

    def __init__(
        self,
        fn: AnswerFn,
        *,
        model_id: str = "function",
        batch_size: int | None = 8,
        capabilities: RunnerCapabilities | None = None,
    ) -> None:
        self.fn = fn
        self.model_id = model_id
        self.batch_size = batch_size
        self.capabilities = capabilities or RunnerCapabilities(batching=True)
        self.requests_seen: list[InferenceRequest] = []
        self.batches_seen: list[int] = []

    def _run_batch(self, requests: Sequence[InferenceRequest]) -> Iterable[InferenceResponse]:
        self.batches_seen.append(len(requests))
        for request in requests:
            self.requests_seen.append(request)
            started = time.perf_counter()
            answer = self.fn(request)
            if isinstance(answer, InferenceResponse):
                yield answer
            else:
                yield InferenceResponse(
                    record_id=request.record_id,
                    text=answer,
                    finish_reason="stop",
                    latency_s=time.perf_counter() - started,
                )
