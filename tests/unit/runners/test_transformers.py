"""TransformersRunner on the tiny random-weight Gemma 3 (CPU): plumbing, constraints, scores.

The contract shared by every architecture (batching, prompt tokens, crops, brute-force label
scores, argmax answers) is in test_transformers_architectures.py; this file keeps what is
Gemma 3 specific or runner-wide (pan-and-scan, fp16, settings, sampling, lazy imports).

The tiny model's answers are random: nothing here checks that an answer is right, only that
it is well-formed, valid under constraints, and computed the way the runner promises.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch

from medbatch import ListDataset, Record, classify, get_task
from medbatch.errors import ConfigError
from medbatch.records import (
    ChatMessage,
    GenerationParams,
    ImagePart,
    ImageRef,
    InferenceRequest,
    InferenceResponse,
    LabelConstraint,
    TextPart,
)
from medbatch.registry import RUNNERS
from medbatch.runners.transformers import TransformersRunner, TransformersRunnerConfig
from medbatch.testing.tiny_vlm import ECG_LABELS, TINY_IMAGE_TOKENS

SYSTEM = "You are a medical AI assistant specialized in ECG analysis."
CHOICE = LabelConstraint(labels=ECG_LABELS)


@pytest.fixture(scope="module")
def runner(tiny_model_path: Path) -> Iterator[TransformersRunner]:
    with TransformersRunner(tiny_model_path, batch_size=4, num_image_workers=2) as started:
        yield started


def _jpeg(seed: int, size: tuple[int, int] = (120, 90)) -> bytes:
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
    image: ImageRef | None = None,
    question: str | None = None,
) -> InferenceRequest:
    # Questions of different lengths, so batches are really left-padded.
    text = question or "Classify this ECG as one of the labels. " + "Look closely. " * (seed % 4)
    return InferenceRequest(
        record_id=f"r{seed}",
        messages=(
            ChatMessage.text("system", SYSTEM),
            ChatMessage(
                role="user",
                content=(
                    ImagePart(image=image or ImageRef.from_bytes(_jpeg(seed))),
                    TextPart(text=text),
                ),
            ),
        ),
        params=params or GenerationParams(max_tokens=8),
        constraint=constraint,
    )


def _by_id(responses: Iterator[InferenceResponse]) -> dict[str, InferenceResponse]:
    return {response.record_id: response for response in responses}


# -- free text -------------------------------------------------------------------------------


def test_free_text_answers_honour_max_tokens(runner: TransformersRunner) -> None:
    requests = [_request(seed, params=GenerationParams(max_tokens=5)) for seed in range(6)]
    responses = _by_id(runner.run(requests))
    assert set(responses) == {request.record_id for request in requests}
    for response in responses.values():
        assert response.error is None
        assert isinstance(response.text, str)
        assert response.usage is not None
        assert response.usage.completion_tokens is not None
        assert response.usage.completion_tokens <= 5
        assert response.finish_reason == (
            "length" if response.usage.completion_tokens == 5 else "stop"
        )
        # The prompt count includes the image's soft tokens and its markers.
        assert response.usage.prompt_tokens is not None
        assert response.usage.prompt_tokens > TINY_IMAGE_TOKENS + 20
        assert response.label_scores is None


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(runner: TransformersRunner) -> None:
    def sample(seed: int) -> list[str | None]:
        params = GenerationParams(temperature=1.0, max_tokens=8, seed=seed)
        responses = _by_id(runner.run([_request(s, params=params) for s in range(3)]))
        return [responses[f"r{s}"].text for s in range(3)]

    state = torch.random.get_rng_state()
    first, again, other = sample(7), sample(7), sample(8)
    assert first == again
    assert first != other
    assert torch.equal(torch.random.get_rng_state(), state)


def test_a_broken_image_is_only_its_record_error(runner: TransformersRunner) -> None:
    broken = _request(2, image=ImageRef.from_bytes(b"patient list, not an image"))
    missing = _request(3, image=ImageRef.from_path("/nonexistent/ecg.jpg"))
    requests = [_request(0), _request(1), broken, missing, _request(4)]
    responses = _by_id(runner.run(requests))
    for record_id in ("r2", "r3"):
        error = responses[record_id].error
        assert error is not None
        assert error.kind == "image_error"
        assert record_id in error.message
    for record_id in ("r0", "r1", "r4"):
        assert responses[record_id].error is None
        assert responses[record_id].text is not None


# -- constrained -----------------------------------------------------------------------------


def test_constrained_answers_are_labels_with_scores_summing_to_one(
    runner: TransformersRunner,
) -> None:
    requests = [_request(seed, constraint=CHOICE) for seed in range(6)]
    for response in runner.run(requests):
        assert response.error is None
        assert response.text in ECG_LABELS
        assert response.finish_reason == "stop"
        assert response.label_scores is not None
        assert list(response.label_scores) == list(ECG_LABELS)
        assert math.isclose(sum(response.label_scores.values()), 1.0, rel_tol=1e-9)
        assert all(0.0 < score < 1.0 for score in response.label_scores.values())


def test_sampled_constrained_answers_are_labels_too(runner: TransformersRunner) -> None:
    params = GenerationParams(temperature=1.5, max_tokens=8, seed=3)
    for response in runner.run([_request(s, constraint=CHOICE, params=params) for s in range(8)]):
        assert response.text in ECG_LABELS


def test_json_mode_with_reasoning_starts_a_json_string(runner: TransformersRunner) -> None:
    # A random model rarely closes its reasoning within a few tokens; what it writes must
    # still be the inside of a JSON string.
    constraint = LabelConstraint(labels=ECG_LABELS, mode="json", reasoning=True)
    response = next(iter(runner.run([_request(1, constraint=constraint)])))
    assert response.text is not None
    assert response.text.startswith('{"reasoning": "')
    reasoning = response.text[len('{"reasoning": "') :].split('", "label": "')[0]
    assert '"' not in reasoning
    assert "\n" not in reasoning


# -- the done-when: classify() end to end ---------------------------------------------


@pytest.mark.parametrize("constrained", [False, True])
def test_classify_runs_on_synthetic_images(tiny_model_path: Path, constrained: bool) -> None:
    task = get_task("ecg")
    assert set(task.labels.names) == set(ECG_LABELS)
    records = [
        Record(id=f"ecg-{i}", image=ImageRef.from_bytes(_jpeg(i, (200, 140))), label=label)
        for i, label in enumerate(ECG_LABELS)
    ]
    with TransformersRunner(tiny_model_path, batch_size=4) as runner:
        result = classify(
            ListDataset(records, labels=task.labels),
            task,
            runner,
            params=GenerationParams(max_tokens=6),
            constrained=constrained,
        )
    frame = result.predictions
    assert list(frame["record_id"]) == [record.id for record in records]
    assert frame["error_kind"].isna().all()
    if constrained:
        assert set(frame["label"]) <= set(ECG_LABELS)
        assert frame["label"].notna().all()
        for scores in frame["label_scores"]:
            values = json.loads(scores) if isinstance(scores, str) else scores
            assert math.isclose(sum(values.values()), 1.0, rel_tol=1e-9)


# -- pan-and-scan, settings, loading ------------------------------------------------------------


def test_pan_and_scan_shows_crops_of_wide_images(tiny_model_path: Path) -> None:
    wide = ImageRef.from_bytes(_jpeg(5, (600, 280)))
    request = _request(5, image=wide, constraint=CHOICE)
    with TransformersRunner(tiny_model_path) as plain:
        without = next(iter(plain.run([request])))
    with TransformersRunner(tiny_model_path, pan_and_scan=True) as scanning:
        with_crops = next(iter(scanning.run([request])))
    assert without.usage is not None
    assert with_crops.usage is not None
    assert without.usage.prompt_tokens is not None
    assert with_crops.usage.prompt_tokens is not None
    assert with_crops.usage.prompt_tokens >= without.usage.prompt_tokens + 2 * TINY_IMAGE_TOKENS
    # Provenance counts the crops Gemma 3 stacks as (crops, C, H, W), the global view included.
    assert without.metadata["image_crops"] == 1
    crops = with_crops.metadata["image_crops"]
    assert with_crops.usage.prompt_tokens - without.usage.prompt_tokens >= (crops - 1) * (
        TINY_IMAGE_TOKENS
    )
    assert crops > 2
    assert with_crops.text in ECG_LABELS


def test_fp16_is_refused_for_gemma3_unless_forced(tiny_model_path: Path) -> None:
    with pytest.raises(ConfigError, match="allow_fp16=True"):
        TransformersRunner(tiny_model_path, dtype="float16", device="cpu").start()
    forced = TransformersRunner(tiny_model_path, dtype="float16", device="cpu", allow_fp16=True)
    with forced:
        assert forced.loaded.dtype == torch.float16


def test_auto_dtype_is_float32_on_cpu(runner: TransformersRunner) -> None:
    assert runner.loaded.dtype == torch.float32
    assert runner.describe()["dtype"] == "torch.float32"


def test_cuda_without_a_gpu_is_a_config_error(tiny_model_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(ConfigError, match="device='cpu'"):
        TransformersRunner(tiny_model_path, device="cuda").start()


def test_config_builds_the_runner_and_is_registered(tiny_model_path: Path) -> None:
    config = TransformersRunnerConfig(model=str(tiny_model_path), batch_size=3, pan_and_scan=True)
    runner = TransformersRunner.from_config(config)
    assert runner.batch_size == 3
    assert runner.model_id == str(tiny_model_path)
    assert RUNNERS.get("transformers") is TransformersRunner
    with pytest.raises(ValueError, match="extra"):
        TransformersRunnerConfig(model="x", temperature=0.2)  # type: ignore[call-arg]
    for name, field in TransformersRunnerConfig.model_fields.items():
        assert field.description, name


def test_importing_the_runner_module_does_not_import_torch() -> None:
    code = (
        "import sys, medbatch.runners.transformers, medbatch.testing.tiny_vlm; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"
