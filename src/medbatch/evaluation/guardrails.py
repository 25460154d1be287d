"""Guardrail counts of a predictions table: constraint validity, unseen images, re-prompts.

Must not import the metric or bootstrap modules of `medbatch.evaluation`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from medbatch.store import RunManifest

__all__ = ["Guardrails", "guardrail_summary"]


class Guardrails(BaseModel):
    """What the guardrails saw: constraint validity, unseen images, re-prompts, canary.

    Attributes:
        constrained: The run asked for constrained decoding.
        constraint_valid: Constrained answers that came back as a valid label.
        constraint_ignored: Constrained answers outside the label set (the back-end ignored
            the constraint; the parser read them as a fallback and the rows are flagged).
        constraint_validity: `valid / (valid + ignored)`, None when not constrained.
        image_not_seen: Rows whose prompt tokens show the image never reached the model.
        reprompted: Rows whose verdict came from the corrective follow-up turn.
        canary: The canary report from the manifest, when a canary ran.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    constrained: bool = False
    constraint_valid: int = 0
    constraint_ignored: int = 0
    constraint_validity: float | None = None
    image_not_seen: int = 0
    reprompted: int = 0
    canary: dict[str, Any] | None = None


def guardrail_summary(frame: pd.DataFrame, manifest: RunManifest | None = None) -> Guardrails:
    """Count the guardrail flags of a predictions table (and the manifest's canary)."""
    # Hand-built frames may lack the provenance columns: absent means "no flags".
    methods = frame.get("method", pd.Series(dtype=str)).astype(str)
    flags: list[dict[str, Any]] = []
    for value in frame.get("metadata", pd.Series(dtype=object)):
        if isinstance(value, str) and value:
            flags.append(json.loads(value))
        elif isinstance(value, dict):
            flags.append(value)
    valid = int((methods == "constrained").sum())
    ignored = sum(1 for meta in flags if meta.get("constraint_ignored"))
    constrained = bool(manifest.constrained) if manifest is not None else (valid + ignored) > 0
    return Guardrails(
        constrained=constrained,
        constraint_valid=valid,
        constraint_ignored=ignored,
        constraint_validity=valid / (valid + ignored) if constrained and valid + ignored else None,
        image_not_seen=sum(1 for meta in flags if meta.get("image_not_seen")),
        reprompted=int(methods.str.startswith("reprompt:").sum()),
        canary=manifest.canary if manifest is not None else None,
    )
