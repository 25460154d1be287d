"""Label sets: one definition of a task's classes that feeds prompts, parsing and decoding.

A `LabelSet` is the single source of truth for what a model may answer. The prompt's option
list (`LabelSet.options_text`), the parser's vocabulary (names and synonyms), and every
back-end's constrained decoding (`medbatch.constraints`) are all derived from it, so they can
never disagree.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["Label", "LabelSet", "fold_label_text"]

_LABEL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_FOLD_SEPARATORS = re.compile(r"[\s_\-]+")


def fold_label_text(text: str) -> str:
    """Fold case and separators so `post-MI`, `Post MI` and `POST_MI` compare equal.

    Args:
        text: Any label-like text.

    Returns:
        Lower-case text with runs of spaces, hyphens and underscores replaced by one space.
    """
    return _FOLD_SEPARATORS.sub(" ", text.strip().lower()).strip()


class Label(BaseModel):
    """One class a model may answer.

    Attributes:
        name: Canonical name, an identifier such as `POST_MI`; what predictions contain.
        description: What the class means, shown to the model in the option list.
        synonyms: Other phrasings that mean this class when asserted as a verdict
            (e.g. "STEMI" for MYOCARDIAL_INFARCTION). Used by parsers, never by decoding.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Canonical label name, e.g. POST_MI.")
    description: str = Field(default="", description="What the class means.")
    synonyms: tuple[str, ...] = Field(default=(), description="Other phrasings of the verdict.")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _LABEL_NAME.match(value):
            raise ValueError(
                f"label name {value!r} must start with a letter and contain only letters, "
                "digits and underscores (e.g. POST_MI)"
            )
        return value


class LabelSet(BaseModel):
    """An ordered set of labels, the vocabulary of one task.

    Example:
        >>> labels = LabelSet.from_names(["NORMAL", "PNEUMONIA"])
        >>> labels.normalize("pneumonia")
        'PNEUMONIA'
        >>> "NORMAL" in labels
        True
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    labels: tuple[Label, ...] = Field(description="The labels, in display order.")
    negative: str | None = Field(
        default=None,
        description="The reference (negative) label of a screening view, e.g. NORMAL: "
        "every other label counts as positive. None: the task has no screening view.",
    )

    @model_validator(mode="after")
    def _check_unique(self) -> LabelSet:
        if not self.labels:
            raise ValueError("a LabelSet needs at least one label")
        seen: dict[str, str] = {}
        for label in self.labels:
            for phrase in (label.name, *label.synonyms):
                key = fold_label_text(phrase)
                owner = seen.setdefault(key, label.name)
                if owner != label.name:
                    raise ValueError(
                        f"{phrase!r} of label {label.name} already names label {owner}"
                    )
        if self.negative is not None and self.negative not in seen.values():
            names = ", ".join(label.name for label in self.labels)
            raise ValueError(f"negative label {self.negative!r} is not one of the labels: {names}")
        return self

    @classmethod
    def from_names(cls, names: Sequence[str], *, negative: str | None = None) -> LabelSet:
        """Build a label set from bare names, without descriptions or synonyms.

        Args:
            names: The label names, in display order.
            negative: The reference (negative) label, one of `names`; None for none.
        """
        return cls(labels=tuple(Label(name=name) for name in names), negative=negative)

    @classmethod
    def from_mapping(
        cls, mapping: Mapping[str, Mapping[str, Any] | str], *, negative: str | None = None
    ) -> LabelSet:
        """Build from `{name: description}` or `{name: {"description": ..., "synonyms": [...]}}`.

        This is the shape of a `[labels]` table in a TOML task definition.

        Args:
            mapping: The labels by name, in display order.
            negative: The reference (negative) label, one of the names; None for none.
        """
        labels = []
        for name, spec in mapping.items():
            if isinstance(spec, str):
                labels.append(Label(name=name, description=spec))
            else:
                labels.append(Label(name=name, **dict(spec)))
        return cls(labels=tuple(labels), negative=negative)

    @cached_property
    def names(self) -> tuple[str, ...]:
        """The canonical names, in order."""
        return tuple(label.name for label in self.labels)

    @cached_property
    def _by_folded(self) -> dict[str, str]:
        table: dict[str, str] = {}
        for label in self.labels:
            for phrase in (label.name, *label.synonyms):
                table[fold_label_text(phrase)] = label.name
        return table

    def __iter__(self) -> Iterator[Label]:  # type: ignore[override]
        return iter(self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names

    def get(self, name: str) -> Label:
        """Return the label called `name`.

        Raises:
            KeyError: `name` is not a canonical label name of this set.
        """
        for label in self.labels:
            if label.name == name:
                return label
        raise KeyError(f"{name!r} is not a label of this set ({', '.join(self.names)})")

    def normalize(self, text: str) -> str | None:
        """Map a whole string to a canonical label name, or None.

        Matches names and synonyms after folding case, spaces, hyphens and underscores;
        surrounding markdown emphasis and punctuation are ignored. It does not search inside
        longer text: that is a parser's job.
        """
        stripped = text.strip().strip("*_`'\".:;,!()[]{} \t\n")
        return self._by_folded.get(fold_label_text(stripped))

    def phrases(self) -> list[tuple[str, str]]:
        """All `(phrase, label name)` pairs, names and synonyms, longest phrase first."""
        pairs = [
            (phrase, label.name)
            for label in self.labels
            for phrase in (label.name, *label.synonyms)
        ]
        return sorted(pairs, key=lambda pair: len(pair[0]), reverse=True)

    def options_text(self, *, bold: bool = True) -> str:
        """The option list for a prompt: one bullet per label with its description."""
        lines = []
        for label in self.labels:
            name = f"**{label.name}**" if bold else label.name
            lines.append(f"- {name}: {label.description}" if label.description else f"- {name}")
        return "\n".join(lines)
