"""Idempotent, content-addressed image upload to a Snowflake stage.

The seed notebook did one `PUT` per image (1,000 images = 1,000 round trips) and re-sent
everything on every run. Here:

```
local tree                          stage (content-addressed names)
root/normal/a.jpg      ─┐           @STAGE/prefix/normal/a-3f9c0e12ab45.jpg
root/normal/b.jpg       ├─ 1 PUT ─▶ @STAGE/prefix/normal/b-77d1a9c0e2f3.jpg
root/mi/c.jpg          ─┴─ 1 PUT ─▶ @STAGE/prefix/mi/c-0be2c4d5e6f7.jpg
```

* one `LS` lists what is already there (the only read, through `list_stage`);
* the missing files of each target folder are symlinked, under their content-addressed
  names, into a scratch folder and sent with one wildcard `PUT ... parallel=N` per folder
  (`auto_compress=False`, `overwrite=False`);
* a name embeds the first 12 bytes of the file's SHA-256, so "the name exists" means "the
  same bytes are there": a re-run uploads nothing, and an edited image gets a new name;
* `ALTER STAGE ... REFRESH` runs after an upload when the stage has a directory table.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medbatch.files import sha256_file
from medbatch.snowflake import SnowflakeStageError
from medbatch.snowflake.identifiers import StageLocation

__all__ = [
    "StageFile",
    "StageUploader",
    "UploadReport",
    "content_addressed_name",
    "list_stage",
]

logger = logging.getLogger(__name__)

_SAFE_STEM = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class StageFile:
    """One file on a stage, as `LS` reports it.

    Attributes:
        path: The path relative to the listed location (`normal/a-3f9c.jpg`).
        url: The full `@STAGE/.../file` path.
        size: Bytes.
        md5: The digest `LS` reports (of the stored object, not always of the content).
    """

    path: str
    url: str
    size: int
    md5: str | None = None


def list_stage(session: Any, location: StageLocation) -> list[StageFile]:
    """List the files under `location` with one `LS` (the only stage read there is).

    Raises:
        SnowflakeStageError: The stage does not exist or cannot be read.
    """
    try:
        rows = session.sql(f"LS {location.quoted()}").collect()
    except Exception as exc:
        raise SnowflakeStageError(
            f"cannot list {location.url}: {type(exc).__name__}: {exc}. Does the stage exist "
            "and does your role have READ on it?"
        ) from exc
    # `LS` names start with the stage's own (lower-cased) name: `ecg_stage/normal/1.jpg`.
    prefix_parts = 1 + len(location.path.split("/")) if location.path else 1
    files = []
    for row in rows:
        data = row.as_dict() if hasattr(row, "as_dict") else dict(row)
        name = str(data.get("name") or data.get('"name"') or "")
        parts = name.split("/")
        relative = "/".join(parts[prefix_parts:])
        if not relative:
            continue
        files.append(
            StageFile(
                path=relative,
                url=f"{location.url}{relative}",
                size=int(data.get("size") or 0),
                md5=data.get("md5"),
            )
        )
    return files


def content_addressed_name(path: Path, sha256: str | None = None) -> str:
    """`<stem>-<24 hex of sha256><suffix>`: readable, and unique to the bytes.

    Example:
        >>> content_addressed_name(Path("Normal(1).JPG"), "ab" * 32)
        'Normal_1_-abababababababababababab.jpg'
        >>> content_addressed_name(Path("uni.jpé"), "ab" * 32)
        'uni-abababababababababababab.jp_'
    """
    digest = sha256 or sha256_file(path)
    stem = _SAFE_STEM.sub("_", path.stem)[:80] or "image"
    # The suffix too: one `uni.jpé` must not make the stage path of the whole job invalid.
    suffix = _SAFE_STEM.sub("_", path.suffix.lower()[1:])[:16]
    return f"{stem}-{digest[:24]}.{suffix}" if suffix else f"{stem}-{digest[:24]}"


@dataclass
class UploadReport:
    """What an upload did.

    Attributes:
        stage_paths: Local path → full `@STAGE/...` path of its copy (uploaded or present).
        uploaded: Files sent by this call.
        skipped: Files already on the stage.
        put_calls: `PUT` round trips made.
    """

    stage_paths: dict[Path, str] = field(default_factory=dict)
    uploaded: int = 0
    skipped: int = 0
    put_calls: int = 0


class StageUploader:
    """Upload local images to a stage location, once.

    Args:
        session: A Snowpark session.
        location: Where files go; target folders are created beneath it.
        parallel: Threads per `PUT` (Snowpark's `parallel`, 1–99).
        refresh_directory: Run `ALTER STAGE ... REFRESH` after uploading when the stage has
            a directory table (None: ask `DESC STAGE` once).

    Example:
        ```python
        uploader = StageUploader(session, StageLocation.parse("@DB.PUBLIC.ECG_STAGE/ecg"))
        report = uploader.upload_tree(Path("data/ecg"))  # one PUT per class folder
        ```
    """

    def __init__(
        self,
        session: Any,
        location: StageLocation,
        *,
        parallel: int = 8,
        refresh_directory: bool | None = None,
    ) -> None:
        if not 1 <= parallel <= 99:
            raise ValueError("parallel must be between 1 and 99 (Snowflake's PUT limit)")
        self.session = session
        self.location = location
        self.parallel = parallel
        self._refresh_directory = refresh_directory

    def ensure_stage(self) -> None:
        """`CREATE STAGE IF NOT EXISTS` with a directory table and server-side encryption.

        Batch inference reads multimodal inputs only from server-side-encrypted stages
        (Snowflake's documented limitation), so the stage is created `SNOWFLAKE_SSE`; the
        seed's plain `CREATE STAGE` gives client-side encryption.
        """
        self._sql(
            f"CREATE STAGE IF NOT EXISTS {self.location.stage} "
            "DIRECTORY = (ENABLE = TRUE) ENCRYPTION = (TYPE = 'SNOWFLAKE_SSE')"
        )

    def upload_tree(self, root: Path, *, suffixes: Iterable[str] | None = None) -> UploadReport:
        """Upload every file under `root`, keeping its folder (the class folder) on the stage.

        Args:
            root: Local folder; `root/<folder>/<file>` goes to `<location>/<folder>/`.
            suffixes: File suffixes to include (lower case, with dot); None for all files.
        """
        keep = {s.lower() for s in suffixes} if suffixes is not None else None
        pairs = [
            (path, path.parent.relative_to(root).as_posix())
            for path in sorted(root.rglob("*"))
            if path.is_file() and (keep is None or path.suffix.lower() in keep)
        ]
        return self.upload(pairs)

    def upload(self, files: Iterable[tuple[Path, str]]) -> UploadReport:
        """Upload `(local file, target folder relative to the location)` pairs.

        Raises:
            SnowflakeStageError: A `PUT` failed (the message names the folder).
        """
        by_folder: dict[str, dict[str, Path]] = defaultdict(dict)
        report = UploadReport()
        for path, target in files:
            folder = "" if target in (".", "./") else target.strip("/")
            name = content_addressed_name(path)
            relative = f"{folder}/{name}" if folder else name
            report.stage_paths[path] = self.location.file(relative)
            by_folder[folder][name] = path
        if not by_folder:
            return report
        existing = {f.path for f in list_stage(self.session, self.location)}
        with tempfile.TemporaryDirectory(prefix="medbatch-put-") as scratch:
            for index, (folder, names) in enumerate(sorted(by_folder.items())):
                missing = {
                    name: path
                    for name, path in names.items()
                    if (f"{folder}/{name}" if folder else name) not in existing
                }
                report.skipped += len(names) - len(missing)
                if not missing:
                    continue
                batch_dir = Path(scratch) / str(index)
                batch_dir.mkdir()
                for name, path in missing.items():
                    (batch_dir / name).symlink_to(path.resolve())
                self._put(batch_dir, self.location.child(folder) if folder else self.location)
                report.put_calls += 1
                report.uploaded += len(missing)
        if report.uploaded and self._has_directory_table():
            self._sql(f"ALTER STAGE {self.location.stage} REFRESH")
        logger.info(
            "stage %s: %d uploaded in %d PUTs, %d already there",
            self.location.url,
            report.uploaded,
            report.put_calls,
            report.skipped,
        )
        return report

    def _put(self, folder: Path, target: StageLocation) -> None:
        try:
            results = self.session.file.put(
                f"{folder.as_posix()}/*",
                target.url,
                parallel=self.parallel,
                auto_compress=False,
                overwrite=False,
            )
        except Exception as exc:
            raise SnowflakeStageError(
                f"PUT to {target.url} failed: {type(exc).__name__}: {exc}"
            ) from exc
        failed = [r for r in results if str(getattr(r, "status", "")).upper() == "ERROR"]
        if failed:
            raise SnowflakeStageError(
                f"PUT to {target.url}: {len(failed)} files failed, e.g. "
                f"{failed[0].source}: {failed[0].message}"
            )

    def _has_directory_table(self) -> bool:
        if self._refresh_directory is None:
            rows = self._sql(f"DESC STAGE {self.location.stage}")
            self._refresh_directory = any(
                _row_get(row, "parent_property") == "DIRECTORY"
                and _row_get(row, "property") == "ENABLE"
                and str(_row_get(row, "property_value")).lower() == "true"
                for row in rows
            )
        return self._refresh_directory

    def _sql(self, text: str) -> list[Any]:
        try:
            return list(self.session.sql(text).collect())
        except Exception as exc:
            raise SnowflakeStageError(
                f"{text.split(' ', 2)[0]} on {self.location.stage} failed: {exc}"
            ) from exc


def _row_get(row: Any, key: str) -> Any:
    data: Mapping[str, Any] = row.as_dict() if hasattr(row, "as_dict") else dict(row)
    return data.get(key, data.get(key.upper()))
