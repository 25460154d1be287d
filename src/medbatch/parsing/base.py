"""The `LabelParser` contract: read a label from a model's answer.

Write your own by implementing `parse`:

```python
class FirstWord(LabelParser):
    def parse(self, text, *, finish_reason=None):
        label = self.labels.normalize((text or "").split()[0]) if text and text.split() else None
        return ParseResult(label=label, status="parsed" if label else "unparseable",
                           method="first-word")
```
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from medbatch.labels import LabelSet
from medbatch.records import ParseResult

__all__ = ["LabelParser"]


class LabelParser(ABC):
    """Turns answer text into a `ParseResult`.

    Promises:
        - `parse` never raises, whatever the string (or None).
        - The returned label is a name of `labels`, or None.
        - A label is returned only with status `parsed`; every other status carries None.
          Guessing is worse than saying "unparseable": a wrong label silently corrupts
          accuracy, an unparsed one is counted in coverage.
    """

    def __init__(self, labels: LabelSet) -> None:
        self.labels = labels

    @abstractmethod
    def parse(self, text: str | None, *, finish_reason: str | None = None) -> ParseResult:
        """Read the final verdict from `text`.

        Args:
            text: The model's answer; None or empty when the back-end returned nothing.
            finish_reason: The back-end's finish reason; `"length"` means the answer was
                cut off by `max_tokens`, so a missing verdict is `truncated`.

        Returns:
            The label (or None), the status, the method that decided and its evidence.

        Example:
            >>> from medbatch.labels import LabelSet
            >>> from medbatch.parsing.answer import FinalAnswerParser
            >>> parser = FinalAnswerParser(LabelSet.from_names(["NORMAL", "POST_MI"]))
            >>> parser.parse("... FINAL CLASSIFICATION: **POST_MI**").label
            'POST_MI'
        """
