"""The `Dataset` contract: where records come from.

Write your own by implementing `__iter__`:

```python
class OneImage(Dataset):
    def __iter__(self):
        yield Record(id="x1", image=ImageRef.from_path("x1.png"), label="NORMAL")
```
"""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from medbatch.labels import LabelSet
from medbatch.records import Record, RecordError

if TYPE_CHECKING:
    from medbatch.tasks.base import Task

__all__ = ["Dataset", "ListDataset", "SubsetDataset"]


class Dataset(ABC):
    """A finite, re-iterable sequence of `Record`s with unique ids.

    Promises:
        - `__iter__` yields records in a deterministic order, lazily: images are referenced,
          not loaded, so a dataset of any size fits in memory.
        - Every record id is unique.
        - `labels` is the label set ground truth is drawn from, or None when unknown.

    Only `__iter__` is abstract; `__len__`, `validate`, `sample` and `fingerprint` have
    working defaults that iterate the dataset.
    """

    labels: LabelSet | None = None

    @abstractmethod
    def __iter__(self) -> Iterator[Record]:
        """Yield every record once, in a deterministic order."""

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @classmethod
    def from_options(cls, options: Mapping[str, Any], task: Task | None = None) -> Dataset:
        """Build from a `[dataset]` table of a run config (keys are constructor arguments).

        Subclasses override this to take defaults from the task (its folder map, labels).
        """
        return cls(**options)

    def validate(self) -> list[RecordError]:
        """Pre-flight checks before anything is uploaded or run.

        Unreadable, truncated, empty or non-image files, decompression bombs, extreme sizes,
        unknown labels, duplicate ids, copies of the same image and copies with conflicting
        labels. Each problem names its record; an empty list means clean. For the full
        report (counts per class, a table for the terminal) use
        `medbatch.datasets.validation.validate_dataset`.
        """
        from medbatch.datasets.validation import validate_dataset

        return validate_dataset(self, labels=self.labels).record_errors()

    def fingerprint(self) -> str:
        """A hash of the ids, labels and image locations, for the run manifest."""
        digest = hashlib.sha256()
        for record in self:
            location = record.image.path or record.image.url or record.image.stage_path or ""
            digest.update(f"{record.id}\0{record.label}\0{location}\n".encode())
        return digest.hexdigest()[:16]

    def filter(self, keep: Callable[[Record], bool]) -> Dataset:
        """The records for which `keep(record)` is true, in the same order."""
        return ListDataset([record for record in self if keep(record)], labels=self.labels)

    def sample(self, n_per_class: int, *, seed: int = 0) -> Dataset:
        """A stratified, seeded sample: at most `n_per_class` records of each label.

        Records without a label form their own stratum. The same seed always gives the same
        records, in the dataset's order (the notebook's `random.sample` was unseeded).
        """
        if n_per_class <= 0:
            raise ValueError("n_per_class must be positive")
        by_label: dict[str | None, list[int]] = defaultdict(list)
        records = list(self)
        for index, record in enumerate(records):
            by_label[record.label].append(index)
        rng = random.Random(seed)
        chosen: set[int] = set()
        for label in sorted(by_label, key=lambda name: (name is None, name or "")):
            indices = by_label[label]
            chosen.update(rng.sample(indices, min(n_per_class, len(indices))))
        return ListDataset([records[i] for i in sorted(chosen)], labels=self.labels)


class ListDataset(Dataset):
    """A dataset over records already built in memory (small sets, tests, samples)."""

    def __init__(self, records: Iterable[Record], *, labels: LabelSet | None = None) -> None:
        self._records = list(records)
        self.labels = labels

    def __iter__(self) -> Iterator[Record]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)


class SubsetDataset(Dataset):
    """The first `limit` records of another dataset, without materialising it."""

    def __init__(self, base: Dataset, limit: int) -> None:
        self.base = base
        self.limit = limit
        self.labels = base.labels

    def __iter__(self) -> Iterator[Record]:
        for index, record in enumerate(self.base):
            if index >= self.limit:
                return
            yield record
