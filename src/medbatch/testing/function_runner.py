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

    Counts the requests it was asked in `requests_count`; with `keep_requests=True` it also
    keeps every request (image bytes included) in `requests_seen`, so tests can check what
    reached the back-end. Keeping them is opt-in because a long run would otherwise hold
    every image in memory. Deterministic, no model, no network.

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
        keep_requests: bool = False,
    ) -> None:
        self.fn = fn
        self.model_id = model_id
        self.batch_size = batch_size
        self.capabilities = capabilities or RunnerCapabilities(batching=True)
        self.keep_requests = keep_requests
        self.requests_count = 0
        self._requests_seen: list[InferenceRequest] = []
        self.batches_seen: list[int] = []

    @property
    def requests_seen(self) -> list[InferenceRequest]:
        """Every request asked, in order (only with `keep_requests=True`).

        Raises:
            RuntimeError: The runner was built without `keep_requests=True`, so an empty
                list would wrongly read as "nothing was asked"; `requests_count` counts.
        """
        if not self.keep_requests:
            raise RuntimeError(
                "FunctionRunner keeps requests only when built with keep_requests=True; "
                f"it was asked {self.requests_count} (see requests_count)"
            )
        return self._requests_seen

    def _run_batch(self, requests: Sequence[InferenceRequest]) -> Iterable[InferenceResponse]:
        self.batches_seen.append(len(requests))
        for request in requests:
            self.requests_count += 1
            if self.keep_requests:
                self._requests_seen.append(request)
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
