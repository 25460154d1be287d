"""`Task`: everything that makes one classification problem, bundled.

A task is a label set, prompts, a parser and how its datasets are laid out. The same
pipeline serves ECGs, chest X-rays or skin lesions by swapping the task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal

from medbatch.errors import UnknownNameError
from medbatch.labels import LabelSet
from medbatch.parsing.base import LabelParser
from medbatch.prompts.base import PromptTemplate
from medbatch.records import GenerationParams, LabelConstraint

__all__ = ["Task"]


@dataclass(frozen=True)
class Task:
    """One classification problem.

    Attributes:
        name: Registry name, e.g. `ecg`.
        labels: The classes.
        prompts: Prompt versions by name (e.g. `cot-v1`, `direct-v1`).
        prompt_version: The version `prompt` returns.
        parser: Reads labels from free-text answers.
        folder_map: Dataset folder name → label name (for `ImageFolderDataset`, Kaggle,
            stages).
        constrained_prompt_version: The version to use with constrained decoding (a short
            direct-answer prompt), when different from `prompt_version`.
        params: Default generation parameters for this task.
        description: One line for `medbatch tasks`.

    Example:
        >>> from medbatch import get_task
        >>> task = get_task("ecg")
        >>> task.with_prompt("direct-v1").prompt.fingerprint != task.prompt.fingerprint
        True
    """

    name: str
    labels: LabelSet
    prompts: Mapping[str, PromptTemplate]
    prompt_version: str
    parser: LabelParser
    folder_map: Mapping[str, str] = field(default_factory=dict)
    constrained_prompt_version: str | None = None
    params: GenerationParams = field(default_factory=GenerationParams)
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompts", MappingProxyType(dict(self.prompts)))
        object.__setattr__(self, "folder_map", MappingProxyType(dict(self.folder_map)))
        self._check_version(self.prompt_version)
        if self.constrained_prompt_version is not None:
            self._check_version(self.constrained_prompt_version)
        unknown = set(self.folder_map.values()) - set(self.labels.names)
        if unknown:
            raise ValueError(f"folder_map of task {self.name} names unknown labels {unknown}")

    def _check_version(self, version: str) -> None:
        if version not in self.prompts:
            raise UnknownNameError(f"prompt version of task {self.name}", version, self.prompts)

    @property
    def prompt(self) -> PromptTemplate:
        """The selected prompt template."""
        return self.prompts[self.prompt_version]

    def with_prompt(self, version: str) -> Task:
        """The same task with another prompt version selected."""
        self._check_version(version)
        return replace(self, prompt_version=version)

    def for_constrained_decoding(self) -> Task:
        """The task with its constrained-decoding prompt selected (if it has one)."""
        if self.constrained_prompt_version is None:
            return self
        return self.with_prompt(self.constrained_prompt_version)

    def constraint(self, mode: Literal["choice", "json", "score"] = "choice") -> LabelConstraint:
        """A `LabelConstraint` over this task's labels."""
        return LabelConstraint(labels=self.labels.names, mode=mode, reasoning=mode == "json")
