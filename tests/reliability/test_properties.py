"""Property tests (hypothesis) of the promises the rest of medbatch leans on.

- the run store round-trips any `Prediction` (any text a model or server can produce, any
  float a scorer can produce), through append, close, reopen and torn-tail repair;
- `BatchRunner.run` answers every request exactly once whatever a misbehaving back-end does
  (drops, duplicates, answers for ids never asked, exceptions mid-batch, any batch size);
- resume is idempotent: a second run over a finished run directory asks the back-end
  nothing and changes no stored byte; `--retry-failed` then converges in one step.
"""

from __future__ import annotations

import itertools
import math
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medbatch.datasets.base import ListDataset
from medbatch.pipeline import classify
from medbatch.records import (
    AnswerStatus,
    ImageRef,
    InferenceRequest,
    InferenceResponse,
    Prediction,
    Record,
)
from medbatch.runners.base import BatchRunner
from medbatch.store import RunStore
from medbatch.tasks.ecg import ECG_LABELS
from medbatch.tasks.registry import get_task
from medbatch.testing.function_runner import FunctionRunner

LABELS = ECG_LABELS.names

# Any text a back-end can hand us: JSON allows "\ud800" escapes, so lone surrogates reach
# Python strings from perfectly valid HTTP responses.
any_text = st.text(alphabet=st.characters(codec=None), max_size=200)
optional_text = st.none() | any_text
any_float = st.floats(allow_nan=True, allow_infinity=True)

predictions = st.builds(
    Prediction,
    record_id=st.text(min_size=1, max_size=40),
    image_sha256=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    truth=st.none() | st.sampled_from(LABELS),
    label=st.none() | st.sampled_from(LABELS),
    status=st.sampled_from(list(AnswerStatus)),
    method=optional_text,
    evidence=optional_text,
    text=optional_text,
    finish_reason=st.none() | st.sampled_from(["stop", "length", "content_filter"]),
    label_scores=st.none() | st.dictionaries(st.sampled_from(LABELS), any_float, max_size=4),
    error_kind=st.none() | st.sampled_from(["image_error", "request_failed", "runner_error"]),
    error_message=optional_text,
    retryable=st.none() | st.booleans(),
    latency_s=st.none() | st.floats(min_value=0, allow_nan=False, allow_infinity=False),
    prompt_tokens=st.none() | st.integers(min_value=0, max_value=10**9),
    completion_tokens=st.none() | st.integers(min_value=0, max_value=10**9),
    model_id=st.text(min_size=1, max_size=30),
    runner=st.sampled_from(["replay", "openai", "transformers"]),
    prompt_fingerprint=st.text(alphabet="0123456789abcdef", min_size=16, max_size=16),
    params_fingerprint=st.text(alphabet="0123456789abcdef", min_size=16, max_size=16),
    created_at=st.just("2026-11-25T00:00:00+00:00"),
    metadata=st.dictionaries(
        st.text(max_size=10), st.text(max_size=20) | st.integers(), max_size=3
    ),
)


def _same(left: Prediction, right: Prediction) -> bool:
    """Field equality where NaN equals NaN (a stored NaN score is still a NaN score)."""
    a, b = left.model_dump(), right.model_dump()
    if (a.pop("label_scores") is None) != (b["label_scores"] is None):
        return False
    scores_a, scores_b = left.label_scores or {}, b.pop("label_scores") or {}
    if scores_a.keys() != scores_b.keys():
        return False
    for key, value in scores_a.items():
        other = scores_b[key]
        if not (value == other or (math.isnan(value) and math.isnan(other))):
            return False
    return a == b


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(predictions, min_size=1, max_size=6), torn=st.integers(0, 200))
def test_run_store_round_trips_any_prediction(batch: list[Prediction], torn: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with RunStore(tmp) as store:
            assert store.append(batch) == len(batch)
        jsonl = Path(tmp) / "predictions.jsonl"
        # A crash while a later group was being written: a torn tail after the good lines.
        jsonl.write_bytes(jsonl.read_bytes() + b'{"record_id": "torn", "x'[: torn % 24])
        reopened = RunStore(tmp)
        with reopened:  # repairs the tail
            pass
        stored = list(reopened.iter_predictions())
    assert len(stored) == len(batch), "every appended prediction comes back"
    for original, back in zip(batch, stored, strict=True):
        assert _same(original, back), (original, back)


# -- BatchRunner.run: exactly once, whatever the back-end does ---------------------------------

ACTIONS = ("answer", "drop", "duplicate", "stranger", "raise", "late_raise")


class Misbehaving(BatchRunner):
    """Follows a script of what to do for each request it sees."""

    name = "misbehaving"
    model_id = "misbehaving"

    def __init__(self, script: Sequence[str], batch_size: int | None) -> None:
        self.script = itertools.cycle(script)
        self.batch_size = batch_size

    def _run_batch(self, requests: Sequence[InferenceRequest]) -> Iterable[InferenceResponse]:
        for request in requests:
            action = next(self.script)
            ok = InferenceResponse(record_id=request.record_id, text="NORMAL")
            if action == "answer":
                yield ok
            elif action == "duplicate":
                yield ok
                yield ok.model_copy(update={"text": "POST_MI"})
            elif action == "stranger":
                yield InferenceResponse(record_id=f"never-asked-{request.record_id}", text="x")
            elif action == "raise":
                raise RuntimeError("back-end exploded")
            elif action == "late_raise":
                yield ok
                raise ConnectionError("connection reset after an answer")
            # "drop": say nothing


def _requests(n: int) -> list[InferenceRequest]:
    return [InferenceRequest(record_id=f"r{i}", messages=()) for i in range(n)]


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 40),
    script=st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=12),
    batch_size=st.none() | st.integers(1, 9),
)
def test_batch_runner_answers_exactly_once(
    n: int, script: list[str], batch_size: int | None
) -> None:
    requests = _requests(n)
    responses = list(Misbehaving(script, batch_size).run(iter(requests)))
    counts = Counter(response.record_id for response in responses)
    assert counts == Counter(request.record_id for request in requests)
    for response in responses:
        if response.ok:
            assert response.text == "NORMAL", "the first answer wins, duplicates are dropped"
        else:
            assert response.error is not None
            assert response.error.kind in {"missing_response", "runner_error"}


def test_batch_runner_streams_batch_by_batch() -> None:
    """Batch k is answered before batch k+1 is read (memory stays flat)."""
    pulled: list[int] = []

    def source() -> Iterable[InferenceRequest]:
        for i, request in enumerate(_requests(12)):
            pulled.append(i)
            yield request

    runner = Misbehaving(["answer"], batch_size=4)
    stream = runner.run(source())
    first = next(stream)
    assert first.record_id == "r0"
    assert len(pulled) <= 5, f"read {len(pulled)} requests to answer the first batch"


# -- resume is idempotent ----------------------------------------------------------------------

answers = st.one_of(
    st.sampled_from(LABELS).map(lambda label: f"FINAL CLASSIFICATION: {label}"),
    st.sampled_from(["", "I cannot read this ECG.", "NORMAL or POST_MI", "**POST_MI**"]),
    st.just("<fail>"),
    st.text(max_size=60),
)


def _dataset(n: int) -> ListDataset:
    records = [
        Record(
            id=f"{LABELS[i % 4].lower()}/{i}.png",
            image=ImageRef.from_bytes(f"image-{i}".encode(), media_type="image/png"),
            label=LABELS[i % 4],
        )
        for i in range(n)
    ]
    return ListDataset(records, labels=ECG_LABELS)


def _scripted(texts: dict[str, str]) -> FunctionRunner:
    def answer(request: InferenceRequest) -> str | InferenceResponse:
        text = texts[request.record_id]
        if text == "<fail>":
            return InferenceResponse.failure(request.record_id, "request_failed", "HTTP 500")
        return text

    return FunctionRunner(keep_requests=True, fn=answer, model_id="scripted", batch_size=3)


def _frame_key(frame: object) -> list[tuple[object, ...]]:
    import pandas as pd

    assert isinstance(frame, pd.DataFrame)
    columns = ["record_id", "image_sha256", "label", "status", "text", "error_kind"]
    return [tuple(row) for row in frame[columns].itertuples(index=False)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(answers, min_size=1, max_size=10),
    first_limit=st.none() | st.integers(0, 10),
)
def test_resume_is_idempotent(texts: list[str], first_limit: int | None) -> None:
    dataset = _dataset(len(texts))
    by_id = {record.id: text for record, text in zip(dataset, texts, strict=True)}
    task = get_task("ecg")
    tmp = Path(tempfile.mkdtemp())
    try:
        run_dir = tmp / "run"
        # An interrupted first run (only a prefix done), then a completing one.
        classify(dataset, task, _scripted(by_id), store=run_dir, limit=first_limit, canary=0)
        done = classify(dataset, task, _scripted(by_id), store=run_dir, canary=0)
        jsonl = (run_dir / "predictions.jsonl").read_bytes()

        again = _scripted(by_id)
        repeat = classify(dataset, task, again, store=run_dir, canary=0)
        assert again.requests_seen == [], "a finished run asks the back-end nothing"
        assert (run_dir / "predictions.jsonl").read_bytes() == jsonl, "no stored byte changes"
        assert _frame_key(repeat.predictions) == _frame_key(done.predictions)
        assert repeat.skipped == len(texts)

        # Retrying failures with a back-end that now answers converges in one step.
        healed = {rid: ("NORMAL" if text == "<fail>" else text) for rid, text in by_id.items()}
        retry = _scripted(healed)
        retried = classify(dataset, task, retry, store=run_dir, retry_failed=True, canary=0)
        failed_before = {rid for rid, text in by_id.items() if text == "<fail>"}
        assert {r.record_id for r in retry.requests_seen} == failed_before
        assert not (retried.predictions["status"] == AnswerStatus.ERROR.value).any()
        last = _scripted(healed)
        classify(dataset, task, last, store=run_dir, retry_failed=True, canary=0)
        assert last.requests_seen == []
        latest = RunStore(run_dir).latest()
        assert set(latest) == set(by_id)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
