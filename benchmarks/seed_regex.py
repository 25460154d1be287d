"""The seed notebook's label parser, kept as the baseline `benchmarks/parser.py` beats.

A faithful copy of `extract_classification` from the original notebook: the same four
regular expressions tried in the same order, the same 100-character window after "FINAL
CLASSIFICATION", the same `*` stripping and `UNKNOWN` fallback. The only change is the
input: the notebook received the OpenAI `choices` JSON and read
`choices[0]["message"]["content"]`; here the function takes that content string directly
(`extract_classification_from_choices` keeps the original signature for reference).
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["SEED_PATTERNS", "extract_classification", "extract_classification_from_choices"]

SEED_PATTERNS = (
    r"classification is[:\s]*(NORMAL|ABNORMAL_HEARTBEAT|MYOCARDIAL_INFARCTION|POST_MI)",
    r"classified as[:\s]*(NORMAL|ABNORMAL_HEARTBEAT|MYOCARDIAL_INFARCTION|POST_MI)",
    r"the ECG is[:\s]*(NORMAL|ABNORMAL_HEARTBEAT|MYOCARDIAL_INFARCTION|POST_MI)",
    r"FINAL CLASSIFICATION[:\s\S]{0,100}(NORMAL|ABNORMAL_HEARTBEAT|MYOCARDIAL_INFARCTION|POST_MI)",
)


def extract_classification(content: str | None) -> str:
    """The seed's rules applied to one answer text; `UNKNOWN` when nothing matches."""
    try:
        content = (content or "").replace("*", "")
        for pattern in SEED_PATTERNS:
            match = re.search(pattern, content, re.IGNORECASE)
            if match:
                return match.group(1).upper().replace(" ", "_")
    except Exception:
        pass
    return "UNKNOWN"


def extract_classification_from_choices(choices_data: Any) -> str:
    """The notebook's original entry point: OpenAI `choices` as JSON text or a list."""
    try:
        choices = json.loads(choices_data) if isinstance(choices_data, str) else choices_data
        if choices and len(choices) > 0:
            return extract_classification(choices[0].get("message", {}).get("content", ""))
    except Exception:
        pass
    return "UNKNOWN"
