"""The `PromptTemplate` contract: turn a record into chat messages.

Write your own by implementing `render` and `definition`:

```python
class Terse(PromptTemplate):
    def definition(self):
        return {"text": "Label this X-ray: NORMAL or PNEUMONIA."}
    def render(self, record):
        return (ChatMessage(role="user", content=(TextPart(text=self.definition()["text"]),
                                                   ImagePart(image=record.image))),)
```
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from functools import cached_property
from typing import TYPE_CHECKING, Any

from medbatch.records import ChatMessage, Record

if TYPE_CHECKING:
    from medbatch.profiles import ModelProfile

__all__ = ["PromptTemplate"]


class PromptTemplate(ABC):
    """Renders the messages sent to the model for one record.

    Promises:
        - `render` is pure: the same record always gives the same messages.
        - `fingerprint` changes whenever the rendered text could change, so results always
          know which prompt made them (and resume never mixes prompts).
    """

    @abstractmethod
    def render(self, record: Record) -> tuple[ChatMessage, ...]:
        """The chat messages for `record`, images included as `ImagePart`s.

        Args:
            record: The record to classify.

        Returns:
            Messages in order (system first when there is one).
        """

    @abstractmethod
    def definition(self) -> dict[str, Any]:
        """Everything that determines the rendered text, as JSON-serialisable data."""

    def for_profile(self, profile: ModelProfile) -> PromptTemplate:
        """This prompt adapted to a model's profile (e.g. no system role); `self` by default.

        `classify` calls it once before a run. Override it when the rendered messages must
        change with the model (the fingerprint then changes with them).

        Args:
            profile: The profile of the model the prompt is sent to.

        Returns:
            The prompt to render with: `self`, or an adapted copy.
        """
        return self

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of `definition()`."""
        payload = json.dumps(self.definition(), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]
