"""Helpers the test doubles share to imitate a constrained decoder."""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["last_label_named"]


def last_label_named(text: str, labels: Sequence[str]) -> str | None:
    """The label named last in `text` (whole words only), or None.

    The doubles coerce free text to a label the way a constrained decoder would end up:
    on the label the text settles on.
    """
    best: tuple[int, str] | None = None
    for label in labels:
        for match in re.finditer(rf"(?<!\w){re.escape(label)}(?!\w)", text):
            if best is None or match.start() > best[0]:
                best = (match.start(), label)
    return best[1] if best else None
