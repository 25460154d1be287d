"""Stratified, seeded, deduplicated sampling: what `medbatch run --per-class` draws.

```
dataset ──dedupe (unless --keep-duplicates)──▶ one record per image content
        ──Dataset.sample(--per-class N, --seed S)──▶ N records per label
        ──▶ manifest["sampling"]: what was done, so the sample can be drawn again
```

Copies are dropped *before* sampling, so a class of 30 distinct images filed 300 times still
gives N distinct images, never one image N times. The facts returned go to the run
manifest's `sampling` field.
"""

from __future__ import annotations

from typing import Any

from medbatch.datasets.base import Dataset

__all__ = ["sample_dataset"]


def sample_dataset(
    dataset: Dataset,
    *,
    per_class: int | None,
    seed: int = 0,
    keep_duplicates: bool = False,
) -> tuple[Dataset, dict[str, Any]]:
    """Deduplicate (by default) and draw a stratified, seeded sample.

    Args:
        dataset: The full dataset.
        per_class: Records per label; None keeps every record (copies are then left for the
            evaluation to report).
        seed: Seed of the sample: the same seed gives the same records.
        keep_duplicates: Keep copies of the same image when sampling.

    Returns:
        The sampled dataset and the facts for the manifest's `sampling` entry.
    """
    facts: dict[str, Any] = {"per_class": per_class, "seed": seed}
    if per_class is None:
        facts["deduplicated"] = False
        return dataset, facts
    if not keep_duplicates:
        from medbatch.datasets.duplicates import dedupe, find_duplicates

        report = find_duplicates(dataset)
        facts.update(
            deduplicated=True,
            records_before=report.total,
            duplicates_dropped=report.copies,
            label_conflicts=len(report.conflicts),
        )
        dataset = dedupe(dataset, report=report)
    else:
        facts["deduplicated"] = False
    sampled = dataset.sample(per_class, seed=seed)
    facts["records"] = len(sampled)
    return sampled, facts
