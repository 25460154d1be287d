"""What kind of run a report describes: a random-weight test model, or illustrative answers.

Must not import the rest of `medbatch.report` (the CLI imports these two checks on their own).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from medbatch.store import RunManifest

__all__ = ["RANDOM_MODEL_MARKER", "is_illustrative", "is_random_model"]

RANDOM_MODEL_MARKER = "medbatch_tiny_vlm.json"
"""File that `medbatch.testing.tiny_vlm` writes into the random-weight model's folder."""


def is_random_model(manifest: RunManifest | None) -> bool:
    """Whether a run used a random-weight test model (its answers mean nothing).

    True when the manifest says so (`random_weights: true`, as `medbatch demo` and the
    `medbatch/tiny-gemma3` runner record), or the model folder holds the marker that
    `medbatch.testing.tiny_vlm` writes.
    """
    if manifest is None:
        return False
    demo = manifest.demo or {}
    # A top-level `random_weights` extra is how a third party may say it, too.
    legacy = (manifest.model_extra or {}).get("random_weights")
    if legacy or demo.get("random_weights"):
        return True
    runner = manifest.runner if isinstance(manifest.runner, Mapping) else {}
    if runner.get("random_weights") or manifest.model_id == "medbatch/tiny-gemma3":
        return True
    try:
        return (Path(manifest.model_id) / RANDOM_MODEL_MARKER).is_file()
    except (OSError, ValueError):
        return False


def is_illustrative(manifest: RunManifest | None) -> bool:
    """Whether a run replayed the bundled illustrative answers (written, not generated).

    True when the manifest says so (`illustrative: true`, as `medbatch demo --replay`
    records) or its model id is `medbatch.datasets.sample.ILLUSTRATIVE_MODEL_ID`.
    """
    if manifest is None:
        return False
    from medbatch.datasets.sample import ILLUSTRATIVE_MODEL_ID

    return manifest.illustrative or manifest.model_id == ILLUSTRATIVE_MODEL_ID
