"""The sampling of `medbatch run`; it lives in `medbatch.datasets.sampling`."""

from __future__ import annotations

from medbatch.datasets.sampling import sample_dataset

__all__ = ["sample_dataset"]
