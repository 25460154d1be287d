"""Tiny random-weight LLaVA 1.5 and Idefics3 folders for `tiny_vlm(..., architecture=...)`.

Each builder uses the architecture's real transformers classes (tokenizer, image processor,
processor, configuration, model), so a runner that loads the folder with `AutoProcessor` /
`AutoModelForImageTextToText` runs the same code paths as on the real checkpoint:

- **LLaVA 1.5** (`llava-hf/llava-1.5-7b-hf`): `LlamaTokenizer` (SentencePiece-style BPE,
  `<s>` added by the tokenizer: the chat template does not emit it), `CLIPImageProcessor`
  (resize, centre crop), `LlavaProcessor`, `LlavaForConditionalGeneration` (CLIP vision
  tower, Llama text model).
- **LLaVA-NeXT** (`llava-hf/llava-v1.6-mistral-7b-hf`): the same parts with
  `LlavaNextImageProcessor` ("anyres": a base view plus a grid of tiles chosen by aspect
  ratio, so records of one batch have different numbers of tiles and prompt lengths),
  `LlavaNextProcessor`, `LlavaNextForConditionalGeneration` and Mistral's `[INST]` template.
- **Idefics3** (`HuggingFaceM4/Idefics3-8B-Llama3`; SmolVLM is the same family): a Llama 3
  style byte-level BPE (`PreTrainedTokenizerFast`, `<|begin_of_text|>` emitted by the chat
  template), `Idefics3ImageProcessor` with image splitting (an image becomes a grid of crops
  plus a global view, so records of one batch have different numbers of crops),
  `Idefics3Processor`, `Idefics3ForConditionalGeneration` (SigLIP-like tower, pixel shuffle,
  Llama text model). Generation ends at `<end_of_utterance>`.

Only the sizes are tiny; the vocabularies are trained here on `tiny_vlm`'s corpus.
`BUILDERS` maps each architecture name to its builder. This module is imported by
`medbatch.testing.tiny_vlm` only lazily (it imports that module's corpus); it must not
import any runner.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from medbatch.testing.tiny_vlm import _CORPUS, _train_vocabulary

__all__ = [
    "BUILDERS",
    "IDEFICS3_CHAT_TEMPLATE",
    "LLAVA_CHAT_TEMPLATE",
    "LLAVA_NEXT_CHAT_TEMPLATE",
    "build_idefics3",
    "build_llava",
    "build_llava_next",
]

# llava-hf/llava-1.5-7b-hf chat_template.json: images first, then text; no system role prefix
# and no BOS (the tokenizer adds `<s>`).
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# llava-hf/llava-v1.6-mistral-7b-hf: Mistral's [INST] turns, images first; no BOS either.
LLAVA_NEXT_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<<SYS>>\n' + message['content'][0]['text'] + '\n<</SYS>>\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' }}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{# Render all text next #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}{{' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'][0]['text'] + '</s> '}}{% else %}"
    "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}"
    "{% endfor %}"
)

# HuggingFaceM4/Idefics3-8B-Llama3 processor chat template: it starts with the BOS itself.
IDEFICS3_CHAT_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{message['role'].capitalize()}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

LLAVA_IMAGE_SIZE = 32
"""CLIP input side of the tiny LLaVA (336 in LLaVA 1.5): 4 x 4 patches of 8 px."""

IDEFICS3_CROP_SIZE = 64
"""Side of one Idefics3 crop (364 in Idefics3): 8 x 8 patches of 8 px, pixel-shuffled 2 x 2."""

IDEFICS3_LONGEST_EDGE = 2 * IDEFICS3_CROP_SIZE
"""Images are resized to this longest edge before splitting: at most 2 x 2 crops + global."""

_PATCH = 8


def _image_processor(name: str, settings: dict[str, Any]) -> Any:
    import transformers

    # The torchvision-backed class where torchvision is installed, the PIL one otherwise:
    # what AutoProcessor itself picks when it loads the real checkpoint.
    has_torchvision = importlib.util.find_spec("torchvision") is not None
    return getattr(transformers, name if has_torchvision else f"{name}Pil")(**settings)


def _randomise(model: Any, seed: int) -> None:
    """Every weight random (std 0.02), norms near 1, so no path is zero (images stay seen)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.02
            parameter.copy_(noise + 1.0 if "norm" in name and name.endswith("weight") else noise)
    model.eval()


def _text_config(vocab_size: int, **token_ids: int) -> Any:
    import transformers as _transformers

    transformers: Any = _transformers  # its annotations are partial
    return transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        **token_ids,
    )


# -- LLaVA 1.5 --------------------------------------------------------------------------------


def build_llava(folder: Path, *, seed: int, labels: tuple[str, ...]) -> None:
    """Write a tiny LLaVA 1.5 folder (16 image tokens per image)."""
    _build_llava_family(folder, seed=seed, labels=labels, anyres=False)


def build_llava_next(folder: Path, *, seed: int, labels: tuple[str, ...]) -> None:
    """Write a tiny LLaVA-NeXT (1.6) folder: a base view plus 2 to 3 tiles, by aspect ratio."""
    _build_llava_family(folder, seed=seed, labels=labels, anyres=True)


def _build_llava_family(folder: Path, *, seed: int, labels: tuple[str, ...], anyres: bool) -> None:
    import transformers as _transformers
    from tokenizers import AddedToken

    transformers: Any = _transformers  # its annotations are partial

    vocab, merges = _train_vocabulary(labels, specials=("<unk>", "<s>", "</s>"))
    tokenizer = transformers.LlamaTokenizer(
        vocab=vocab,
        merges=cast(Any, merges),
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        add_bos_token=True,
        add_eos_token=False,
        padding_side="left",
        model_max_length=4096,
    )
    # llava-hf appends <image> (32000) and <pad> (32001) after the Llama 2 vocabulary.
    tokenizer.add_tokens([AddedToken("<image>", special=True, normalized=False)])
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    side = LLAVA_IMAGE_SIZE
    settings: dict[str, Any] = {
        "size": {"shortest_edge": side},
        "crop_size": {"height": side, "width": side},
    }
    if anyres:
        # LLaVA 1.6's grid (336 px tiles: 1x2, 2x1, 2x2, 3x1, 1x3) at the tiny tile size.
        grid = [[1, 2], [2, 1], [2, 2], [3, 1], [1, 3]]
        settings["image_grid_pinpoints"] = [[rows * side, cols * side] for rows, cols in grid]
    image_processor = _image_processor(
        "LlavaNextImageProcessor" if anyres else "CLIPImageProcessor", settings
    )
    processor_class = transformers.LlavaNextProcessor if anyres else transformers.LlavaProcessor
    processor = processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=_PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
        chat_template=LLAVA_NEXT_CHAT_TEMPLATE if anyres else LLAVA_CHAT_TEMPLATE,
    )
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in ("<s>", "</s>", "<pad>")}
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    vision = transformers.CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        projection_dim=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=LLAVA_IMAGE_SIZE,
        patch_size=_PATCH,
    )
    config_class = transformers.LlavaNextConfig if anyres else transformers.LlavaConfig
    extra: dict[str, Any] = {}
    if anyres:
        extra["image_grid_pinpoints"] = settings["image_grid_pinpoints"]
    config = config_class(
        **extra,
        vision_config=vision,
        text_config=_text_config(
            len(tokenizer),
            bos_token_id=ids["<s>"],
            eos_token_id=ids["</s>"],
            pad_token_id=ids["<pad>"],
        ),
        image_token_index=image_id,
        image_seq_length=(LLAVA_IMAGE_SIZE // _PATCH) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    model_class = (
        transformers.LlavaNextForConditionalGeneration
        if anyres
        else transformers.LlavaForConditionalGeneration
    )
    config.architectures = [model_class.__name__]
    model = model_class(config)
    _randomise(model, seed)
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=ids["<s>"], eos_token_id=ids["</s>"], pad_token_id=ids["<pad>"]
    )
    processor.save_pretrained(str(folder))
    model.save_pretrained(str(folder))


# -- Idefics3 ---------------------------------------------------------------------------------

_IDEFICS3_SPECIALS: tuple[str, ...] = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<global-img>",
    *(f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)),
)


def _byte_level_tokenizer(labels: tuple[str, ...]) -> Any:
    """A Llama 3 style tokenizer: byte-level BPE, BOS added by the post-processor."""
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors, trainers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast as _PreTrainedTokenizerFast

    tokenizer_class: Any = _PreTrainedTokenizerFast  # untyped constructor
    backend = Tokenizer(BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    corpus = [*_CORPUS, " ".join(labels), "\n".join(labels), ", ".join(labels)]
    backend.train_from_iterator(corpus * 2, trainer)
    backend.add_special_tokens(
        [AddedToken(token, special=True, normalized=False) for token in _IDEFICS3_SPECIALS]
    )
    bos = "<|begin_of_text|>"
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A",
        pair=f"{bos} $A {bos} $B",
        special_tokens=[(bos, backend.token_to_id(bos))],
    )
    return tokenizer_class(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token="<|end_of_text|>",
        pad_token="<|reserved_special_token_0|>",
        padding_side="left",
        model_max_length=8192,
    )


def build_idefics3(folder: Path, *, seed: int, labels: tuple[str, ...]) -> None:
    """Write a tiny Idefics3 folder (16 image tokens per crop, up to 2 x 2 crops + global)."""
    import transformers as _transformers

    transformers: Any = _transformers  # its annotations are partial

    tokenizer = _byte_level_tokenizer(labels)
    image_processor = _image_processor(
        "Idefics3ImageProcessor",
        {
            "size": {"longest_edge": IDEFICS3_LONGEST_EDGE},
            "max_image_size": {"longest_edge": IDEFICS3_CROP_SIZE},
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
        },
    )
    scale_factor = 2
    image_seq_len = (IDEFICS3_CROP_SIZE // _PATCH) ** 2 // scale_factor**2
    processor = transformers.Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=image_seq_len,
        chat_template=IDEFICS3_CHAT_TEMPLATE,
    )
    ids = {
        token: tokenizer.convert_tokens_to_ids(token)
        for token in (
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|reserved_special_token_0|>",
            "<end_of_utterance>",
            "<image>",
        )
    }
    vision = transformers.Idefics3VisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IDEFICS3_CROP_SIZE,
        patch_size=_PATCH,
    )
    config = transformers.Idefics3Config(
        vision_config=vision,
        text_config=_text_config(
            len(tokenizer),
            bos_token_id=ids["<|begin_of_text|>"],
            eos_token_id=ids["<|end_of_text|>"],
            pad_token_id=ids["<|reserved_special_token_0|>"],
        ),
        image_token_id=ids["<image>"],
        scale_factor=scale_factor,
    )
    config.architectures = ["Idefics3ForConditionalGeneration"]
    model = transformers.Idefics3ForConditionalGeneration(config)
    _randomise(model, seed)
    end_ids = [ids["<|end_of_text|>"], ids["<end_of_utterance>"]]
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=ids["<|begin_of_text|>"],
        eos_token_id=end_ids,
        pad_token_id=ids["<|reserved_special_token_0|>"],
    )
    processor.save_pretrained(str(folder))
    model.save_pretrained(str(folder))


BUILDERS: dict[str, Callable[..., None]] = {
    "llava": build_llava,
    "llava_next": build_llava_next,
    "idefics3": build_idefics3,
}
"""The builder of each `tiny_vlm` architecture but Gemma 3 (built in `tiny_vlm` itself)."""
