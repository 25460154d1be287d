"""Model profiles: what each model family needs to answer correctly, chosen by model id.

Silent failures in VLM classification are usually a model quirk nobody wrote down: Gemma 3
returns empty text in float16, has no system role, sees images at 896 px. A profile writes
those facts down once, and every runner and the pipeline read them: this module is the only
place that knows a model family by its name (no runner tests `"gemma" in model`).

- native image size → `images.native_size`, what `OpenAICompatibleRunner` and `VLLMRunner`
  shrink images to;
- system role → `fold_messages` (the one fold, `fold_system_messages`), used by
  `ChatPromptTemplate(fold_system=True)`, the pipeline and `VLLMRunner`;
- dtype rules → `check_dtype`, used by `TransformersRunner`.

A runner resolves its profile once (`profile_for(model_id)`, or the `profile=` it is
given) and keeps it as `runner.profile`; the pipeline uses that same object.

```python
profile = profile_for("google/medgemma-4b-it")
profile.name                   # 'gemma3'
profile.check_dtype("float16")   # raises ConfigError with the reason
```
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from medbatch.errors import ConfigError
from medbatch.records import ChatMessage, GenerationParams, TextPart

__all__ = [
    "GEMMA",
    "GEMMA3",
    "GENERIC",
    "PALIGEMMA",
    "ModelProfile",
    "fold_system_messages",
    "profile_for",
    "register_profile",
]


def fold_system_messages(messages: Sequence[ChatMessage]) -> tuple[ChatMessage, ...]:
    """Merge system messages into the first user turn, for models with no system role.

    Gemma 3 (and MedGemma) has no system role: the text goes before the first user text,
    separated by a blank line, the way Gemma's own chat template does it. This is the only
    implementation: `ChatPromptTemplate(fold_system=True)` and `VLLMRunner` both call it.

    Example:
        >>> folded = fold_system_messages([ChatMessage.text("system", "Be brief."),
        ...                                ChatMessage.text("user", "Classify.")])
        >>> [m.role for m in folded], folded[0].text_content
        (['user'], 'Be brief.\\n\\nClassify.')
    """
    system = [m.text_content for m in messages if m.role == "system"]
    rest = [m for m in messages if m.role != "system"]
    if not system:
        return tuple(messages)
    prefix = "\n\n".join(text for text in system if text)
    for index, message in enumerate(rest):
        if message.role != "user":
            continue
        parts = list(message.content)
        first_text = next((i for i, p in enumerate(parts) if isinstance(p, TextPart)), None)
        if first_text is None:
            parts.insert(0, TextPart(text=prefix))
        else:
            original = parts[first_text]
            assert isinstance(original, TextPart)
            parts[first_text] = TextPart(text=f"{prefix}\n\n{original.text}")
        rest[index] = ChatMessage(role="user", content=tuple(parts))
        return tuple(rest)
    return (ChatMessage.text("user", prefix), *rest)


class ModelProfile(BaseModel):
    """The rules one model family needs.

    Attributes:
        name: Short name recorded in manifests and rows.
        patterns: Regular expressions matched (case-insensitively) against the model id.
        system_role: `native` sends a system message; `fold` merges the system text into the
            first user turn on the client, so every back-end sends the same prompt.
        gpu_dtype: The dtype to use on GPU.
        refused_dtypes: dtype → why it is refused (overridable only with force).
        image_size: The vision encoder's native input side in pixels: runners that send
            images over the wire shrink them to it (larger is resized away by the processor
            anyway), unless their `max_image_side` says otherwise.
        image_tokens: Tokens one image costs in the prompt.
        pan_and_scan: Whether the processor supports pan-and-scan crops for wide images.
        context_length: Most prompt + answer tokens (recorded in the manifest).
        params: Default generation parameters for classification (greedy).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    patterns: tuple[str, ...] = ()
    system_role: Literal["native", "fold"] = "native"
    gpu_dtype: str = "bfloat16"
    refused_dtypes: dict[str, str] = Field(default_factory=dict)
    image_size: int | None = None
    image_tokens: int | None = None
    pan_and_scan: bool = False
    context_length: int | None = None
    params: GenerationParams = Field(default_factory=GenerationParams)

    def matches(self, model_id: str) -> bool:
        """Whether this profile applies to `model_id` (a hub name, a path or a model type)."""
        return any(re.search(pattern, model_id, re.IGNORECASE) for pattern in self.patterns)

    def check_dtype(self, dtype: str, *, force: bool = False) -> None:
        """Refuse a dtype this family cannot run in, unless forced.

        Args:
            dtype: The requested dtype name (`float16`, `bfloat16`, `torch.float16`, ...).
            force: Accept it anyway.

        Raises:
            ConfigError: The dtype is refused; the message says why and how to force it.
        """
        reason = self.refused_dtypes.get(dtype.replace("torch.", ""))
        if reason and not force:
            raise ConfigError(
                f"{self.name} models must not run in {dtype}: {reason} "
                f"Use {self.gpu_dtype} on GPU (float32 on CPU), or pass allow_fp16=True to "
                "force it."
            )

    def fold_messages(self, messages: Sequence[ChatMessage]) -> tuple[ChatMessage, ...]:
        """`messages` as this family must receive them: system text folded when it has no
        system role, unchanged otherwise."""
        if self.system_role == "fold":
            return fold_system_messages(messages)
        return tuple(messages)

    def describe(self) -> dict[str, object]:
        """The profile as recorded in a run manifest."""
        return self.model_dump(mode="json", exclude={"patterns"})


GEMMA3 = ModelProfile(
    name="gemma3",
    patterns=(r"gemma-?3", r"medgemma", r"gemma3"),
    system_role="fold",
    gpu_dtype="bfloat16",
    refused_dtypes={
        "float16": (
            "Gemma 3 activations overflow float16 (beyond its 65,504 maximum), which yields "
            "empty or NaN answers (reported for Gemma 3 and MedGemma on vLLM and transformers)."
        ),
    },
    image_size=896,
    image_tokens=256,
    pan_and_scan=True,
    context_length=128_000,
    params=GenerationParams(temperature=0.0, max_tokens=1024),
)
"""Gemma 3 and MedGemma: bf16 on GPU, no system role, 896 px SigLIP, 256 image tokens."""

PALIGEMMA = ModelProfile(
    name="paligemma",
    patterns=(r"paligemma",),
    system_role="fold",
    image_size=896,
)
"""PaliGemma: Gemma's missing system role; its largest SigLIP variant sees 896 px."""

GEMMA = ModelProfile(name="gemma", patterns=(r"gemma",), system_role="fold")
"""Other Gemma models (Gemma 1/2, CodeGemma...): their chat templates reject a system role."""

GENERIC = ModelProfile(name="generic")
"""Used when no profile matches: no special rules."""

# First match wins: PaliGemma before Gemma 3 ("paligemma-3b" matches `gemma-?3`), the
# specific families before the catch-all `gemma`.
_PROFILES: list[ModelProfile] = [PALIGEMMA, GEMMA3, GEMMA]


def register_profile(profile: ModelProfile) -> None:
    """Add a profile; later registrations win over earlier ones for the same model id."""
    _PROFILES.insert(0, profile)


def profile_for(
    model_id: str,
    *,
    model_type: str | None = None,
    profiles: Iterable[ModelProfile] | None = None,
) -> ModelProfile:
    """The first profile matching `model_id` (or the config's `model_type`), else `GENERIC`.

    `model_type` (e.g. `gemma3` from a model's `config.json`) catches local folders whose
    path does not name the family.
    """
    for profile in profiles if profiles is not None else _PROFILES:
        if profile.matches(model_id) or (model_type and profile.matches(model_type)):
            return profile
    return GENERIC
