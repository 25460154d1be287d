"""Load a model and its processor with transformers; the facts the runner derives from them."""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medbatch.errors import ConfigError, MissingDependencyError, RunnerError
from medbatch.profiles import ModelProfile, profile_for

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("medbatch.runners.transformers")


@dataclass
class Prepared:
    """One record ready for the model: its tensors with batch dimension 1."""

    inputs: dict[str, torch.Tensor]
    prompt_tokens: int
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass
class Loaded:
    """The processor, the model, and what the runner derives from them once."""

    processor: Any
    model: Any
    tokenizer: Any
    device: Any
    dtype: Any
    end_ids: tuple[int, ...]
    pad_id: int
    cache_kwarg: str


def load_model(
    *,
    model: str,
    revision: str | None,
    device: str,
    dtype: str,
    allow_fp16: bool,
    trust_remote_code: bool,
    attn_implementation: str | None,
    quiet: bool = False,
    profile: ModelProfile | None = None,
) -> tuple[Loaded, ModelProfile]:
    """Load `model` (a hub name or folder) on `device` in `dtype`; also its family's profile.

    `quiet` turns transformers' progress bars off. `profile` (the family's rules) is used
    as given; None resolves it from the model name and the `model_type` of its config.

    Raises:
        MissingDependencyError: torch or transformers is not installed.
        ConfigError: float16 for a Gemma 3 model without `allow_fp16`, or cuda without a GPU.
        RunnerError: the model or its processor cannot be loaded.
    """
    try:
        import torch
        import transformers as _transformers
    except ImportError as exc:
        raise MissingDependencyError("TransformersRunner", exc.name or "torch", "local") from exc
    # transformers' own annotations are partial; the seam to it is typed as Any.
    transformers: Any = _transformers
    if quiet:
        transformers.utils.logging.disable_progress_bar()

    torch_device = resolve_device(device, torch)
    torch_dtype = resolve_dtype(dtype, torch_device, torch)
    common: dict[str, Any] = {
        "revision": revision,
        "trust_remote_code": trust_remote_code,
    }
    try:
        model_config = transformers.AutoConfig.from_pretrained(model, **common)
    except (OSError, ValueError) as exc:
        raise RunnerError(
            f"cannot load model {model!r}: {exc}. Give a local folder or a hub name "
            "you have access to (set HF_TOKEN for gated models such as MedGemma)."
        ) from exc
    model_type = str(getattr(model_config, "model_type", ""))
    profile = profile or profile_for(model, model_type=model_type)
    try:
        profile.check_dtype(str(torch_dtype), force=allow_fp16)
    except ConfigError as exc:
        raise ConfigError(f"{model}: {exc}") from None

    model_kwargs: dict[str, Any] = {"dtype": torch_dtype, **common}
    if attn_implementation is not None:
        model_kwargs["attn_implementation"] = attn_implementation
    try:
        processor = transformers.AutoProcessor.from_pretrained(model, **common)
        network = transformers.AutoModelForImageTextToText.from_pretrained(model, **model_kwargs)
    except (OSError, ValueError) as exc:
        raise RunnerError(f"cannot load model {model!r}: {exc}") from exc
    network = network.to(torch_device)
    network.eval()

    tokenizer = getattr(processor, "tokenizer", processor)
    end_ids = end_token_ids(network, tokenizer)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = end_ids[0]
    parameters = inspect.signature(network.forward).parameters
    # transformers 5 renamed past_key_values to cache; use whichever this version takes.
    cache_kwarg = "cache" if "cache" in parameters else "past_key_values"
    logger.info("loaded %s on %s as %s", model, torch_device, torch_dtype)
    loaded = Loaded(
        processor=processor,
        model=network,
        tokenizer=tokenizer,
        device=torch_device,
        dtype=torch_dtype,
        end_ids=end_ids,
        pad_id=int(pad_id),
        cache_kwarg=cache_kwarg,
    )
    return loaded, profile


def resolve_device(device: str, torch: Any) -> Any:
    """The torch device for `device` (`auto`: cuda when torch sees a GPU)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device='cuda' but torch sees no GPU here; use device='cpu' (or 'auto'), or "
            "install a CUDA build of torch"
        )
    return torch.device(device)


def resolve_dtype(dtype: str, device: Any, torch: Any) -> Any:
    """The torch dtype for `dtype` (`auto`: bfloat16 on GPU, float32 on CPU)."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def end_token_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    """Every token that ends an answer: generation config's EOS list, EOS, end of turn."""
    ids: list[int] = []
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.append(configured)
    elif configured:
        ids.extend(int(value) for value in configured)
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    unk = tokenizer.unk_token_id
    for marker in ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_utterance>"):
        token_id = tokenizer.convert_tokens_to_ids(marker)
        if isinstance(token_id, int) and token_id != unk and token_id >= 0:
            ids.append(token_id)
    if not ids:
        raise RunnerError("the model has no end-of-sequence token; cannot tell when answers end")
    return tuple(dict.fromkeys(ids))
