"""Find copies of the same image, and the copies that disagree on the label.

Public image sets are full of copies: the Kaggle ECG set has 928 files but only about 491
distinct images (the MI class about 30). Evaluating on copies counts one image many times and
narrows confidence intervals that should be wide; copies filed under two classes (label
conflicts) make some errors unavoidable. So:

```
find_duplicates(ds)            → DuplicateReport: groups of records with the same content
  .groups                        exact copies (same SHA-256 of the file bytes)
  .conflicts                     groups whose copies carry different labels
  .near_groups                   (near=True) same picture, different bytes (re-encoded,
                                 resized), by the correlation of small grey thumbnails
dedupe(ds, keep="first")       → Dataset with one record per content
```

Example:
    ```python
    report = find_duplicates(dataset)
    print(report.summary())
    # 928 records, 491 distinct images: 437 copies in 120 groups, 3 label conflicts
    unique = dedupe(dataset)
    ```
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from medbatch.datasets.base import Dataset
from medbatch.errors import ImageLoadError
from medbatch.records import ImageRef, Record, RecordError

__all__ = [
    "DuplicateGroup",
    "DuplicateReport",
    "dedupe",
    "find_duplicates",
    "perceptual_signature",
]


class DuplicateGroup(BaseModel):
    """Records that hold the same image.

    Attributes:
        key: The SHA-256 of the content (exact groups) or of the first member's perceptual
            signature (near groups).
        kind: `exact` (byte-identical) or `near` (same picture, different bytes).
        record_ids: The members, in dataset order; the first is the one `dedupe` keeps.
        labels: Each member's label, aligned with `record_ids`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    kind: Literal["exact", "near"] = "exact"
    record_ids: tuple[str, ...]
    labels: tuple[str | None, ...]

    @property
    def distinct_labels(self) -> tuple[str, ...]:
        """The different (non-missing) labels the copies carry, sorted."""
        return tuple(sorted({label for label in self.labels if label is not None}))

    @property
    def is_conflict(self) -> bool:
        """True when copies of one image carry different labels."""
        return len(self.distinct_labels) > 1


class DuplicateReport(BaseModel):
    """What `find_duplicates` found.

    Attributes:
        total: Records looked at.
        distinct: Distinct contents among the readable records.
        groups: Exact-copy groups (two or more records each).
        near_groups: Near-duplicate groups, when asked for; they may include exact copies'
            representatives but never two records of one exact group.
        unreadable: `(record_id, reason)` for records whose bytes could not be read.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    total: int
    distinct: int
    groups: tuple[DuplicateGroup, ...] = ()
    near_groups: tuple[DuplicateGroup, ...] = ()
    unreadable: tuple[tuple[str, str], ...] = Field(default=())

    @property
    def conflicts(self) -> tuple[DuplicateGroup, ...]:
        """Groups (exact and near) whose copies carry different labels."""
        return tuple(group for group in (*self.groups, *self.near_groups) if group.is_conflict)

    @property
    def copies(self) -> int:
        """Records that repeat an earlier record's exact content (what `dedupe` drops)."""
        return sum(len(group.record_ids) - 1 for group in self.groups)

    def summary(self) -> str:
        """One line for logs and the CLI."""
        text = (
            f"{self.total} records, {self.distinct} distinct images: "
            f"{self.copies} copies in {len(self.groups)} groups, "
            f"{len(self.conflicts)} label conflicts"
        )
        if self.near_groups:
            text += f", {len(self.near_groups)} near-duplicate groups"
        if self.unreadable:
            text += f", {len(self.unreadable)} unreadable"
        return text

    def record_errors(self) -> list[RecordError]:
        """One `RecordError` per copy (`duplicate`) and per conflicting copy
        (`label_conflict`), each naming the record it repeats. Not retryable."""
        errors: list[RecordError] = []
        for group in (*self.groups, *self.near_groups):
            first = group.record_ids[0]
            what = "the same image" if group.kind == "exact" else "nearly the same image"
            for record_id in group.record_ids[1:]:
                errors.append(
                    RecordError(
                        record_id=record_id,
                        kind="duplicate" if group.kind == "exact" else "near_duplicate",
                        message=f"{what} as {first}",
                        retryable=False,
                    )
                )
            if group.is_conflict:
                labelled = ", ".join(
                    f"{rid}={label}"
                    for rid, label in zip(group.record_ids, group.labels, strict=True)
                )
                errors.append(
                    RecordError(
                        record_id=first,
                        kind="label_conflict",
                        message=f"copies of {what.removeprefix('the same ')} carry different "
                        f"labels: {labelled}",
                        retryable=False,
                    )
                )
        return errors


def perceptual_signature(image: Image.Image, size: int = 128) -> npt.NDArray[np.float32]:
    """A unit vector describing what a picture looks like, robust to re-encoding and resizing.

    The picture is resampled to `size × size` grey pixels, centred and normalised; two
    signatures' dot product is their correlation (1.0 for the same picture). Bit hashes
    (average or difference hash) were tried first and fail on ECG pages: most of a page is
    flat paper whose bits flip with JPEG noise, so a re-encoded copy differed from its source
    by more bits than two different patients' ECGs did. Averaging keeps the traces.

    Args:
        image: Any PIL image.
        size: Thumbnail side in pixels; 128 separates distinct ECG pages (correlation
            below 0.9) from re-encoded copies (above 0.99).

    Returns:
        A float32 vector of `size²` values with zero mean and unit norm (all zeros for a
        blank picture).
    """
    # Resample to a fixed 4× grid first so the box average sees the same samples whatever
    # the source size (a straight box-down from 553 or 400 px aliases thin traces apart).
    grey = image.convert("L").resize((4 * size, 4 * size), Image.Resampling.LANCZOS)
    grey = grey.resize((size, size), Image.Resampling.BOX)
    values = np.asarray(grey, dtype=np.float32).ravel()
    values -= values.mean()
    norm = float(np.linalg.norm(values))
    signature: npt.NDArray[np.float32] = values / norm if norm > 0 else values
    return signature


def _signature(ref: ImageRef, size: int) -> npt.NDArray[np.float32]:
    from medbatch.images import load_image

    # A 128 px thumbnail does not need full-size decoding: 512 px is ~10× faster on scans.
    return perceptual_signature(load_image(ref, max_side=512), size)


def find_duplicates(
    records: Iterable[Record],
    *,
    near: bool = False,
    min_similarity: float = 0.97,
    signature_size: int = 128,
) -> DuplicateReport:
    """Group records by content.

    Exact duplicates share the SHA-256 of their bytes (remote images use their known
    checksum). With `near=True`, one representative per exact group is also decoded and
    pictures whose `perceptual_signature`s correlate at `min_similarity` or more are grouped.

    Args:
        records: A dataset or any iterable of records.
        near: Also look for near-duplicates (decodes every distinct image: slower).
        min_similarity: Correlation from which two pictures count as the same; re-encoded
            or resized copies score above 0.99, distinct ECG pages below 0.9.
        signature_size: Thumbnail side of the signature.

    Returns:
        The report; unreadable records are listed in it, never raised.
    """
    by_key: dict[str, list[Record]] = {}
    total = 0
    unreadable: list[tuple[str, str]] = []
    for record in records:
        total += 1
        try:
            key = record.image.sha256
        except ImageLoadError as exc:
            unreadable.append((record.id, str(exc)))
            continue
        by_key.setdefault(key, []).append(record)
    groups = tuple(
        _group(key, members, "exact") for key, members in by_key.items() if len(members) > 1
    )
    near_groups: tuple[DuplicateGroup, ...] = ()
    if near:
        representatives = [members[0] for members in by_key.values()]
        near_groups = _near_groups(representatives, signature_size, min_similarity, unreadable)
    return DuplicateReport(
        total=total,
        distinct=len(by_key),
        groups=groups,
        near_groups=near_groups,
        unreadable=tuple(unreadable),
    )


def _group(key: str, members: Sequence[Record], kind: Literal["exact", "near"]) -> DuplicateGroup:
    return DuplicateGroup(
        key=key,
        kind=kind,
        record_ids=tuple(record.id for record in members),
        labels=tuple(record.label for record in members),
    )


def _near_groups(
    representatives: Sequence[Record],
    size: int,
    min_similarity: float,
    unreadable: list[tuple[str, str]],
) -> tuple[DuplicateGroup, ...]:
    hashed: list[Record] = []
    signatures: list[npt.NDArray[np.float32]] = []
    for record in representatives:
        try:
            signatures.append(_signature(record.image, size))
        except ImageLoadError as exc:
            unreadable.append((record.id, str(exc)))
            continue
        hashed.append(record)
    if len(hashed) < 2:
        return ()
    matrix = np.stack(signatures)
    similar = np.triu(matrix @ matrix.T >= min_similarity, k=1)
    parent = list(range(len(hashed)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(similar), strict=True):
        root_i, root_j = find(int(i)), find(int(j))
        if root_i != root_j:
            parent[max(root_i, root_j)] = min(root_i, root_j)
    clusters: dict[int, list[Record]] = {}
    for index, record in enumerate(hashed):
        clusters.setdefault(find(index), []).append(record)
    return tuple(
        _group(f"near:{members[0].image.sha256}", members, "near")
        for members in clusters.values()
        if len(members) > 1
    )


class _DedupedDataset(Dataset):
    def __init__(
        self, base: Dataset, keep_ids: set[str], notes: dict[str, dict[str, object]]
    ) -> None:
        self.base = base
        self.labels = base.labels
        self._keep = keep_ids
        self._notes = notes

    def __iter__(self) -> Iterator[Record]:
        for record in self.base:
            if record.id not in self._keep:
                continue
            note = self._notes.get(record.id)
            yield (
                record.model_copy(update={"metadata": {**record.metadata, **note}})
                if note
                else record
            )

    def __len__(self) -> int:
        return len(self._keep)


def dedupe(
    dataset: Dataset,
    keep: Literal["first", "last"] = "first",
    *,
    conflicts: Literal["keep", "drop"] = "keep",
    report: DuplicateReport | None = None,
) -> Dataset:
    """One record per distinct content.

    The kept record gains `metadata["copies"]` (the ids dropped in its favour) and, for a
    label conflict, `metadata["conflicting_labels"]`. Unreadable records are kept so that a
    run reports them as errors instead of silently shrinking the set.

    Args:
        dataset: The dataset to thin.
        keep: Keep the first or the last copy in dataset order.
        conflicts: `keep` one copy of a conflicting image (with its own label) or `drop`
            every copy of it, since its truth is uncertain.
        report: A report already computed for `dataset` (saves reading the images again).

    Returns:
        A lazy dataset over `dataset`'s records, same order, copies removed.
    """
    report = report or find_duplicates(dataset)
    dropped: set[str] = set()
    notes: dict[str, dict[str, object]] = {}
    for group in report.groups:
        ids = list(group.record_ids)
        kept = ids[0] if keep == "first" else ids[-1]
        dropped.update(rid for rid in ids if rid != kept)
        if group.is_conflict and conflicts == "drop":
            dropped.add(kept)
            continue
        notes[kept] = {"copies": [rid for rid in ids if rid != kept]}
        if group.is_conflict:
            notes[kept]["conflicting_labels"] = list(group.distinct_labels)
    keep_ids = {record.id for record in dataset if record.id not in dropped}
    return _DedupedDataset(dataset, keep_ids, notes)
