"""The bundled illustrative ECG run, where it lived before 0.2.

It moved to `medbatch.testing.ecg_sample`: it builds a `ReplayRunner`, and `datasets` does
not import runners. The names load from there on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medbatch.testing.ecg_sample import ILLUSTRATIVE_MODEL_ID, load_ecg_sample

__all__ = ["ILLUSTRATIVE_MODEL_ID", "load_ecg_sample"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from medbatch.testing import ecg_sample

        return getattr(ecg_sample, name)
    raise AttributeError(f"module 'medbatch.datasets.sample' has no attribute {name!r}")
