"""JPEGs decoded at reduced size (`Image.draft`) where the processor's output keeps its shape."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image, ImageDraw

# The tiny models need the `local` extra (torch, transformers, tokenizers): the interpreter
# legs of CI test without it.
pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from medbatch.records import ChatMessage, ImagePart, ImageRef, InferenceRequest, TextPart
from medbatch.runners._hf import inputs
from medbatch.runners.transformers import TransformersRunner
from medbatch.testing.tiny_vlm import TINY_ARCHITECTURES, tiny_vlm

# Each family's target: fixed resizes (Gemma 3) and resize + centre crop (LLaVA 1.5) qualify;
# processors that choose tiles from the image's own size do not.
TARGETS = {"gemma3": (64, 64), "llava": (32, 32), "llava_next": None, "idefics3": None}
PAGE = (1100, 850)  # an ECG page's proportions, larger than every tiny target 8 times over


def _jpeg(size: tuple[int, int]) -> bytes:
    image = Image.new("RGB", size, (250, 235, 235))
    draw = ImageDraw.Draw(image)
    for x in range(0, size[0], 37):
        draw.line([(x, 0), (x, size[1])], fill=(200, 40, 40), width=3)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _request(data: bytes) -> InferenceRequest:
    return InferenceRequest(
        record_id="page",
        messages=[
            ChatMessage(
                role="user",
                content=[
                    ImagePart(image=ImageRef.from_bytes(data)),
                    TextPart(text="Classify this ECG."),
                ],
            )
        ],
    )


@pytest.fixture(scope="module", params=TINY_ARCHITECTURES)
def loaded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tiny_vlm(
        tmp_path_factory.getbasetemp() / f"draft-{request.param}",
        architecture=request.param,
    )
    runner = TransformersRunner(path, device="cpu")
    yield request.param, runner.loaded
    runner.close()


def _spy_sizes(monkeypatch: pytest.MonkeyPatch, loaded: Any) -> list[tuple[int, int]]:
    """Record the size of every image handed to the processor."""
    seen: list[tuple[int, int]] = []
    processor = loaded.processor

    class Spy:
        def __getattr__(self, name: str) -> Any:
            return getattr(processor, name)

        def __call__(self, *args: Any, images: Any = None, **kwargs: Any) -> Any:
            for row in images or []:
                seen.extend(image.size for image in row)
            return processor(*args, images=images, **kwargs)

    monkeypatch.setattr(loaded, "processor", Spy())
    return seen


def test_draft_targets_by_family(loaded: Any) -> None:
    architecture, model = loaded
    assert inputs.draft_size(model.processor) == TARGETS[architecture]
    # Pan-and-scan crops depend on the image's own size: never drafted.
    assert inputs.draft_size(model.processor, pan_and_scan=True) is None


def test_large_jpeg_reaches_the_processor_reduced_with_the_same_output_shape(
    loaded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    architecture, model = loaded
    request = _request(_jpeg(PAGE))
    seen = _spy_sizes(monkeypatch, model)
    drafted = inputs.prepare(request, model)
    with monkeypatch.context() as patch:
        patch.setattr(inputs, "draft_size", lambda *args, **kwargs: None)
        full = inputs.prepare(request, model)
    reduced, original = seen
    assert original == PAGE
    target = TARGETS[architecture]
    if target is None:
        assert reduced == PAGE
    else:
        # 1/8 scale: still at least the target on both sides, 64x fewer pixels to decode.
        assert reduced == ((PAGE[0] + 7) // 8, (PAGE[1] + 7) // 8)
        assert reduced[0] >= target[0]
        assert reduced[1] >= target[1]
    assert drafted.provenance["image_sizes"] == [list(reduced)]
    assert drafted.inputs.keys() == full.inputs.keys()
    for key, tensor in full.inputs.items():
        assert drafted.inputs[key].shape == tensor.shape, (architecture, key)
    assert drafted.inputs["input_ids"].tolist() == full.inputs["input_ids"].tolist()
    assert drafted.provenance["image_crops"] == full.provenance["image_crops"]


def test_max_image_side_still_wins(loaded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _, model = loaded
    seen = _spy_sizes(monkeypatch, model)
    inputs.prepare(_request(_jpeg(PAGE)), model, max_image_side=500)
    assert max(seen[0]) == 500


def test_png_is_decoded_in_full(loaded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _, model = loaded
    buffer = io.BytesIO()
    Image.new("RGB", PAGE, (10, 20, 30)).save(buffer, format="PNG")
    seen = _spy_sizes(monkeypatch, model)
    inputs.prepare(_request(buffer.getvalue()), model)
    assert seen == [PAGE]
