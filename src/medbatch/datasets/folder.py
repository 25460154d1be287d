"""`ImageFolderDataset`: one sub-folder per class, like torchvision's `ImageFolder`.

```
root/
├── normal_ecg_images/          ─┐ folder name → label via `label_map`
│   ├── Normal(1).jpg            │ (or the folder name itself when no map is given)
│   └── Normal(2).jpg            │
└── myocardial_infarction_ecg_images/
    └── MI(1).jpg
```
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medbatch.datasets.base import Dataset
from medbatch.errors import DatasetError
from medbatch.labels import LabelSet
from medbatch.records import ImageRef, Record

if TYPE_CHECKING:
    from medbatch.tasks.base import Task

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset"]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
)


class ImageFolderDataset(Dataset):
    """Images under `root`, labelled by the name of the folder that holds them.

    Args:
        root: The dataset folder.
        label_map: Folder name → label name. Folders not in the map are skipped when a map
            is given (so stray folders such as `__MACOSX` do not become classes); without
            a map each folder name is its label.
        labels: The label set, for validation and evaluation.
        extensions: File suffixes (lower case, with dot) that count as images.
        recursive: Look for images in nested folders too; the label is taken from the
            nearest ancestor folder found in `label_map` (or the top-level class folder).
        is_valid_file: An extra filter on paths, as in torchvision.
        unlabelled: Yield images directly under `root` (and, with a map, those in unmapped
            folders) with `label=None` instead of skipping them.

    Record ids are the POSIX path relative to `root`, so they are stable across machines.
    Order is sorted by that id: deterministic.
    """

    def __init__(
        self,
        root: str | Path,
        label_map: Mapping[str, str] | None = None,
        *,
        labels: LabelSet | None = None,
        extensions: Collection[str] = IMAGE_EXTENSIONS,
        recursive: bool = True,
        is_valid_file: Callable[[Path], bool] | None = None,
        unlabelled: bool = False,
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetError(
                f"Couldn't find the dataset folder {self.root}: check the path "
                "(it should hold one sub-folder per class)"
            )
        self.label_map = dict(label_map) if label_map is not None else None
        self.labels = labels
        self.extensions = frozenset(ext.lower() for ext in extensions)
        self.recursive = recursive
        self.is_valid_file = is_valid_file
        self.unlabelled = unlabelled
        self._paths: list[Path] | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any], task: Task | None = None) -> Dataset:
        """Build from a `[dataset]` table; the task supplies `label_map` and `labels`.

        Keys: `root` (required), `label_map`, `extensions`, `recursive`, `unlabelled`.
        """
        options = dict(options)
        if "root" not in options:
            raise DatasetError("[dataset] kind 'folder' needs root = 'path/to/images'")
        if task is not None:
            options.setdefault("label_map", dict(task.folder_map) or None)
            options.setdefault("labels", task.labels)
        return cls(**options)

    def _scan(self) -> list[Path]:
        if self._paths is None:
            pattern = "**/*" if self.recursive else "*/*"
            found = [
                path
                for path in self.root.glob(pattern)
                if path.suffix.lower() in self.extensions
                and path.is_file()
                and not any(part.startswith(".") for part in path.relative_to(self.root).parts)
                and (self.is_valid_file is None or self.is_valid_file(path))
            ]
            if self.unlabelled:
                found += [
                    path
                    for path in self.root.glob("*")
                    if path.is_file() and path.suffix.lower() in self.extensions
                ]
            self._paths = sorted(set(found), key=lambda p: p.relative_to(self.root).as_posix())
        return self._paths

    def label_for(self, path: Path) -> str | bool | None:
        """The label of an image path; False when the image should be skipped."""
        folders = path.relative_to(self.root).parts[:-1]
        if not folders:
            return None if self.unlabelled else False
        if self.label_map is None:
            return folders[0]
        for folder in reversed(folders):
            if folder in self.label_map:
                return self.label_map[folder]
        return None if self.unlabelled else False

    def __iter__(self) -> Iterator[Record]:
        for path in self._scan():
            label = self.label_for(path)
            if label is False:
                continue
            rel = path.relative_to(self.root).as_posix()
            yield Record(
                id=rel,
                image=ImageRef.from_path(path),
                label=label if isinstance(label, str) else None,
                metadata={"folder": path.parent.name},
            )

    def __len__(self) -> int:
        return sum(1 for path in self._scan() if self.label_for(path) is not False)

    def class_counts(self) -> dict[str | None, int]:
        """Images per label, for a quick look before a run."""
        counts: dict[str | None, int] = {}
        for record in self:
            counts[record.label] = counts.get(record.label, 0) + 1
        return counts
