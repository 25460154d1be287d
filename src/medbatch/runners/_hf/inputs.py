"""Requests to tensors: one record through the processor (`prepare`), several into a batch.

A batch is what the processor itself would give for those records together (`collate`):
left-padded token sequences, crops and tiles zero-padded to the batch's most.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from medbatch.images import _open, _read, load_image
from medbatch.records import ChatMessage, ImagePart, InferenceRequest
from medbatch.runners._hf.loading import Loaded, Prepared

if TYPE_CHECKING:
    import torch


def prepare(
    request: InferenceRequest,
    loaded: Loaded,
    *,
    max_image_side: int | None = None,
    pan_and_scan: bool = False,
    reduced_jpeg_decode: bool = True,
) -> Prepared:
    """Decode the images and run the processor for one record (in a worker thread).

    With `reduced_jpeg_decode`, a JPEG much larger than the processor's target is decoded
    at 1/2..1/8 scale (`draft_size` says for which processors; the output's shape is the
    same, its pixels differ from a full decode as one resampling filter from another).

    The prompt is tokenised as the model's processor does (`apply_chat_template` with
    `tokenize=True`): the BOS is added only when the chat template does not write it.
    """
    draft = None
    if reduced_jpeg_decode and max_image_side is None:
        draft = draft_size(loaded.processor, pan_and_scan)
    conversation, images = conversation_of(request.messages, max_image_side, draft=draft)
    prompt = loaded.processor.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=False
    )
    kwargs: dict[str, Any] = {"return_tensors": "pt"}
    if template_emits_bos(prompt, loaded.tokenizer):
        # The processor's own rule (ProcessorMixin.apply_chat_template with tokenize=True):
        # no special tokens when the rendered prompt already starts with the BOS (Gemma 3,
        # Idefics3); otherwise the tokenizer adds its own (LLaVA's template has no BOS).
        kwargs["add_special_tokens"] = False
    if images and pan_and_scan:
        kwargs["do_pan_and_scan"] = True
    inputs = loaded.processor(text=[prompt], images=[images] if images else None, **kwargs)
    tensors = {key: value for key, value in inputs.items() if hasattr(value, "shape")}
    provenance: dict[str, Any] = {
        # What the model was actually shown, so any number in a report can be traced:
        # the chat template's output (system text folding included) and the crops.
        "rendered_prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest(),
        "image_sizes": [list(image.size) for image in images],
        "image_crops": count_crops(tensors, len(images)),
        "pan_and_scan": bool(images and pan_and_scan),
    }
    return Prepared(
        inputs=tensors,
        prompt_tokens=int(tensors["input_ids"].shape[1]),
        provenance=provenance,
    )


def conversation_of(
    messages: Sequence[ChatMessage],
    max_image_side: int | None,
    *,
    draft: tuple[int, int] | None = None,
) -> tuple[list[dict[str, Any]], list[Any]]:
    """The chat-template conversation for `messages`, and its decoded images in order.

    `draft` (width, height), when given, decodes JPEGs at the smallest of 1/2, 1/4 or 1/8
    scale that is still at least that size (`Image.draft`); other formats decode in full.
    """
    conversation: list[dict[str, Any]] = []
    images: list[Any] = []
    for message in messages:
        content: list[dict[str, Any]] = []
        for part in message.content:
            if isinstance(part, ImagePart):
                if draft is not None and max_image_side is None:
                    image, _ = _open(_read(part.image), part.image.name, draft=draft)
                else:
                    image = load_image(part.image, max_side=max_image_side)
                images.append(image)
                content.append({"type": "image", "image": image})
            else:
                content.append({"type": "text", "text": part.text})
        conversation.append({"role": message.role, "content": content})
    return conversation, images


def draft_size(processor: Any, pan_and_scan: bool = False) -> tuple[int, int] | None:
    """The (width, height) a JPEG may be decoded down to, keeping the processor's output shape.

    JPEG decoding at 1/2..1/8 scale (`Image.draft`) keeps both sides at least this size, so
    only processors whose output shape depends on nothing but "the image is at least the
    target" qualify: a fixed resize to `height` x `width` (Gemma 3, SigLIP, PaliGemma) and a
    shortest-edge resize followed by a centre crop (CLIP, LLaVA 1.5). Processors that choose
    tiles or crops from the image's own size (LLaVA-NeXT's grid pinpoints, Idefics3 /
    SmolVLM splitting, Gemma 3 pan-and-scan) or resize by pixel budget (Qwen-VL) get None:
    their images decode in full, as before.

    Args:
        processor: The model's processor (its `image_processor` is read) or image processor.
        pan_and_scan: Whether Gemma 3 pan-and-scan crops are asked for.

    Returns:
        The draft target, or None when decoding at reduced size could change the output.
    """
    image_processor = getattr(processor, "image_processor", processor)
    if image_processor is None or pan_and_scan:
        return None
    if any(
        getattr(image_processor, flag, None)
        for flag in ("image_grid_pinpoints", "do_image_splitting", "do_pan_and_scan")
    ):
        return None
    if getattr(image_processor, "do_resize", True) is False:
        return None
    size = getattr(image_processor, "size", None)
    height, width = _size_field(size, "height"), _size_field(size, "width")
    others = [
        _size_field(size, key)
        for key in ("longest_edge", "shortest_edge", "max_height", "max_width", "min_pixels")
    ]
    if height and width and not any(others):
        return int(width), int(height)
    shortest = _size_field(size, "shortest_edge")
    crop = getattr(image_processor, "crop_size", None)
    if (
        shortest
        and getattr(image_processor, "do_center_crop", False)
        and _size_field(crop, "height")
        and _size_field(crop, "width")
        and not _size_field(size, "longest_edge")
    ):
        return int(shortest), int(shortest)
    return None


def _size_field(size: Any, key: str) -> Any:
    """`size[key]` for a dict or a transformers `SizeDict`; None when absent."""
    if size is None:
        return None
    if isinstance(size, dict):
        return size.get(key)
    return getattr(size, key, None)


def template_emits_bos(prompt: str, tokenizer: Any) -> bool:
    """Whether the rendered prompt already starts with the tokenizer's BOS."""
    bos = tokenizer.bos_token
    return bos is not None and prompt.startswith(str(bos))


def count_crops(tensors: dict[str, torch.Tensor], n_images: int) -> int:
    """How many images (crops, tiles, global views) the vision encoder is shown.

    Processors lay crops out differently: Gemma 3 (pan-and-scan) stacks them as
    `(crops, C, H, W)`; Idefics2/3, SmolVLM and LLaVA-NeXT as `(1, crops, C, H, W)`, padding
    to the batch's most crops with all-zero images (which the models drop, and so does this
    count). Processors that flatten patches (Qwen-VL: `(patches, dim)`) have no crops: each
    image counts once.
    """
    pixels = tensors.get("pixel_values")
    if pixels is None:
        return 0
    if pixels.dim() < 4:
        return n_images
    images = pixels.reshape(-1, *pixels.shape[-3:])
    return int((images != 0).flatten(1).any(dim=1).sum())


def collate(prepared: Sequence[Prepared], loaded: Loaded) -> dict[str, torch.Tensor]:
    """Stack records into one batch: left-pad the token sequences, pad and stack the images.

    Token-aligned tensors (`(1, prompt_tokens, ...)`: input ids, attention mask, token types)
    are left-padded to the longest prompt. Every other tensor is concatenated along its first
    dimension after zero-padding its other dimensions (at the end) to the batch's largest.
    That is what the processors themselves do for several records at once: Idefics2/3 and
    SmolVLM pad a record's crops to the batch's most crops with all-zero images (and a zero
    `pixel_attention_mask`), which their models drop; LLaVA-NeXT pads its patches likewise
    (`image_sizes` says how many are real). Gemma 3's `(crops, C, H, W)` and Qwen-VL's
    `(patches, dim)` only concatenate. So images split into different numbers of crops never
    fail a batch. Rows must share a layout (same keys and ranks, see `layout`).
    """
    length = max(item.prompt_tokens for item in prepared)
    keys = dict.fromkeys(key for item in prepared for key in item.inputs)
    batch: dict[str, torch.Tensor] = {}
    for key in keys:
        values = [item.inputs[key] for item in prepared]
        sequence_like = all(
            value.dim() >= 2 and value.shape[:2] == (1, item.prompt_tokens)
            for value, item in zip(values, prepared, strict=True)
        )
        fill = loaded.pad_id if key == "input_ids" and sequence_like else 0
        tensor = pad_and_concatenate(values, fill, left_pad_to=length if sequence_like else None)
        tensor = tensor.to(loaded.device)
        if not sequence_like and tensor.is_floating_point():
            tensor = tensor.to(loaded.dtype)
        batch[key] = tensor
    return batch


def pad_and_concatenate(
    values: Sequence[torch.Tensor], fill: int, *, left_pad_to: int | None
) -> torch.Tensor:
    """Concatenate along dim 0, padding dims 1.. to the largest (dim 1 on the left if asked)."""
    import torch

    shape = [max(value.shape[dim] for value in values) for dim in range(values[0].dim())]
    if left_pad_to is not None:
        shape[1] = left_pad_to
    padded = []
    for value in values:
        if list(value.shape[1:]) == shape[1:]:
            padded.append(value)
            continue
        out = torch.full((value.shape[0], *shape[1:]), fill, dtype=value.dtype)
        region = [slice(None)] + [slice(0, size) for size in value.shape[1:]]
        if left_pad_to is not None:
            region[1] = slice(shape[1] - value.shape[1], shape[1])
        out[tuple(region)] = value
        padded.append(out)
    return torch.cat(padded, dim=0)


def layout(prepared: Prepared) -> tuple[tuple[str, int], ...]:
    """Keys and ranks of a record's tensors: rows that share it can be collated together."""
    return tuple(sorted((key, value.dim()) for key, value in prepared.inputs.items()))


def extend_inputs(inputs: dict[str, torch.Tensor], context: list[int]) -> dict[str, torch.Tensor]:
    """Append generated text tokens to a prepared record's sequence tensors."""
    if not context:
        return inputs
    import torch

    length = inputs["input_ids"].shape[1]
    extended: dict[str, torch.Tensor] = {}
    for key, value in inputs.items():
        if value.dim() >= 2 and value.shape[:2] == (1, length):
            if key == "input_ids":
                tail = torch.tensor([context], dtype=value.dtype)
            elif key == "attention_mask":
                tail = torch.ones((1, len(context)), dtype=value.dtype)
            else:  # token types: generated tokens are text (0)
                tail = torch.zeros((1, len(context)), dtype=value.dtype)
            extended[key] = torch.cat([value, tail], dim=1)
        else:
            extended[key] = value
    return extended
