"""Tiny random-weight vision-language models: the offline test doubles for MedGemma and others.

`tiny_vlm(path)` builds a Gemma 3 (MedGemma's architecture); `architecture="llava"` a
LLaVA 1.5, `"llava_next"` a LLaVA-NeXT and `"idefics3"` an Idefics3 (SmolVLM's family),
each with that architecture's real tokenizer, image processor, processor and model classes
(see `TINY_ARCHITECTURES`). The Gemma 3 folder:

`tiny_vlm(path)` writes, in about a second and a few MB, a model folder that loads with exactly
the calls a real `google/medgemma-4b-it` uses:

```python
processor = AutoProcessor.from_pretrained(path)              # Gemma3Processor
model = AutoModelForImageTextToText.from_pretrained(path)    # Gemma3ForConditionalGeneration
```

```
path/
├── config.json                 Gemma3Config: SigLIP tower 64 px / patch 8, 2-layer Gemma 3 text
├── generation_config.json      eos = [<eos>, <end_of_turn>], sampling defaults as MedGemma's
├── model.safetensors           every weight random (normal, std 0.02), ~1 MB
├── tokenizer.json              BPE trained here on a built-in corpus, byte fallback
├── tokenizer_config.json       Gemma's special tokens and chat template
├── processor_config.json       Gemma3Processor (image_seq_length = 16)
├── preprocessor_config.json    Gemma3ImageProcessor (64 x 64, pan-and-scan capable)
└── medbatch_tiny_vlm.json      what was built, so an identical rebuild is skipped
```

**Its answers are random.** The weights are noise: it exercises chat templates, image
preprocessing, batching, padding, constrained decoding and label scoring end to end, but it
knows nothing about ECGs or anything else. Never report its accuracy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, cast

__all__ = [
    "ECG_LABELS",
    "GEMMA3_CHAT_TEMPLATE",
    "TINY_ARCHITECTURES",
    "TINY_IMAGE_SIZE",
    "TINY_IMAGE_TOKENS",
    "TinyArchitecture",
    "tiny_vlm",
]

TinyArchitecture = Literal["gemma3", "llava", "llava_next", "idefics3"]
TINY_ARCHITECTURES: tuple[TinyArchitecture, ...] = ("gemma3", "llava", "llava_next", "idefics3")
"""Architectures `tiny_vlm` can build: Gemma 3 (MedGemma), LLaVA 1.5, LLaVA-NeXT, Idefics3."""

ECG_LABELS: tuple[str, ...] = (
    "NORMAL",
    "ABNORMAL_HEARTBEAT",
    "MYOCARDIAL_INFARCTION",
    "POST_MI",
)
"""The ECG task's label names; always in the tiny tokenizer's training corpus."""

TINY_IMAGE_SIZE = 64
"""Side in pixels of the tiny model's vision input (MedGemma's is 896)."""

TINY_IMAGE_TOKENS = 16
"""Soft tokens per image: 64 px / patch 8 = 8 x 8 patches, average-pooled 2 x 2 to 4 x 4."""

_PATCH_SIZE = 8
_MARKER = "medbatch_tiny_vlm.json"
# Bump when the layout of what is built changes, so cached folders are rebuilt.
_BUILDER_VERSION = 2

# Gemma's special tokens, in Gemma's order where it has one (pad 0, eos 1, bos 2, unk 3,
# mask 4). The real vocabulary puts the turn and image tokens far higher (106, 255999, ...);
# only their names matter to the processor and the chat template.
_SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<mask>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
)

# Gemma 3's chat template as shipped in google/gemma-3-4b-it and google/medgemma-4b-it
# (tokenizer_config.json): no system role, the system text is folded into the first user turn.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    '    {%- set first_user_prefix = "" -%}\n'
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    '        {{ raise_exception("Conversation roles must alternate '
    'user/assistant/user/assistant/...") }}\n'
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    '        {%- set role = "model" -%}\n'
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    '        {{ raise_exception("Invalid content type") }}\n'
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\n'}}\n"
    "{%- endif -%}\n"
)

# What the tokenizer is trained on: the ECG prompt's vocabulary (the seed notebook's
# systematic-interpretation prompt), generic classification prompts, markdown, JSON answers,
# digits and whitespace, so prompts tokenise into words rather than bytes.
_CORPUS: tuple[str, ...] = (
    "You are a medical AI assistant specialized in ECG analysis.",
    "You are a board-certified cardiologist performing a systematic ECG interpretation.",
    "Analyze this 12-lead ECG following the standard clinical approach:",
    "**STEP 1 - RATE AND RHYTHM:**\n- Calculate the heart rate. Is it bradycardic (<60), "
    "normal (60-100), or tachycardic (>100)?\n- Is the rhythm regular or irregular?",
    "- Is there a P wave before every QRS complex?\n- If rhythm is irregular, is it "
    "irregularly irregular (suggests atrial fibrillation)?",
    "**STEP 2 - P WAVES:**\n- Are P waves present and upright in leads I, II, aVF?\n"
    "- Is P wave morphology normal or abnormal (peaked, notched, absent)?",
    "**STEP 3 - PR INTERVAL:**\n- Is the PR interval normal (120-200ms), prolonged (heart "
    "block), or short (pre-excitation)?",
    "**STEP 4 - QRS COMPLEX:**\n- Is the QRS narrow (<120ms) or wide?\n- Are there "
    "pathological Q waves (>40ms wide or >25% of R wave amplitude)?\n- Q waves in V1-V4 "
    "suggest anterior MI\n- Q waves in II, III, aVF suggest inferior MI",
    "**STEP 5 - ST SEGMENT (CRITICAL FOR MI):**\n- Is there ST elevation? In which leads?\n"
    "  - V1-V4 elevation = anterior STEMI\n  - II, III, aVF elevation = inferior STEMI\n"
    "  - I, aVL, V5-V6 elevation = lateral STEMI\n- Is there ST depression? This may "
    "indicate ischemia or reciprocal changes.",
    "**STEP 6 - T WAVES:**\n- Are T waves upright, inverted, or hyperacute (tall, peaked)?\n"
    "- Hyperacute T waves are an early sign of MI\n- Deep symmetric T wave inversion may "
    "indicate ischemia or evolved MI",
    "**FINAL CLASSIFICATION:**\nBased on your systematic analysis above, classify this ECG "
    "as ONE of:",
    "- **MYOCARDIAL_INFARCTION**: If you see ST elevation, hyperacute T waves, or acute "
    "ischemic changes",
    "- **POST_MI**: If you see pathological Q waves with no acute ST elevation (indicates "
    "old/healed MI)",
    "- **ABNORMAL_HEARTBEAT**: If the rhythm is irregular, there are ectopic beats, or "
    "arrhythmia is present",
    "- **NORMAL**: ONLY if rate is normal, rhythm is regular sinus, no Q waves, no ST "
    "changes, normal T waves",
    "Provide your complete analysis following each step, then state your final classification.",
    "Classify the image. Answer with exactly one label from the list below and nothing else.",
    "What is shown in this image? Describe the findings, then give the answer.",
    "The chest X-ray shows PNEUMONIA or is NORMAL. The scan, the picture, the page.",
    "FINAL CLASSIFICATION: NORMAL\nFINAL CLASSIFICATION: **POST_MI**\nThe ECG is classified "
    "as MYOCARDIAL_INFARCTION. The classification is ABNORMAL_HEARTBEAT.",
    '{"reasoning": "The rhythm is regular.", "label": "NORMAL"}\n```json\n{"label": '
    '"POST_MI"}\n```',
    "# Heading\n## Findings\n### Impression\n* item\n1. first\n2. second\n> quote\n| a | b |\n"
    "|---|---|\n`code` _italic_ __bold__",
    "0 1 2 3 4 5 6 7 8 9 10 12 25 40 60 75 100 120 200 ms mm mV bpm Hz % . , ; : ! ? ' \" "
    "( ) [ ] { } < > = + - * / \\ _ # @ & ^ ~ |",
    "\n\n\n \n\t  yes no unknown true false I cannot determine the answer from this image.",
)


def tiny_vlm(
    path: str | Path,
    *,
    seed: int = 0,
    labels: Sequence[str] = ECG_LABELS,
    architecture: TinyArchitecture = "gemma3",
) -> Path:
    """Build (or reuse) a tiny random-weight image-text-to-text model at `path`.

    The folder loads like a real MedGemma with `AutoProcessor.from_pretrained(path)` and
    `AutoModelForImageTextToText.from_pretrained(path)`. Building takes about a second on a
    CPU and a few MB of disk; nothing is downloaded. A folder that already holds the same
    build (same seed, labels, builder and transformers version) is reused as is.

    **The model's answers are random**: every weight is noise (normal, std 0.02; the
    multi-modal projector included, which transformers would otherwise zero, leaving images
    invisible). It is the test double for the real model's plumbing, never a stand-in for its
    accuracy.

    Args:
        path: Folder to write. Created if missing; replaced only if it holds an older tiny
            model (a folder with other content is never overwritten).
        seed: Seeds the weights, so the same seed gives the same model.
        labels: Label names the tokenizer must know as words (the ECG labels by default);
            they are added to the training corpus.
        architecture: `gemma3` (MedGemma's, the default), `llava` (LLaVA 1.5: the tokenizer,
            not the chat template, adds the BOS), `llava_next` (LLaVA 1.6: a varying number
            of tiles per image, padded in a batch) or `idefics3` (Idefics3 / SmolVLM: images
            split into a varying number of crops). Each uses the architecture's real
            transformers tokenizer, image processor, processor and model classes.

    Returns:
        `path`, as a `Path`.

    Raises:
        ValueError: `architecture` is not one of `TINY_ARCHITECTURES`.
        FileExistsError: `path` exists, is not empty and is not a tiny model built here.
        medbatch.errors.MissingDependencyError: torch, transformers or tokenizers is missing
            (`pip install "medbatch[local]"`).

    Example:
        >>> from transformers import AutoModelForImageTextToText, AutoProcessor
        >>> folder = tiny_vlm(tmp_path / "tiny-gemma3")
        >>> processor = AutoProcessor.from_pretrained(folder)
        >>> model = AutoModelForImageTextToText.from_pretrained(folder)
    """
    if architecture not in TINY_ARCHITECTURES:
        raise ValueError(
            f"unknown tiny architecture {architecture!r}; choose one of {TINY_ARCHITECTURES}"
        )
    transformers = _require_local_stack()
    target = Path(path)
    labels = tuple(labels)
    spec = {
        "architecture": architecture,
        "builder_version": _BUILDER_VERSION,
        "seed": seed,
        "labels": list(labels),
        "transformers": transformers.__version__,
    }
    fingerprint = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    marker = target / _MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text())["fingerprint"] == fingerprint:
                return target
        except (ValueError, KeyError, OSError):
            pass  # A damaged marker: rebuild below.
    elif target.exists() and any(target.iterdir()):
        raise FileExistsError(
            f"{target} is not empty and holds no tiny model; choose an empty or new folder"
        )

    target.parent.mkdir(parents=True, exist_ok=True)
    # Build next to the target and swap it in, so a reader never sees half a model and two
    # concurrent builders (pytest-xdist workers) cannot interleave their files.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _build(staging, seed=seed, labels=labels, architecture=architecture)
        (staging / _MARKER).write_text(
            json.dumps({"fingerprint": fingerprint, **spec}, indent=2, sort_keys=True) + "\n"
        )
        if target.exists():
            shutil.rmtree(target)
        try:
            os.replace(staging, target)
        except OSError:
            # Another builder won the race; its folder is equivalent.
            if not (target / _MARKER).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _require_local_stack() -> Any:
    from medbatch.errors import MissingDependencyError

    try:
        import tokenizers  # noqa: F401
        import torch  # noqa: F401
        import transformers
    except ImportError as exc:
        raise MissingDependencyError("the tiny test VLM", exc.name or "torch", "local") from exc
    return transformers


def _build(
    folder: Path, *, seed: int, labels: tuple[str, ...], architecture: TinyArchitecture
) -> None:
    if architecture != "gemma3":
        from medbatch.testing import _tiny_archs

        _tiny_archs.BUILDERS[architecture](folder, seed=seed, labels=labels)
        return
    tokenizer = _build_tokenizer(labels)
    processor = _build_processor(tokenizer)
    model = _build_model(tokenizer, seed=seed)
    processor.save_pretrained(str(folder))
    model.save_pretrained(str(folder))


def _train_vocabulary(
    labels: tuple[str, ...], specials: Sequence[str] = _SPECIAL_TOKENS
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a SentencePiece-style BPE vocabulary ("▁" for spaces, byte fallback, digits).

    Gemma's and Llama 2's (LLaVA 1.5's) vocabularies are both of this kind: `specials` come
    first, then the 256 byte-fallback tokens, then the merges.
    """
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE

    trainer_tokenizer = Tokenizer(BPE(unk_token="<unk>", byte_fallback=True))
    trainer_tokenizer.normalizer = normalizers.Replace(" ", "▁")
    # Training-time word boundaries: before each "▁" and "_" (so POST_MI is two tokens, as
    # label names are several tokens in Gemma's real vocabulary, which the label trie must
    # handle), around newline runs, and between digits (Gemma splits every digit).
    trainer_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("▁", "merged_with_next"),
            pre_tokenizers.Split("_", "merged_with_next"),
            pre_tokenizers.Split(Regex(r"\n+"), "isolated"),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    corpus = [*_CORPUS, " ".join(labels), "\n".join(labels), ", ".join(labels)]
    trainer = trainers.BpeTrainer(
        vocab_size=1024, min_frequency=1, show_progress=False, special_tokens=[]
    )
    trainer_tokenizer.train_from_iterator(corpus * 2, trainer)
    trained = json.loads(trainer_tokenizer.to_str())["model"]

    vocab: dict[str, int] = {}
    for token in (*specials, *(f"<0x{byte:02X}>" for byte in range(256))):
        vocab[token] = len(vocab)
    for token, _ in sorted(trained["vocab"].items(), key=lambda item: item[1]):
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = [(left, right) for left, right in trained["merges"]]
    # Gemma has whitespace runs as single tokens; the processor puts "\n\n" around each image.
    for left, right in (("\n", "\n"), ("\n\n", "\n"), ("▁", "▁"), ("▁▁", "▁▁")):
        for token in (left, right):
            vocab.setdefault(token, len(vocab))
        if left + right not in vocab:
            vocab[left + right] = len(vocab)
            merges.append((left, right))
    return vocab, merges


def _build_tokenizer(labels: tuple[str, ...]) -> Any:
    from tokenizers import AddedToken
    from transformers import GemmaTokenizer

    vocab, merges = _train_vocabulary(labels)
    # GemmaTokenizer's annotation says list[str]; the BPE model takes (left, right) pairs.
    tokenizer = GemmaTokenizer(
        vocab=vocab,
        merges=cast(Any, merges),
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        mask_token="<mask>",
        # Gemma 3's tokenizer_config.json names its image tokens this way; Gemma3Processor
        # reads them as tokenizer.boi_token / eoi_token / image_token.
        boi_token="<start_of_image>",
        eoi_token="<end_of_image>",
        image_token="<image_soft_token>",
        add_bos_token=True,
        add_eos_token=False,
        padding_side="left",
        model_max_length=8192,
        chat_template=GEMMA3_CHAT_TEMPLATE,
    )
    tokenizer.add_tokens(
        [
            AddedToken(token, special=True, normalized=False)
            for token in _SPECIAL_TOKENS
            if token not in ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")
        ],
        special_tokens=True,
    )
    if len(tokenizer) != len(vocab):
        raise AssertionError(f"tokenizer has {len(tokenizer)} tokens, expected {len(vocab)}")
    return tokenizer


def _build_processor(tokenizer: Any) -> Any:
    from transformers import Gemma3Processor

    # A Gemma3ImageProcessor with MedGemma's normalisation, at 64 px.
    image_processor = _gemma3_image_processor()
    return Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=GEMMA3_CHAT_TEMPLATE,
        image_seq_length=TINY_IMAGE_TOKENS,
    )


def _gemma3_image_processor() -> Any:
    import transformers

    settings: dict[str, Any] = {
        "size": {"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        # Pan-and-scan settings stay unset, as in MedGemma's preprocessor_config.json, so
        # Gemma3Processor's defaults apply (crops of at least 256 px, up to 4 of them).
    }
    # The torchvision-backed class where torchvision is installed, the PIL one otherwise:
    # what AutoProcessor itself picks when it loads a real MedGemma.
    has_torchvision = importlib.util.find_spec("torchvision") is not None
    name = "Gemma3ImageProcessor" if has_torchvision else "Gemma3ImageProcessorPil"
    return getattr(transformers, name)(**settings)


def _build_model(tokenizer: Any, *, seed: int) -> Any:
    import torch
    import transformers as _transformers
    from transformers import Gemma3Config, Gemma3TextConfig, SiglipVisionConfig

    # transformers' own annotations are partial; the model side is typed as Any.
    transformers: Any = _transformers

    token_id = {token: tokenizer.convert_tokens_to_ids(token) for token in _SPECIAL_TOKENS}
    text_config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=16,
        max_position_embeddings=4096,
        # One sliding and one global layer, as Gemma 3 interleaves them (5:1 there), with a
        # window shorter than the test prompts so the sliding path is really exercised.
        sliding_window=32,
        layer_types=["sliding_attention", "full_attention"],
        pad_token_id=token_id["<pad>"],
        bos_token_id=token_id["<bos>"],
        eos_token_id=token_id["<eos>"],
        tie_word_embeddings=True,
    )
    vision_config = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=TINY_IMAGE_SIZE,
        patch_size=_PATCH_SIZE,
        layer_norm_eps=1e-6,
        vision_use_head=False,
    )
    config = Gemma3Config(
        text_config=text_config,
        vision_config=vision_config,
        mm_tokens_per_image=TINY_IMAGE_TOKENS,
        boi_token_index=token_id["<start_of_image>"],
        eoi_token_index=token_id["<end_of_image>"],
        image_token_index=token_id["<image_soft_token>"],
        tie_word_embeddings=True,
    )
    config.architectures = ["Gemma3ForConditionalGeneration"]
    config.eos_token_id = [token_id["<eos>"], token_id["<end_of_turn>"]]

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model = transformers.Gemma3ForConditionalGeneration(config)
        # Every parameter, not just what _init_weights touches: the multi-modal projector's
        # input projection starts at zero in transformers, which would make images invisible.
        for parameter in model.parameters():
            parameter.copy_(
                torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.02
            )
    model.eval()
    # MedGemma's own generation defaults (sampling, top_k 64, top_p 0.95), so tests prove
    # that runners override them rather than inherit them.
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=token_id["<bos>"],
        pad_token_id=token_id["<pad>"],
        eos_token_id=[token_id["<eos>"], token_id["<end_of_turn>"]],
        do_sample=True,
        top_k=64,
        top_p=0.95,
    )
    return model
