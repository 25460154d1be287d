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

import logging
import os
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

logger = logging.getLogger(__name__)

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

    Symbolic links are followed, folders included (a class folder linked to a share is
    read). A broken link named like an image (missing target, or a loop) stays a record,
    so it fails as that record's error instead of silently shrinking the dataset; a broken
    link without a suffix (a class folder on an unmounted share) raises `DatasetError`.
    A folder link that leads back into a folder already visited is skipped (a loop).
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
            found = [
                path
                for path in self._walk()
                if path.suffix.lower() in self.extensions
                and (self.is_valid_file is None or self.is_valid_file(path))
            ]
            self._paths = sorted(found, key=lambda p: p.relative_to(self.root).as_posix())
        return self._paths

    def _walk(self) -> Iterator[Path]:
        """Every file (or broken link) under root, links followed, hidden parts skipped."""
        visited: set[tuple[int, int]] = set()
        # `Path.glob("**")` neither follows folder links nor reports broken ones: a class
        # folder linked to an unmounted share would vanish without a word.
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            here = Path(dirpath)
            stat = here.stat()
            if (stat.st_dev, stat.st_ino) in visited:
                logger.warning("skipping %s: a folder link that loops back", here)
                dirnames.clear()
                continue
            visited.add((stat.st_dev, stat.st_ino))
            depth = len(here.relative_to(self.root).parts)
            dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
            if not self.recursive and depth >= 1:
                dirnames.clear()
            for name in sorted(filenames):
                path = here / name
                if name.startswith("."):
                    continue
                if path.is_file():
                    yield path
                elif path.is_symlink():
                    yield from self._broken_link(path)

    def _broken_link(self, path: Path) -> Iterator[Path]:
        if path.suffix.lower() in self.extensions:
            yield path  # a record that fails with its own error
        elif not path.suffix:
            raise DatasetError(
                f"{path} is a broken symbolic link (to {os.readlink(path)}): if it is a class "
                "folder on a share, mount the share; otherwise remove the link"
            )

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
            metadata = {"folder": path.parent.name}
            if path.is_symlink() and not path.exists():
                metadata["load_error"] = (
                    f"broken symbolic link to {os.readlink(path)} (missing target or a loop)"
                )
            yield Record(
                id=rel,
                image=ImageRef.from_path(path),
                label=label if isinstance(label, str) else None,
                metadata=metadata,
            )

    def __len__(self) -> int:
        return sum(1 for path in self._scan() if self.label_for(path) is not False)

    def class_counts(self) -> dict[str | None, int]:
        """Images per label, for a quick look before a run."""
        counts: dict[str | None, int] = {}
        for record in self:
            counts[record.label] = counts.get(record.label, 0) + 1
        return counts
