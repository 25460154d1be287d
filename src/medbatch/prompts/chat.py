"""`ChatPromptTemplate`: a system text and a user text around the record's image."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from medbatch.labels import LabelSet
from medbatch.profiles import fold_system_messages
from medbatch.prompts.base import PromptTemplate
from medbatch.records import ChatMessage, ImagePart, Record, TextPart

if TYPE_CHECKING:
    from medbatch.profiles import ModelProfile

__all__ = ["ChatPromptTemplate"]


class ChatPromptTemplate(PromptTemplate):
    """A two-turn prompt: optional system text, then the user text and the image.

    Placeholders are replaced literally (no `str.format`, so braces in clinical text or
    JSON examples are safe): `{labels}` becomes the label set's option list and
    `{label_names}` the comma-separated names.

    Args:
        user: The user instruction.
        system: System text, or None.
        labels: Fills the `{labels}` and `{label_names}` placeholders.
        image_position: Put the image before or after the user text. The notebook sent the
            text first, then the image.
        fold_system: Merge the system text into the first user turn instead of sending a
            system message. Gemma 3 (MedGemma) has no system role; its chat template folds
            the system text itself, but back-ends that drop it silently exist, so model
            profiles can ask for the fold explicitly.
        name: A short name shown in reports (e.g. `ecg/cot-v1`).

    Example:
        >>> prompt = ChatPromptTemplate("Classify as one of:\\n{labels}", system="Be brief.")
    """

    def __init__(
        self,
        user: str,
        *,
        system: str | None = None,
        labels: LabelSet | None = None,
        image_position: Literal["before", "after"] = "after",
        fold_system: bool = False,
        name: str = "custom",
    ) -> None:
        self.user_template = user
        self.system_template = system
        self.labels = labels
        self.image_position = image_position
        self.fold_system = fold_system
        self.name = name
        self.user_text = self._fill(user)
        self.system_text = self._fill(system) if system is not None else None

    def _fill(self, text: str) -> str:
        if self.labels is None:
            return text
        return text.replace("{labels}", self.labels.options_text()).replace(
            "{label_names}", ", ".join(self.labels.names)
        )

    def definition(self) -> dict[str, Any]:
        """The rendered texts and layout choices (what the fingerprint hashes)."""
        return {
            "system": self.system_text,
            "user": self.user_text,
            "image_position": self.image_position,
            "fold_system": self.fold_system,
        }

    def with_options(self, **changes: Any) -> ChatPromptTemplate:
        """A copy with some constructor arguments changed (e.g. `fold_system=True`)."""
        arguments: dict[str, Any] = {
            "user": self.user_template,
            "system": self.system_template,
            "labels": self.labels,
            "image_position": self.image_position,
            "fold_system": self.fold_system,
            "name": self.name,
        }
        arguments.update(changes)
        return ChatPromptTemplate(**arguments)

    def for_profile(self, profile: ModelProfile) -> ChatPromptTemplate:
        """Fold the system text into the first user turn for a model without a system role.

        Args:
            profile: The profile of the model the prompt is sent to.

        Returns:
            A folded copy when `profile.system_role` is `"fold"`, else `self`.
        """
        if profile.system_role == "fold" and not self.fold_system:
            return self.with_options(fold_system=True)
        return self

    @cached_property
    def _fixed_parts(self) -> tuple[tuple[ChatMessage, ...], TextPart]:
        # The text is the same for every record: build its (frozen) parts once, so rendering
        # a record only adds its image.
        text = TextPart(text=self.user_text)
        if not self.system_text:
            return (), text
        leading = (ChatMessage.text("system", self.system_text),)
        if not self.fold_system:
            return leading, text
        # The same fold every back-end uses (`medbatch.profiles`), applied once to the text.
        (folded,) = fold_system_messages((*leading, ChatMessage(role="user", content=(text,))))
        folded_text = folded.content[0]
        assert isinstance(folded_text, TextPart)
        return (), folded_text

    def render(self, record: Record) -> tuple[ChatMessage, ...]:
        """System message (unless folded), then the user text and the image."""
        leading, text = self._fixed_parts
        image = ImagePart(image=record.image)
        parts = (image, text) if self.image_position == "before" else (text, image)
        return (*leading, ChatMessage(role="user", content=parts))
