"""`ManifestDataset`: records listed in a CSV or parquet table.

```
manifest.csv                                   (relative paths resolve against its folder)
path,label,id,site,split
images/a.jpg,NORMAL,a,paris,test               → Record(id="a", label="NORMAL",
images/b.png,POST_MI,,lyon,train                        metadata={"site": "paris", "split": "test"})
/abs/c.jpg,,c,lyon,test                        → label None (unknown truth)
https://host/d.jpg,NORMAL,d,,test              → URL image (passed on, not downloaded)
@DB.SCHEMA.STAGE/e.jpg,NORMAL,e,,test          → Snowflake stage image
```

Only `path` is required. `id` defaults to the path as written; every other column becomes
metadata. Errors name the row (CSV line number) and what to fix.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medbatch.datasets.base import Dataset
from medbatch.errors import DatasetError
from medbatch.labels import LabelSet
from medbatch.records import ImageRef, Record

__all__ = ["ManifestDataset"]

_URL_PREFIXES = ("http://", "https://", "data:", "s3://", "gs://")


def _blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _plain(value: Any) -> Any:
    """A JSON-friendly Python value (numpy scalars and timestamps become plain types)."""
    if _blank(value):
        return None
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


class ManifestDataset(Dataset):
    """Images listed in a CSV or parquet manifest.

    Args:
        path: The manifest (`.csv`, `.tsv`, `.parquet` or `.pq`).
        labels: The label set records are validated against.
        path_column: Column holding the image location.
        label_column: Column holding the ground-truth label (optional column).
        id_column: Column holding the record id (optional column; defaults to the path).
        base_dir: Folder that relative paths resolve against; defaults to the manifest's.

    Raises:
        DatasetError: The manifest is missing or unreadable, lacks the path column, or a row
            has an empty path or a repeated id (the message names the row).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        labels: LabelSet | None = None,
        path_column: str = "path",
        label_column: str = "label",
        id_column: str = "id",
        base_dir: str | Path | None = None,
    ) -> None:
        self.path = Path(path).expanduser()
        self.labels = labels
        self.base_dir = Path(base_dir) if base_dir is not None else self.path.parent
        self._records = self._load(path_column, label_column, id_column)

    def _read_table(self) -> tuple[list[dict[str, Any]], str, int]:
        """The rows, the word for a row position, and the number of the first data row."""
        import pandas as pd

        if not self.path.is_file():
            raise DatasetError(f"Couldn't find the manifest {self.path}")
        suffix = self.path.suffix.lower()
        try:
            if suffix in (".parquet", ".pq"):
                frame = pd.read_parquet(self.path)
                where, first = "row", 1
            elif suffix in (".csv", ".tsv", ".txt"):
                # Strings throughout: ids like "007" and labels like "NA" must stay as written.
                frame = pd.read_csv(
                    self.path,
                    sep="\t" if suffix == ".tsv" else ",",
                    dtype=str,
                    keep_default_na=False,
                    skipinitialspace=True,
                )
                where, first = "line", 2  # line 1 is the header
            else:
                raise DatasetError(
                    f"manifest {self.path} must be .csv, .tsv or .parquet "
                    f"(got {suffix or 'no suffix'})"
                )
        except DatasetError:
            raise
        except Exception as exc:  # pandas and pyarrow raise many kinds; translate at the seam
            raise DatasetError(f"Cannot read manifest {self.path}: {exc}") from exc
        frame.columns = [str(column).strip() for column in frame.columns]
        rows = [{str(key): value for key, value in row.items()} for row in frame.to_dict("records")]
        return rows, where, first

    def _load(self, path_column: str, label_column: str, id_column: str) -> list[Record]:
        rows, where, first = self._read_table()
        if rows and path_column not in rows[0]:
            found = ", ".join(str(column) for column in rows[0]) or "none"
            raise DatasetError(
                f"manifest {self.path} has no {path_column!r} column (columns: {found}); "
                f"name the image column {path_column!r} or pass path_column="
            )
        records: list[Record] = []
        seen: dict[str, int] = {}
        for offset, row in enumerate(rows):
            position = f"{where} {first + offset}"
            location = row.get(path_column)
            if _blank(location):
                raise DatasetError(
                    f"manifest {self.path}, {position}: the {path_column!r} is empty"
                )
            location = str(location).strip()
            record_id = row.get(id_column)
            record_id = location if _blank(record_id) else str(record_id).strip()
            if record_id in seen:
                raise DatasetError(
                    f"manifest {self.path}, {position}: id {record_id!r} repeats "
                    f"{where} {seen[record_id]}; ids must be unique"
                )
            seen[record_id] = first + offset
            label = row.get(label_column)
            metadata = {
                str(key): _plain(value)
                for key, value in row.items()
                if key not in (path_column, label_column, id_column)
            }
            records.append(
                Record(
                    id=record_id,
                    image=self._image(location),
                    label=None if _blank(label) else str(label).strip(),
                    metadata={**metadata, "manifest_row": first + offset},
                )
            )
        return records

    def _image(self, location: str) -> ImageRef:
        if location.startswith(_URL_PREFIXES):
            return ImageRef.from_url(location)
        if location.startswith("@"):
            return ImageRef.from_stage(location)
        path = Path(location).expanduser()
        return ImageRef.from_path(path if path.is_absolute() else self.base_dir / path)

    def __iter__(self) -> Iterator[Record]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)
