"""TransformersRunner's contract on tiny random Gemma 3, LLaVA 1.5 and Idefics3 models (CPU).

Every test runs on each architecture, through that architecture's real transformers
processor and model classes. The models' answers are random: nothing here checks that an
answer is right, only that batching, tokenisation, constraints and label scores are computed
the way the runner promises, against independent computations (the processor's own output,
full forward passes one sequence at a time).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch

from medbatch.parsing.interpret import interpret_response
from medbatch.records import (
    AnswerStatus,
    ChatMessage,
    GenerationParams,
    ImagePart,
    ImageRef,
    InferenceRequest,
    InferenceResponse,
    LabelConstraint,
    TextPart,
)
from medbatch.runners._hf import inputs
from medbatch.runners._hf.constraints import ConstraintProgram
from medbatch.runners._hf.inputs import collate
from medbatch.runners.transformers import TransformersRunner
from medbatch.tasks import get_task
from medbatch.testing.contracts import RunnerContract
from medbatch.testing.tiny_vlm import ECG_LABELS, TINY_ARCHITECTURES, TINY_IMAGE_TOKENS, tiny_vlm

SYSTEM = "You are a medical AI assistant specialized in ECG analysis."
CHOICE = LabelConstraint(labels=ECG_LABELS)
JSON = LabelConstraint(labels=ECG_LABELS, mode="json")
# Sizes chosen so Idefics3 splits them differently: 120 x 90 -> 2 x 2 crops + global view,
# 200 x 60 -> 2 x 1 + global (5 and 3 images for the vision encoder, as in the issue).
SIZES = [(120, 90), (200, 60), (90, 90), (150, 70)]


@pytest.fixture(scope="module", params=TINY_ARCHITECTURES)
def architecture(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def model_path(architecture: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The same folder as the session's tiny Gemma 3 (tests/conftest.py): built once.
    return tiny_vlm(
        tmp_path_factory.getbasetemp() / f"tiny-{architecture}",
        architecture=architecture,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def runner(model_path: Path) -> Iterator[TransformersRunner]:
    with TransformersRunner(model_path, batch_size=4, num_image_workers=2) as started:
        yield started


def _jpeg(seed: int, size: tuple[int, int]) -> bytes:
    image = Image.new("RGB", size, ((seed * 70) % 256, 90, 255 - (seed * 50) % 256))
    ImageDraw.Draw(image).line((0, seed * 9, size[0], size[1] - seed * 4), fill=(0, 0, 0), width=4)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def _request(
    seed: int,
    *,
    constraint: LabelConstraint | None = None,
    params: GenerationParams | None = None,
) -> InferenceRequest:
    # Questions of different lengths and images of different shapes: batches are really
    # padded, on the tokens and (Idefics3) on the crops.
    text = "Classify this ECG as one of the labels. " + "Look closely. " * (seed % 3)
    image = ImageRef.from_bytes(_jpeg(seed, SIZES[seed % len(SIZES)]))
    return InferenceRequest(
        record_id=f"r{seed}",
        messages=(
            ChatMessage.text("system", SYSTEM),
            ChatMessage(role="user", content=(ImagePart(image=image), TextPart(text=text))),
        ),
        params=params or GenerationParams(max_tokens=6),
        constraint=constraint,
    )


def _conversation(request: InferenceRequest) -> list[dict[str, Any]]:
    """The request as a transformers chat, built here (not by the runner)."""
    conversation = []
    for message in request.messages:
        content: list[dict[str, Any]] = []
        for part in message.content:
            if isinstance(part, ImagePart):
                data = part.image.data
                assert data is not None
                image = Image.open(io.BytesIO(data)).convert("RGB")
                content.append({"type": "image", "image": image})
            else:
                assert isinstance(part, TextPart)
                content.append({"type": "text", "text": part.text})
        conversation.append({"role": message.role, "content": content})
    return conversation


def _by_id(responses: Iterable[InferenceResponse]) -> dict[str, InferenceResponse]:
    return {response.record_id: response for response in responses}


def _argmax(scores: dict[str, float]) -> str:
    return max(scores, key=scores.__getitem__)


class TestContract(RunnerContract):
    @pytest.fixture
    def runner(self, model_path: Path) -> TransformersRunner:
        return TransformersRunner(model_path, batch_size=2)


# -- prompt tokens: exactly the processor's ---------------------------------------------------


def test_prompt_tokens_equal_the_processors(runner: TransformersRunner) -> None:
    processor = runner.loaded.processor
    tokenizer = runner.loaded.tokenizer
    for seed in range(2):
        request = _request(seed)
        expected = processor.apply_chat_template(
            _conversation(request),
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        )
        prepared = runner._prepare(request)
        assert torch.equal(prepared.inputs["input_ids"], expected["input_ids"])
        # Decoded in full, the pixels are the processor's own; decoded at reduced JPEG scale
        # (the default, where the family allows it) only the shape is.
        full = inputs.prepare(request, runner.loaded, reduced_jpeg_decode=False)
        assert torch.equal(full.inputs["pixel_values"], expected["pixel_values"])
        assert prepared.inputs["pixel_values"].shape == expected["pixel_values"].shape
        difference = (prepared.inputs["pixel_values"] - expected["pixel_values"]).abs()
        assert float(difference.mean()) < 0.05  # measured 0.01 (LLaVA, 1/2 scale)
        assert prepared.prompt_tokens == expected["input_ids"].shape[1]
        # Exactly one BOS, whether the template writes it (Gemma 3, Idefics3) or the
        # tokenizer adds it (LLaVA).
        ids = expected["input_ids"][0].tolist()
        assert ids[0] == tokenizer.bos_token_id
        assert ids.count(tokenizer.bos_token_id) == 1
        response = next(iter(runner.run([request])))
        assert response.usage is not None
        assert response.usage.prompt_tokens == expected["input_ids"].shape[1]


def test_image_crops_are_what_the_vision_encoder_sees(runner: TransformersRunner) -> None:
    processor = runner.loaded.processor
    config = runner.loaded.model.config
    image_token = getattr(config, "image_token_id", None) or config.image_token_index
    responses = _by_id(runner.run([_request(0), _request(1)]))
    crops = {key: response.metadata["image_crops"] for key, response in responses.items()}
    for seed in (0, 1):
        inputs = processor.apply_chat_template(
            _conversation(_request(seed)),
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        )
        image_tokens = int((inputs["input_ids"] == image_token).sum())
        pixels = inputs["pixel_values"]
        if type(processor).__name__ == "LlavaNextProcessor":
            # Base view + tiles, (1, tiles, C, H, W); the token count depends on the unpadding.
            assert crops[f"r{seed}"] == pixels.shape[1]
        else:
            # Independent count: these tiny models show 16 image tokens per crop.
            assert image_tokens == TINY_IMAGE_TOKENS * crops[f"r{seed}"]
    expected_crops = {"Idefics3Processor": (5, 3), "LlavaNextProcessor": (5, 4)}
    assert (crops["r0"], crops["r1"]) == expected_crops.get(type(processor).__name__, (1, 1))


# -- batching --------------------------------------------------------------------------------


def test_a_batch_equals_the_processors_own_batch(runner: TransformersRunner) -> None:
    """Collated records (left padding, crops padded) equal the processor run on all at once."""
    processor = runner.loaded.processor
    requests = [_request(seed) for seed in range(3)]
    # Full JPEG decodes, so the pixels as well as the layout can equal the processor's.
    prepared = [
        inputs.prepare(request, runner.loaded, reduced_jpeg_decode=False) for request in requests
    ]
    collated = collate(prepared, runner.loaded)
    texts = [
        processor.apply_chat_template(
            _conversation(request), add_generation_prompt=True, tokenize=False
        )
        for request in requests
    ]
    images = [
        [
            part["image"]
            for message in _conversation(r)
            for part in message["content"]
            if "image" in part
        ]
        for r in requests
    ]
    add_special = not texts[0].startswith(str(runner.loaded.tokenizer.bos_token))
    processor.tokenizer.padding_side = "left"
    expected = processor(
        text=texts,
        images=images,
        padding=True,
        return_tensors="pt",
        add_special_tokens=add_special,
    )
    keys = ("input_ids", "attention_mask", "pixel_values", "pixel_attention_mask", "image_sizes")
    for key in keys:
        if key in expected:
            assert key in collated, key
            assert torch.equal(collated[key].to(expected[key].dtype), expected[key]), key
    pixels = expected["pixel_values"]
    if pixels.dim() == 5:  # Idefics3, LLaVA-NeXT: the records had different numbers of crops
        real = {int((crops != 0).flatten(1).any(1).sum()) for crops in pixels}
        assert len(real) > 1, real


def test_batched_and_single_greedy_answers_agree(model_path: Path) -> None:
    requests = [_request(seed) for seed in range(4)]
    with TransformersRunner(model_path, batch_size=4) as batched:
        together = _by_id(batched.run(requests))
    with TransformersRunner(model_path, batch_size=1) as single:
        alone = _by_id(single.run(requests))
    for key, response in together.items():
        assert response.error is None, response.error
        assert response.metadata["batch_rows"] == 4
        assert response.text == alone[key].text, key
        assert response.usage == alone[key].usage, key


def test_a_text_only_record_does_not_break_a_batch_of_images(model_path: Path) -> None:
    text_only = InferenceRequest(
        record_id="text",
        messages=(ChatMessage.text("user", "Which ECG label fits a regular rhythm?"),),
        params=GenerationParams(max_tokens=6),  # as the image records: one decoding group
    )
    requests = [_request(0), text_only, _request(1)]
    with TransformersRunner(model_path, batch_size=3) as batched:
        together = _by_id(batched.run(requests))
        alone = _by_id(batched.run([text_only]))
    assert all(response.error is None for response in together.values()), together
    assert together["text"].text == alone["text"].text
    assert together["text"].metadata["image_crops"] == 0
    assert together["r0"].metadata["batch_rows"] == 2  # the image records, together


# -- constrained choice and label scores --------------------------------------------------------


def _brute_force(
    runner: TransformersRunner, request: InferenceRequest, program: ConstraintProgram
) -> dict[str, float]:
    """Each label's probability from full forward passes, one sequence at a time, no cache."""
    loaded = runner.loaded
    prepared = runner._prepare(request)
    length = prepared.prompt_tokens
    totals: dict[str, float] = {}
    for label, variant in program.score_variants:
        assert loaded.tokenizer.decode(list(variant)).strip() == label  # a spelling of it
        inputs: dict[str, torch.Tensor] = {}
        for key, value in prepared.inputs.items():
            if value.dim() == 2 and value.shape[1] == length:
                tail = torch.tensor([variant]) if key == "input_ids" else None
                if key == "attention_mask":
                    tail = torch.ones((1, len(variant)), dtype=value.dtype)
                if tail is None:
                    tail = torch.zeros((1, len(variant)), dtype=value.dtype)
                inputs[key] = torch.cat([value, tail.to(value.dtype)], dim=1)
            else:
                inputs[key] = value
        with torch.no_grad():
            logits = loaded.model(**inputs).logits[0].double()
        logprobs = torch.log_softmax(logits, dim=-1)
        total = sum(logprobs[length - 1 + step, token].item() for step, token in enumerate(variant))
        end = torch.logsumexp(logprobs[-1, list(program.terminators)], dim=0).item()
        totals[label] = totals.get(label, 0.0) + math.exp(total + end)
    norm = sum(totals.values())
    return {label: value / norm for label, value in totals.items()}


def test_choice_label_is_the_argmax_of_scores_that_match_brute_force(
    runner: TransformersRunner,
) -> None:
    requests = [_request(seed, constraint=CHOICE) for seed in range(3)]
    responses = _by_id(runner.run(requests))
    program = ConstraintProgram.build(CHOICE, runner.loaded, runner._json_string_tokens)
    assert program is not None
    for request in requests:
        response = responses[request.record_id]
        assert response.error is None
        assert response.finish_reason == "stop"
        scores = response.label_scores
        assert scores is not None
        assert list(scores) == list(ECG_LABELS)
        assert math.isclose(sum(scores.values()), 1.0, rel_tol=1e-9)
        expected = _brute_force(runner, request, program)
        for label in ECG_LABELS:
            assert scores[label] == pytest.approx(expected[label], rel=1e-3, abs=1e-6), label
        # Accuracy and ROC describe the same classifier: the answer is the scores' argmax.
        assert response.text == _argmax(scores) == _argmax(expected)


def test_json_label_is_the_argmax_of_its_scores(runner: TransformersRunner) -> None:
    params = GenerationParams(max_tokens=24)
    requests = [_request(seed, constraint=JSON, params=params) for seed in range(3)]
    for response in runner.run(requests):
        assert response.text is not None
        assert response.finish_reason == "stop", response.text
        answer = json.loads(response.text)
        assert answer["label"] in ECG_LABELS
        assert response.label_scores is not None
        assert math.isclose(sum(response.label_scores.values()), 1.0, rel_tol=1e-9)
        assert answer["label"] == _argmax(response.label_scores)


def test_sampled_choice_answers_are_labels(runner: TransformersRunner) -> None:
    params = GenerationParams(temperature=1.5, max_tokens=8, seed=3)
    for response in runner.run([_request(s, constraint=CHOICE, params=params) for s in range(3)]):
        assert response.text in ECG_LABELS
        assert response.label_scores is not None


def test_a_truncated_json_answer_is_truncated_not_an_ignored_constraint(
    runner: TransformersRunner,
) -> None:
    # Reasoning first and 6 tokens: the answer stops inside the reasoning string.
    constraint = LabelConstraint(labels=ECG_LABELS, mode="json", reasoning=True)
    request = _request(1, constraint=constraint, params=GenerationParams(max_tokens=6))
    response = next(iter(runner.run([request])))
    assert response.finish_reason == "length"
    assert response.text is not None
    assert response.text.startswith('{"reasoning": "')
    result, ignored = interpret_response(response, get_task("ecg").parser, constraint)
    assert result.status is AnswerStatus.TRUNCATED
    assert result.label is None
    assert ignored is False


# -- score mode: classify by likelihood, without generating -------------------------------------


SCORE = LabelConstraint(labels=ECG_LABELS, mode="score")


def test_score_mode_is_the_argmax_of_exact_scores_and_never_generates(
    runner: TransformersRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_generate(*args: object, **kwargs: object) -> None:
        raise AssertionError("score mode must not call generate")

    monkeypatch.setattr(runner.loaded.model, "generate", no_generate)
    # Sampling settings and a tiny max_tokens change nothing: there is nothing to sample.
    params = GenerationParams(temperature=1.0, top_p=0.5, seed=3, max_tokens=1)
    requests = [_request(seed, constraint=SCORE, params=params) for seed in range(3)]
    responses = _by_id(runner.run(requests))
    program = ConstraintProgram.build(SCORE, runner.loaded, runner._json_string_tokens)
    assert program is not None
    for request in requests:
        response = responses[request.record_id]
        assert response.error is None
        assert response.finish_reason == "stop"
        assert response.usage is not None
        assert response.usage.completion_tokens == 0
        scores = response.label_scores
        assert scores is not None
        assert list(scores) == list(ECG_LABELS)
        expected = _brute_force(runner, request, program)
        for label in ECG_LABELS:
            assert scores[label] == pytest.approx(expected[label], rel=1e-3, abs=1e-6), label
        assert response.text == _argmax(scores) == _argmax(expected)
        parsed, ignored = interpret_response(response, get_task("ecg").parser, SCORE)
        assert not ignored
        assert parsed.label == response.text
