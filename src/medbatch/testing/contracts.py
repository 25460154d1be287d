"""Contract test suites: subclass one per back-end, dataset or parser to check its promises.

```python
from medbatch.testing.contracts import RunnerContract

class TestMyRunner(RunnerContract):
    @pytest.fixture
    def runner(self):
        return MyRunner(...)
```

Each suite only needs its fixture; every promise of the interface is then tested. The suites
are plain pytest classes, so pytest must be installed to use them (it is in `medbatch[dev]`).
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter

import pytest
from PIL import Image

from medbatch.datasets.base import Dataset
from medbatch.labels import LabelSet
from medbatch.parsing.base import LabelParser
from medbatch.records import (
    AnswerStatus,
    ChatMessage,
    GenerationParams,
    ImagePart,
    ImageRef,
    InferenceRequest,
    TextPart,
)
from medbatch.runners.base import BatchRunner

__all__ = ["DatasetContract", "ParserContract", "RunnerContract", "make_request"]


def _png(seed: int) -> bytes:
    image = Image.new("RGB", (32, 32), ((seed * 40) % 256, 128, 200))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_request(record_id: str, *, image: ImageRef | None = None) -> InferenceRequest:
    """A small request with one text part and one image (a generated PNG by default)."""
    ref = image or ImageRef.from_bytes(_png(abs(hash(record_id)) % 7), media_type="image/png")
    return InferenceRequest(
        record_id=record_id,
        messages=(
            ChatMessage(
                role="user",
                content=(TextPart(text="Classify this image."), ImagePart(image=ref)),
            ),
        ),
        params=GenerationParams(max_tokens=8),
    )


class RunnerContract:
    """Promises every `BatchRunner` keeps. Provide a `runner` fixture.

    Set `decodes_images = False` for runners that never look at pixels (replay, doubles).
    """

    n_requests = 5
    decodes_images = True

    @pytest.fixture
    def runner(self) -> BatchRunner:  # pragma: no cover - overridden by subclasses
        raise NotImplementedError("define a `runner` fixture")

    def test_every_request_answered_exactly_once(self, runner: BatchRunner) -> None:
        requests = [make_request(f"r{i}") for i in range(self.n_requests)]
        with runner:
            responses = list(runner.run(requests))
        counts = Counter(response.record_id for response in responses)
        assert counts == Counter(request.record_id for request in requests)

    def test_a_broken_image_fails_only_its_record(self, runner: BatchRunner) -> None:
        broken = make_request("broken", image=ImageRef.from_bytes(b"not an image"))
        requests = [make_request("ok-1"), broken, make_request("ok-2")]
        with runner:
            responses = {response.record_id: response for response in runner.run(requests)}
        assert set(responses) == {"ok-1", "broken", "ok-2"}
        if self.decodes_images:
            error = responses["broken"].error
            assert error is not None
            assert error.kind == "image_error", error
        assert responses["ok-1"].error is None
        assert responses["ok-2"].error is None

    def test_empty_input_gives_no_responses(self, runner: BatchRunner) -> None:
        with runner:
            assert list(runner.run([])) == []

    def test_model_id_is_set(self, runner: BatchRunner) -> None:
        assert runner.model_id
        assert runner.describe()["model_id"] == runner.model_id

    def test_duplicate_request_ids_are_refused(self, runner: BatchRunner) -> None:
        with runner, pytest.raises(ValueError, match="duplicate"):
            list(runner.run([make_request("same"), make_request("same")]))

    # `run()` repairs what a back-end gets wrong (a dropped answer becomes
    # `missing_response`, a second one is dropped, an exception fails the batch), so the
    # promises above hold for any subclass that inherits it. The cases below check the
    # back-end itself, so they can fail for a runner that inherits `run()`.

    def test_back_end_answers_each_request_of_a_batch_once(self, runner: BatchRunner) -> None:
        requests = [make_request(f"r{i}") for i in range(self.n_requests)]
        batch = requests[: runner.batch_size or len(requests)]
        with runner:
            answered = [response.record_id for response in runner._run_batch(batch)]
        assert Counter(answered) == Counter(request.record_id for request in batch)

    def test_run_needs_no_repair(
        self, runner: BatchRunner, caplog: pytest.LogCaptureFixture
    ) -> None:
        requests = [make_request(f"r{i}") for i in range(self.n_requests)]
        with caplog.at_level(logging.WARNING, logger="medbatch.runners.base"), runner:
            responses = list(runner.run(requests))
        repaired = [
            (response.record_id, response.error.kind)
            for response in responses
            if response.error is not None
            and response.error.kind in ("missing_response", "runner_error")
        ]
        assert repaired == []
        assert not [r.getMessage() for r in caplog.records if r.name == "medbatch.runners.base"]

    def test_describe_and_state_are_json(self, runner: BatchRunner) -> None:
        described = json.loads(json.dumps(runner.describe()))
        assert described["model_id"] == runner.model_id
        state = json.loads(json.dumps(runner.state()))
        runner.restore(state)  # an earlier run's state is taken back without error


class DatasetContract:
    """Promises every `Dataset` keeps. Provide a `dataset` fixture."""

    @pytest.fixture
    def dataset(self) -> Dataset:  # pragma: no cover - overridden by subclasses
        raise NotImplementedError("define a `dataset` fixture")

    def test_ids_are_unique(self, dataset: Dataset) -> None:
        ids = [record.id for record in dataset]
        assert len(ids) == len(set(ids))

    def test_order_is_deterministic(self, dataset: Dataset) -> None:
        assert [r.id for r in dataset] == [r.id for r in dataset]

    def test_len_matches_iteration(self, dataset: Dataset) -> None:
        assert len(dataset) == sum(1 for _ in dataset)

    def test_labels_belong_to_the_label_set(self, dataset: Dataset) -> None:
        if dataset.labels is None:
            pytest.skip("dataset declares no label set")
        for record in dataset:
            assert record.label is None or record.label in dataset.labels

    def test_sample_is_seeded_and_stratified(self, dataset: Dataset) -> None:
        first = [r.id for r in dataset.sample(1, seed=3)]
        again = [r.id for r in dataset.sample(1, seed=3)]
        assert first == again
        labels = [r.label for r in dataset.sample(1, seed=3)]
        assert len(labels) == len(set(labels))
        assert set(labels) == {record.label for record in dataset}  # every label drawn
        assert set(first) <= {record.id for record in dataset}

    def test_dataset_is_not_empty(self, dataset: Dataset) -> None:
        assert len(dataset) > 0, "give the contract a dataset with records"

    def test_fingerprint_is_stable_and_follows_the_records(self, dataset: Dataset) -> None:
        assert dataset.fingerprint() == dataset.fingerprint()
        first = next(iter(dataset))
        rest = dataset.filter(lambda record: record.id != first.id)
        assert rest.fingerprint() != dataset.fingerprint()

    def test_images_are_references_that_can_be_read(self, dataset: Dataset) -> None:
        for record in dataset:
            image = record.image
            if image.kind in ("url", "stage"):
                continue  # remote: passed to the back-end by reference, not read here
            assert image.read_bytes(), record.id


class ParserContract:
    """Promises every `LabelParser` keeps. Provide `parser` and `answers` fixtures.

    `answers` is a list of `(text, expected_label)` pairs the parser must get right.
    """

    @pytest.fixture
    def parser(self) -> LabelParser:  # pragma: no cover - overridden by subclasses
        raise NotImplementedError("define a `parser` fixture")

    @pytest.fixture
    def answers(self) -> list[tuple[str, str | None]]:
        return []

    @pytest.mark.parametrize(
        "text", ["", None, "   ", "\x00\x01", "{", "**", "```json\n{", "NORMAL" * 10_000]
    )
    def test_never_raises(self, parser: LabelParser, text: str | None) -> None:
        result = parser.parse(text)
        assert result.label is None or result.label in parser.labels

    def test_label_only_when_parsed(self, parser: LabelParser) -> None:
        for text in ("", "no idea", " ".join(parser.labels.names)):
            result = parser.parse(text)
            assert (result.label is not None) == (result.status is AnswerStatus.PARSED)

    def test_reads_each_bare_label(self, parser: LabelParser) -> None:
        labels: LabelSet = parser.labels
        for name in labels.names:
            assert parser.parse(name).label == name

    def test_known_answers(
        self, parser: LabelParser, answers: list[tuple[str, str | None]]
    ) -> None:
        for text, expected in answers:
            assert parser.parse(text).label == expected, text[:200]
