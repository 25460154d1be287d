"""Consistency checks: the same requests must get the same answers wherever they run.

Two silent failures hide behind a plausible accuracy figure: a back-end that renders the
prompt differently (a dropped system message, an image part in another place), and batched
inference that answers differently from one row at a time (padding bugs). These helpers run
the same requests twice and list every difference.

```python
report = compare_runners(requests, TransformersRunner(path), OpenAICompatibleRunner(...))
assert report.consistent, report.mismatches[:3]
assert check_batch_invariance(requests, TransformersRunner(path, batch_size=8)).consistent
```

Compare greedy answers (temperature 0): sampled answers differ by design.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from medbatch.records import InferenceRequest, InferenceResponse
from medbatch.runners.base import BatchRunner

__all__ = [
    "ConsistencyReport",
    "Mismatch",
    "RecordingRunner",
    "check_batch_invariance",
    "compare_responses",
    "compare_runners",
]

_PROMPT_HASH = "rendered_prompt_sha256"


class Mismatch(BaseModel):
    """One difference between two answers to the same request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    record_id: str
    field: str
    first: Any = None
    second: Any = None


class ConsistencyReport(BaseModel):
    """Every difference found; `consistent` when there is none."""

    model_config = ConfigDict(extra="forbid")

    n: int
    compared_prompts: int = 0
    mismatches: list[Mismatch] = Field(default_factory=list)

    @property
    def consistent(self) -> bool:
        """True when both runs gave the same answers (and prompts, where reported)."""
        return not self.mismatches


class RecordingRunner(BatchRunner):
    """Wraps a runner and keeps every response it gives (e.g. a server's back-end)."""

    name = "recording"

    def __init__(self, inner: BatchRunner) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.batch_size = inner.batch_size
        self.capabilities = inner.capabilities
        self.responses: dict[str, InferenceResponse] = {}

    def start(self) -> None:
        """Start the wrapped runner."""
        self.inner.start()

    def close(self) -> None:
        """Close the wrapped runner."""
        self.inner.close()

    def _run_batch(self, requests: Sequence[InferenceRequest]) -> Iterable[InferenceResponse]:
        for response in self.inner.run(requests):
            self.responses[response.record_id] = response
            yield response


def compare_responses(
    first: Iterable[InferenceResponse], second: Iterable[InferenceResponse]
) -> ConsistencyReport:
    """Compare two sets of responses by record id: text, finish reason, errors, prompts.

    Rendered prompts are compared where both responses report
    `metadata["rendered_prompt_sha256"]` (the transformers runner does).
    """
    a = {response.record_id: response for response in first}
    b = {response.record_id: response for response in second}
    mismatches: list[Mismatch] = []
    compared_prompts = 0
    for record_id in sorted(a.keys() | b.keys()):
        left, right = a.get(record_id), b.get(record_id)
        if left is None or right is None:
            mismatches.append(
                Mismatch(record_id=record_id, field="missing", first=left, second=right)
            )
            continue
        if (left.error is None) != (right.error is None):
            mismatches.append(
                Mismatch(
                    record_id=record_id,
                    field="error",
                    first=left.error.message if left.error else None,
                    second=right.error.message if right.error else None,
                )
            )
            continue
        for name in ("text", "finish_reason"):
            if getattr(left, name) != getattr(right, name):
                mismatches.append(
                    Mismatch(
                        record_id=record_id,
                        field=name,
                        first=getattr(left, name),
                        second=getattr(right, name),
                    )
                )
        left_hash, right_hash = left.metadata.get(_PROMPT_HASH), right.metadata.get(_PROMPT_HASH)
        if left_hash is not None and right_hash is not None:
            compared_prompts += 1
            if left_hash != right_hash:
                mismatches.append(
                    Mismatch(
                        record_id=record_id, field="prompt", first=left_hash, second=right_hash
                    )
                )
    return ConsistencyReport(
        n=len(a.keys() | b.keys()), compared_prompts=compared_prompts, mismatches=mismatches
    )


def compare_runners(
    requests: Sequence[InferenceRequest], first: BatchRunner, second: BatchRunner
) -> ConsistencyReport:
    """Run the same requests through two runners and compare the answers."""
    with first:
        answers_a = list(first.run(requests))
    with second:
        answers_b = list(second.run(requests))
    return compare_responses(answers_a, answers_b)


def check_batch_invariance(
    requests: Sequence[InferenceRequest], runner: BatchRunner
) -> ConsistencyReport:
    """Answers with the runner's batch size must equal answers one request at a time."""
    batch_size = runner.batch_size
    with runner:
        batched = list(runner.run(requests))
        runner.batch_size = 1
        try:
            single = list(runner.run(requests))
        finally:
            runner.batch_size = batch_size
    return compare_responses(batched, single)
