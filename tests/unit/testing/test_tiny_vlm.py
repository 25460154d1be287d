"""The tiny random-weight Gemma 3 test double: loads like MedGemma, sees images, generates.

Its answers are random; these tests check plumbing, never answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch
import transformers as _transformers

from medbatch.testing.tiny_vlm import (
    ECG_LABELS,
    TINY_IMAGE_SIZE,
    TINY_IMAGE_TOKENS,
    tiny_vlm,
)


@pytest.fixture(scope="module")
def loaded(tiny_model_path: Path) -> tuple[Any, Any]:
    transformers: Any = _transformers  # its annotations are partial
    processor = transformers.AutoProcessor.from_pretrained(tiny_model_path)
    model = transformers.AutoModelForImageTextToText.from_pretrained(tiny_model_path)
    model.eval()
    return processor, model


def _picture(seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    image = Image.new("RGB", size, ((seed * 70) % 256, 90, 255 - (seed * 50) % 256))
    ImageDraw.Draw(image).line((0, seed * 9, size[0], size[1] - seed * 4), fill=(0, 0, 0), width=4)
    return image


def _conversation(image: Image.Image, text: str = "Classify this ECG.") -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": [{"type": "text", "text": "You read ECGs."}]},
        {
            "role": "user",
            "content": [{"type": "image", "image": image}, {"type": "text", "text": text}],
        },
    ]


def _inputs(processor: Any, image: Image.Image, **kwargs: Any) -> Any:
    # Template to text, then the processor on text and image: how TransformersRunner does it.
    text = processor.apply_chat_template(
        _conversation(image), add_generation_prompt=True, tokenize=False
    )
    return processor(
        text=[text], images=[[image]], return_tensors="pt", add_special_tokens=False, **kwargs
    )


def test_the_processor_matches_tokenizing_chat_template(loaded: tuple[Any, Any]) -> None:
    processor = loaded[0]
    direct = processor.apply_chat_template(
        _conversation(_picture(1)),
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    split = _inputs(processor, _picture(1))
    assert torch.equal(direct["input_ids"], split["input_ids"])
    assert torch.equal(direct["pixel_values"], split["pixel_values"])


def test_loads_with_the_auto_classes_a_real_medgemma_uses(loaded: tuple[Any, Any]) -> None:
    processor, model = loaded
    assert type(processor).__name__ == "Gemma3Processor"
    assert type(processor.image_processor).__name__.startswith("Gemma3ImageProcessor")
    assert type(model).__name__ == "Gemma3ForConditionalGeneration"
    assert model.config.mm_tokens_per_image == TINY_IMAGE_TOKENS
    assert model.config.vision_config.image_size == TINY_IMAGE_SIZE


def test_is_a_few_megabytes(tiny_model_path: Path) -> None:
    total = sum(path.stat().st_size for path in tiny_model_path.iterdir())
    assert total < 5_000_000


def test_tokenizer_knows_labels_whitespace_and_specials(loaded: tuple[Any, Any]) -> None:
    tokenizer = loaded[0].tokenizer
    unk, vocab = tokenizer.unk_token_id, tokenizer.get_vocab()
    for label in ECG_LABELS:
        ids = tokenizer.encode(label, add_special_tokens=False)
        pieces = tokenizer.convert_ids_to_tokens(ids)
        assert unk not in ids
        assert not any(piece.startswith("<0x") for piece in pieces), pieces  # no byte fallback
        assert tokenizer.decode(ids) == label
    for whitespace in ("\n", "\n\n"):
        assert whitespace in vocab
        assert len(tokenizer.encode(whitespace, add_special_tokens=False)) == 1
    for special in ("<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<image_soft_token>"):
        assert tokenizer.encode(special, add_special_tokens=False) == [vocab[special]]
    text = "Is the PR interval 120-200ms? ü ✓"  # unseen characters fall back to bytes
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_chat_template_folds_the_system_turn_into_the_first_user_turn(
    loaded: tuple[Any, Any],
) -> None:
    processor = loaded[0]
    text = processor.apply_chat_template(
        _conversation(_picture(1)), add_generation_prompt=True, tokenize=False
    )
    assert text == (
        "<bos><start_of_turn>user\nYou read ECGs.\n\n<start_of_image>Classify this ECG."
        "<end_of_turn>\n<start_of_turn>model\n"
    )


def test_every_weight_is_initialised(loaded: tuple[Any, Any]) -> None:
    model = loaded[1]
    for name, parameter in model.named_parameters():
        assert parameter.detach().abs().sum() > 0, f"{name} is all zeros"


def test_the_image_is_seen(loaded: tuple[Any, Any]) -> None:
    processor, model = loaded
    with torch.no_grad():
        first = model(**_inputs(processor, _picture(1))).logits[0, -1]
        again = model(**_inputs(processor, _picture(1))).logits[0, -1]
        other = model(**_inputs(processor, _picture(4))).logits[0, -1]
    assert torch.equal(first, again)
    assert (first - other).abs().max() > 1e-3


def test_generation_runs_and_stops_at_max_new_tokens(loaded: tuple[Any, Any]) -> None:
    processor, model = loaded
    inputs = _inputs(processor, _picture(2))
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    new = output[0, inputs["input_ids"].shape[1] :]
    assert 1 <= len(new) <= 6
    assert isinstance(processor.decode(new, skip_special_tokens=True), str)


def test_pan_and_scan_adds_crops_of_wide_images(loaded: tuple[Any, Any]) -> None:
    processor, model = loaded
    # Wide enough for Gemma 3's default crops (at least 256 px each), like a 12-lead page.
    wide = _picture(3, size=(600, 280))
    plain = _inputs(processor, wide)
    scanned = _inputs(processor, wide, do_pan_and_scan=True)
    assert plain["pixel_values"].shape[0] == 1
    assert scanned["pixel_values"].shape[0] > 1
    image_token = processor.tokenizer.image_token_id
    count = (scanned["input_ids"] == image_token).sum().item()
    assert count == scanned["pixel_values"].shape[0] * TINY_IMAGE_TOKENS
    with torch.no_grad():
        logits = model(**scanned).logits
    assert torch.isfinite(logits).all()


def test_an_identical_build_is_reused(tiny_model_path: Path) -> None:
    weights = tiny_model_path / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert tiny_vlm(tiny_model_path) == tiny_model_path
    assert weights.stat().st_mtime_ns == before


def test_another_seed_rebuilds_with_other_weights(tmp_path: Path) -> None:
    first = tiny_vlm(tmp_path / "m", seed=0)
    marker = json.loads((first / "medbatch_tiny_vlm.json").read_text())
    weights = (first / "model.safetensors").read_bytes()
    second = tiny_vlm(tmp_path / "m", seed=1)
    assert json.loads((second / "medbatch_tiny_vlm.json").read_text()) != marker
    assert (second / "model.safetensors").read_bytes() != weights
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no staging folder left behind


def test_refuses_to_overwrite_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        tiny_vlm(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


# -- the other architectures -------------------------------------------------------------------

OTHER_ARCHITECTURES = {
    # architecture: (processor, image processor prefix, model, does the template write BOS)
    "llava": ("LlavaProcessor", "CLIPImageProcessor", "LlavaForConditionalGeneration", False),
    "llava_next": (
        "LlavaNextProcessor",
        "LlavaNextImageProcessor",
        "LlavaNextForConditionalGeneration",
        False,
    ),
    "idefics3": (
        "Idefics3Processor",
        "Idefics3ImageProcessor",
        "Idefics3ForConditionalGeneration",
        True,
    ),
}


@pytest.fixture(scope="module", params=sorted(OTHER_ARCHITECTURES))
def other(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, Any, Any]:
    architecture = str(request.param)
    path = tiny_vlm(
        tmp_path_factory.getbasetemp() / f"tiny-{architecture}",
        architecture=architecture,  # type: ignore[arg-type]
    )
    transformers: Any = _transformers
    processor = transformers.AutoProcessor.from_pretrained(path)
    model = transformers.AutoModelForImageTextToText.from_pretrained(path)
    model.eval()
    return architecture, path, processor, model


def _tokenized(processor: Any, image: Image.Image) -> Any:
    return processor.apply_chat_template(
        _conversation(image),
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )


def test_other_architectures_load_with_their_real_classes(
    other: tuple[str, Path, Any, Any],
) -> None:
    architecture, path, processor, model = other
    processor_class, image_processor_prefix, model_class, _ = OTHER_ARCHITECTURES[architecture]
    assert type(processor).__name__ == processor_class
    assert type(processor.image_processor).__name__.startswith(image_processor_prefix)
    assert type(model).__name__ == model_class
    assert sum(p.stat().st_size for p in path.iterdir()) < 5_000_000
    for name, parameter in model.named_parameters():
        assert parameter.detach().abs().sum() > 0, f"{name} is all zeros"


def test_other_architectures_bos_comes_from_template_or_tokenizer(
    other: tuple[str, Path, Any, Any],
) -> None:
    architecture, _, processor, _ = other
    template_writes_bos = OTHER_ARCHITECTURES[architecture][3]
    bos = processor.tokenizer.bos_token
    text = processor.apply_chat_template(
        _conversation(_picture(1)), add_generation_prompt=True, tokenize=False
    )
    assert text.startswith(bos) is template_writes_bos
    ids = _tokenized(processor, _picture(1))["input_ids"][0].tolist()
    assert ids[0] == processor.tokenizer.bos_token_id
    assert ids.count(processor.tokenizer.bos_token_id) == 1


def test_other_architectures_know_the_labels_and_see_the_image(
    other: tuple[str, Path, Any, Any],
) -> None:
    _, _, processor, model = other
    tokenizer = processor.tokenizer
    for label in ECG_LABELS:
        ids = tokenizer.encode(label, add_special_tokens=False)
        assert tokenizer.unk_token_id not in ids
        assert len(ids) <= 4, tokenizer.convert_ids_to_tokens(ids)  # words, not bytes
        assert tokenizer.decode(ids).strip() == label
    with torch.no_grad():
        first = model(**_tokenized(processor, _picture(1))).logits[0, -1]
        other_image = model(**_tokenized(processor, _picture(4))).logits[0, -1]
    assert torch.isfinite(first).all()
    assert (first - other_image).abs().max() > 1e-4


def test_idefics3_splits_images_into_crops_by_shape(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    path = tiny_vlm(tmp_path_factory.getbasetemp() / "tiny-idefics3", architecture="idefics3")
    transformers: Any = _transformers
    processor = transformers.AutoProcessor.from_pretrained(path)
    # Global view + 2 x 2 crops for a 4:3 image, + 2 x 1 for a wide one.
    landscape = _tokenized(processor, _picture(1, size=(120, 90)))["pixel_values"]
    wide = _tokenized(processor, _picture(1, size=(200, 60)))["pixel_values"]
    assert landscape.shape[:2] == (1, 5)
    assert wide.shape[:2] == (1, 3)


def test_an_unknown_architecture_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="llava"):
        tiny_vlm(tmp_path / "m", architecture="qwen2_vl")  # type: ignore[arg-type]
    assert not (tmp_path / "m").exists()
