"""One-line messages for pydantic validation errors, shared by config loading and runners.

An unknown key gets a did-you-mean and the list of known keys, so a typo in a TOML file and
a typo in `VLLMRunner(max_modle_len=...)` read the same way.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = ["did_you_mean", "first_error"]


def first_error(exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    """Every error of `exc` on one line; an unknown key gets a did-you-mean."""
    parts = []
    for error in exc.errors():
        loc = error["loc"]
        where = ".".join(str(item) for item in loc) or "value"
        if error["type"] == "extra_forbidden" and model is not None:
            known = _field_names(model, loc[:-1])
            parts.append(f"unknown key {where!r}{did_you_mean(str(loc[-1]), known)}")
        else:
            parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def _field_names(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The field names of the (nested) model at `loc`, or [] where it is not a model."""
    current: Any = model
    for part in loc:
        field = current.model_fields.get(str(part)) if hasattr(current, "model_fields") else None
        if field is None:
            return []
        current = field.annotation
        # `X | None` fields: look inside for the model.
        for arg in getattr(current, "__args__", ()):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                current = arg
    return list(getattr(current, "model_fields", {}))


def did_you_mean(name: str, known: list[str]) -> str:
    """` (did you mean 'x'?); known keys: ...` for an unknown `name`, or '' with no keys."""
    if not known:
        return ""
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; known keys: {', '.join(sorted(known))}"
