"""`SnowflakeStageDataset`: images already on a stage, labelled by their class folder.

```
@DB.PUBLIC.ECG_STAGE/ecg/
├── normal_ecg_images/Normal_1_-3f9c….jpg        ─┐ folder → label via the task's
└── myocardial_infarction_ecg_images/MI_1_-0be2….jpg ┘ folder_map (nearest folder wins)
```

One `LS` lists the stage (lazily, on first iteration); images stay on the stage and reach
the model by stage path, never downloaded.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Any

from medbatch.datasets.base import Dataset
from medbatch.datasets.folder import IMAGE_EXTENSIONS
from medbatch.labels import LabelSet
from medbatch.records import ImageRef, Record
from medbatch.snowflake.identifiers import StageLocation
from medbatch.snowflake.stage import StageFile, list_stage

__all__ = ["SnowflakeStageDataset"]


class SnowflakeStageDataset(Dataset):
    """Images on a Snowflake stage; record ids are paths relative to `location`.

    Args:
        session: A Snowpark session.
        location: `@STAGE/path` to list, e.g. `@MEDGEMMA_DEMO.PUBLIC.ECG_STAGE/ecg`.
        folder_map: Folder name → label (e.g. `get_task("ecg").folder_map`). Files in no
            mapped folder get `label=None`, or are skipped when `unlabelled` is False.
        labels: The label set, for validation and evaluation.
        extensions: File suffixes that count as images.
        unlabelled: Keep images outside every mapped folder (with `label=None`).

    Example:
        ```python
        task = get_task("ecg")
        ds = SnowflakeStageDataset(session, "@DB.PUBLIC.ECG_STAGE/ecg",
                                   folder_map=task.folder_map, labels=task.labels)
        ```
    """

    def __init__(
        self,
        session: Any,
        location: str | StageLocation,
        *,
        folder_map: Mapping[str, str] | None = None,
        labels: LabelSet | None = None,
        extensions: Collection[str] = IMAGE_EXTENSIONS,
        unlabelled: bool = False,
    ) -> None:
        self.session = session
        self.location = (
            location if isinstance(location, StageLocation) else StageLocation.parse(location)
        )
        self.folder_map = dict(folder_map or {})
        self.labels = labels
        self.extensions = {e.lower() for e in extensions}
        self.unlabelled = unlabelled
        self._files: list[StageFile] | None = None

    def _listing(self) -> list[StageFile]:
        if self._files is None:
            self._files = sorted(list_stage(self.session, self.location), key=lambda f: f.path)
        return self._files

    def _label(self, path: str) -> str | None:
        folders = path.split("/")[:-1]
        for folder in reversed(folders):
            if folder in self.folder_map:
                return self.folder_map[folder]
        if not self.folder_map and folders:
            return folders[-1]
        return None

    def __iter__(self) -> Iterator[Record]:
        for stage_file in self._listing():
            name = stage_file.path.rsplit("/", 1)[-1]
            if "." + name.rsplit(".", 1)[-1].lower() not in self.extensions:
                continue
            label = self._label(stage_file.path)
            if label is None and not self.unlabelled:
                continue
            checksum = f"md5:{stage_file.md5}" if stage_file.md5 else None
            yield Record(
                id=stage_file.path,
                image=ImageRef.from_stage(stage_file.url, checksum=checksum),
                label=label,
                metadata={
                    "folder": stage_file.path.rsplit("/", 1)[0] if "/" in stage_file.path else ""
                },
            )
