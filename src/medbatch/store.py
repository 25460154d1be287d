"""`RunStore`: a run directory that survives crashes and resumes without duplicates.

```
runs/ecg-2026-11-25/
├── manifest.json         what ran: task, prompt fingerprint, model, params, dataset,
│                         versions, times, counts, runner state (replaced atomically)
├── predictions.jsonl     one Prediction per line, appended and fsync'ed as answers arrive
├── predictions.parquet   a cache of the table: the latest line of every record in the
│                         JSONL, written when a run ends (stale once the JSONL grows)
└── .lock                 held while a run writes here
```

Exactly-once: a prediction is durable once its line is complete in `predictions.jsonl`. A
crash can leave at most a torn last line; it is detected and dropped on the next open, and
that record is simply run again. When a record has several lines (a retried failure, a
re-run), the last one for the current resume key wins.

The JSONL is the truth. `load_predictions` reads the parquet only when the manifest's
`table` stamp says it was built from the JSONL as it is now (same size); otherwise it
rebuilds the table from the JSONL, so a run killed at any point, or resumed on a subset,
is read as the latest answer of every record it holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medbatch.errors import RunStoreError
from medbatch.records import Prediction

__all__ = ["ResumeKey", "RunManifest", "RunStore", "atomic_write_bytes", "atomic_write_text"]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PREDICTIONS = "predictions.jsonl"
PREDICTIONS_TABLE = "predictions.parquet"


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` so readers see the old or the new file, never a mix."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically (a temporary `.NAME.*` beside it, then rename).

    A kill between the two leaves only the temporary file; `RunStore.open` removes those.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp_name).replace(path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class ResumeKey:
    """What must match for a stored prediction to count as done."""

    image_sha256: str
    prompt_fingerprint: str
    model_id: str
    params_fingerprint: str

    @classmethod
    def of(cls, prediction: Prediction) -> ResumeKey:
        """The key a stored prediction was made under."""
        return cls(
            prediction.image_sha256,
            prediction.prompt_fingerprint,
            prediction.model_id,
            prediction.params_fingerprint,
        )


class RunManifest(BaseModel):
    """What a run was, for reproducing it. Never holds credentials."""

    model_config = ConfigDict(extra="allow")

    medbatch_version: str
    task: str
    prompt_version: str
    prompt_fingerprint: str
    prompt_text: dict[str, Any] = Field(default_factory=dict)
    model_id: str
    runner: dict[str, Any] = Field(default_factory=dict)
    profile: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    params_fingerprint: str
    constrained: bool = False
    dataset: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    started_at: str
    finished_at: str | None = None
    status: str = "running"
    counts: dict[str, int] = Field(default_factory=dict)
    runner_state: dict[str, Any] = Field(default_factory=dict)
    canary: dict[str, Any] | None = None
    # -- labels (evaluation reads these, not the task registry, which may have changed) --
    labels: list[str] | None = Field(
        default=None, description="The task's label names, in display order; None: older run."
    )
    negative_label: str | None = Field(
        default=None, description="The task's reference (negative) label, when it declares one."
    )
    # -- what the caller recorded about the run (the report reads these) --
    images_root: str | None = Field(
        default=None,
        description="Folder the images were read from (relative paths are relative to the "
        "run directory); the report shows thumbnails from it.",
    )
    illustrative: bool = Field(
        default=False,
        description="The answers were written, not generated (`medbatch demo --replay`).",
    )
    sampling: dict[str, Any] | None = Field(
        default=None, description="How the records were sampled (`sample_dataset`'s summary)."
    )
    demo: dict[str, Any] | None = Field(
        default=None,
        description="What `medbatch demo` ran (`kind`, `random_weights`); None for other runs.",
    )
    expected_records: int | None = Field(
        default=None,
        description="Distinct records this run directory should hold once every call that "
        "wrote to it has finished (the M of 'N of M records'); None when unknown.",
    )
    table: dict[str, Any] = Field(
        default_factory=dict,
        description="Stamp of predictions.parquet: the JSONL size it was built from.",
    )
    history: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Earlier configurations added to this run directory (add_to_run).",
    )

    def with_recorded(self, facts: Mapping[str, Any]) -> RunManifest:
        """A copy holding what a caller records about the run (`classify(manifest_extra=)`).

        `images_root`, `illustrative`, `sampling` and `demo` are validated as typed fields;
        any other key that is not a manifest field is kept as an extra (a third party's
        fact, written to manifest.json as given).

        Raises:
            ValueError: A key names a field medbatch records itself (`model_id`, `status`,
                ...), or a typed field gets a value of the wrong type.
        """
        reserved = sorted(
            key for key in facts if key in type(self).model_fields and key not in RECORDED_FIELDS
        )
        if reserved:
            raise ValueError(
                f"manifest_extra may not set {', '.join(reserved)}: medbatch records "
                f"{'it' if len(reserved) == 1 else 'them'} itself; use another key"
            )
        return type(self).model_validate(self.model_dump() | dict(facts))


#: The manifest fields a caller records through `classify(manifest_extra=...)`.
RECORDED_FIELDS = frozenset({"images_root", "illustrative", "sampling", "demo"})


class RunStore:
    """A run directory: manifest, streamed predictions, resume and retry.

    Args:
        path: The run directory; created if missing.

    Use as a context manager (or call `open`/`close`) while writing: it takes a lock so two
    processes never append to the same run.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._handle: IO[str] | None = None
        self._lock: IO[str] | None = None

    @property
    def predictions_path(self) -> Path:
        """The append-only JSONL of predictions."""
        return self.path / PREDICTIONS

    @property
    def manifest_path(self) -> Path:
        """The manifest file."""
        return self.path / MANIFEST

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> RunStore:
        """Create the directory, take the lock, repair a torn last line, open for append.

        Raises:
            RunStoreError: Not writable, or another process is writing this run.
        """
        if self._handle is not None:
            return self
        self._refuse_foreign_manifest()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            lock = (self.path / ".lock").open("a+", encoding="utf-8")
        except OSError as exc:
            raise RunStoreError(f"cannot write to run directory {self.path}: {exc}") from exc
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            lock.close()
            raise RunStoreError(
                f"run directory {self.path} is in use by another medbatch process"
            ) from exc
        self._lock = lock
        try:
            self._remove_stale_temp_files()
            self._repair_torn_tail()
            self._handle = self.predictions_path.open("a", encoding="utf-8")
        except OSError as exc:
            self.close()
            raise RunStoreError(f"cannot write to {self.predictions_path}: {exc}") from exc
        return self

    def close(self) -> None:
        """Flush and release the lock."""
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()
            self._handle = None
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
                self._lock.close()
            self._lock = None

    def __enter__(self) -> RunStore:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _refuse_foreign_manifest(self) -> None:
        """Check, before creating anything, that a `manifest.json` here is medbatch's.

        A folder of another program's files must be left exactly as it was: no `.lock`, no
        empty `predictions.jsonl`.
        """
        if self.manifest_path.exists():
            self.read_manifest()  # raises RunStoreError naming the file

    def _remove_stale_temp_files(self) -> None:
        """Delete temporary files a killed run left behind (we hold the lock: none is live)."""
        for pattern in (f".{MANIFEST}.*", f".{PREDICTIONS_TABLE}.*"):
            for stale in self.path.glob(pattern):
                with contextlib.suppress(OSError):
                    stale.unlink()
                    logger.info("removed %s, left by an interrupted write", stale.name)

    def _repair_torn_tail(self) -> None:
        path = self.predictions_path
        if not path.exists() or path.stat().st_size == 0:
            return
        with path.open("rb+") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) == b"\n":
                return
            # A crash mid-write left a partial line: cut back to the last newline. That
            # record was never durable, so it will be run again.
            handle.seek(0)
            data = handle.read()
            keep = data.rfind(b"\n") + 1
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
            logger.warning("dropped a torn last line (%d bytes) in %s", len(data) - keep, path)

    # -- writing ---------------------------------------------------------------------------

    def append(self, predictions: Iterable[Prediction]) -> int:
        """Durably append predictions (one write, one fsync). Returns how many.

        Raises:
            RunStoreError: The store is not open, or the disk refused the write (nothing
                already written is affected).
        """
        if self._handle is None:
            raise RunStoreError("RunStore.append called before open()")
        lines = [_json_line(prediction) for prediction in predictions]
        if not lines:
            return 0
        handle = self._handle
        start = os.fstat(handle.fileno()).st_size  # the handle is flushed after every append
        try:
            handle.write("".join(lines))
            handle.flush()
            os.fsync(handle.fileno())
        except OSError as exc:
            # All or nothing: cut the file back to where this group began. Cutting only a
            # torn last line would keep the group's first lines, and the caller, which
            # still holds the whole group, would write them twice when it tries again.
            self._handle = None
            with contextlib.suppress(OSError):
                handle.close()  # flushes what is still buffered now, before the cut
            with contextlib.suppress(OSError):
                with self.predictions_path.open("rb+") as raw:
                    raw.truncate(start)
                    os.fsync(raw.fileno())
                self._handle = self.predictions_path.open("a", encoding="utf-8")
            raise RunStoreError(f"cannot write predictions to {self.path}: {exc}") from exc
        return len(lines)

    def write_manifest(self, manifest: RunManifest) -> None:
        """Atomically replace the manifest."""
        try:
            atomic_write_text(self.manifest_path, manifest.model_dump_json(indent=2) + "\n")
        except OSError as exc:
            raise RunStoreError(f"cannot write manifest in {self.path}: {exc}") from exc

    # -- reading ---------------------------------------------------------------------------

    def read_manifest(self) -> RunManifest | None:
        """The manifest, or None for a new run directory.

        Raises:
            RunStoreError: The manifest exists but is not valid.
        """
        if not self.manifest_path.exists():
            return None
        try:
            return RunManifest.model_validate_json(self.manifest_path.read_text("utf-8"))
        except (OSError, ValidationError) as exc:
            raise RunStoreError(f"unreadable manifest {self.manifest_path}: {exc}") from exc

    def iter_predictions(self) -> Iterator[Prediction]:
        """Every stored prediction line, oldest first; torn or corrupt lines are skipped."""
        path = self.predictions_path
        if not path.exists():
            return
        with path.open(encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.endswith("\n"):
                    logger.warning("ignoring a torn last line in %s", path)
                    return
                if not line.strip():
                    continue
                try:
                    yield _read_line(line)
                except ValueError:  # JSONDecodeError and ValidationError alike
                    logger.warning("ignoring corrupt line %d in %s", number, path)

    def latest(self) -> dict[str, Prediction]:
        """The last stored prediction per record id."""
        latest: dict[str, Prediction] = {}
        for prediction in self.iter_predictions():
            latest[prediction.record_id] = prediction
        return latest

    def predictions_frame(self, record_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """The latest prediction per record as a DataFrame (optionally only `record_ids`)."""
        latest = self.latest()
        if record_ids is not None:
            wanted = list(dict.fromkeys(record_ids))
            rows = [latest[rid].to_row() for rid in wanted if rid in latest]
        else:
            rows = [prediction.to_row() for prediction in latest.values()]
        return predictions_to_frame(rows)

    def jsonl_size(self) -> int:
        """Bytes in `predictions.jsonl` (0 when absent): the freshness stamp of the table."""
        try:
            return self.predictions_path.stat().st_size
        except FileNotFoundError:
            return 0

    def write_table(self, frame: pd.DataFrame | None = None) -> dict[str, Any]:
        """Write the predictions table cache as parquet (atomically).

        Args:
            frame: The table; by default the latest line of every record in the JSONL,
                which is what `load_predictions` must read back.

        Returns:
            The stamp to store as the manifest's `table`: the parquet is fresh while the
            JSONL still has `jsonl_bytes` bytes.
        """
        stamp_size = self.jsonl_size()
        target = self.path / PREDICTIONS_TABLE
        tmp = self.path / f".{PREDICTIONS_TABLE}.tmp"
        try:
            if frame is not None:
                frame.to_parquet(tmp, index=False)
                rows = len(frame)
            else:
                rows = self._write_table_streaming(tmp)
            tmp.replace(target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise RunStoreError(f"cannot write {target}: {exc}") from exc
        return {"file": PREDICTIONS_TABLE, "jsonl_bytes": stamp_size, "rows": rows}

    def _latest_offsets(self) -> tuple[dict[str, int], list[int]]:
        """Where the rows of the table are in the JSONL, without holding the predictions.

        Returns:
            The byte offset of the last valid line of every record, in order of first
            appearance (the lines and order of `latest()`), and the offsets of a few lines
            that between them hold every kind of value (a value, a null) of every column
            that any line holds: the rows the table's schema is read from.
        """
        offsets: dict[str, int] = {}
        probes: dict[str, int] = {}
        path = self.predictions_path
        if not path.exists():
            return offsets, []
        with path.open("rb") as handle:
            position = 0
            for raw in handle:
                start, position = position, position + len(raw)
                if not raw.endswith(b"\n"):
                    break  # a torn last line: `iter_predictions` stops there too
                line = raw.decode("utf-8", errors="replace")
                if not line.strip():
                    continue
                try:
                    prediction = _read_line(line)
                except ValueError:
                    continue
                offsets[prediction.record_id] = start
                if len(probes) < 2 * len(PREDICTION_COLUMNS):
                    for column, value in prediction.to_row().items():
                        # pandas infers a column's type from the kinds of value in it (an
                        # integer column with a null becomes float), so the probe holds one
                        # row with a value and one with a null per column, where there are.
                        probes.setdefault(f"{column}={value is None}", start)
        return offsets, sorted(set(probes.values()))

    def _write_table_streaming(self, tmp: Path) -> int:
        """Write the latest line of every record to `tmp` in row groups; returns the rows.

        Holds one row group at a time, so writing the table of a long run does not cost
        memory in proportion to it. The schema is read from a few rows that hold every
        kind of value of every column, so a group where a column happens to be all null,
        or null-free, still gets the type a one-piece table would have; where a group does
        not convert to it, the table is written in one piece as before.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        offsets, probes = self._latest_offsets()
        if len(offsets) <= TABLE_ROW_GROUP:
            frame = self.predictions_frame()
            frame.to_parquet(tmp, index=False)
            return len(frame)
        with self.predictions_path.open("rb") as handle:

            def row(offset: int) -> dict[str, Any]:
                handle.seek(offset)
                return _read_line(handle.readline().decode("utf-8", "replace")).to_row()

            probe = predictions_to_frame([row(offset) for offset in probes])
            schema = pa.Table.from_pandas(probe, preserve_index=False).schema
            try:
                with pq.ParquetWriter(tmp, schema) as writer:
                    rows: list[dict[str, Any]] = []
                    for number, offset in enumerate(offsets.values(), start=1):
                        rows.append(row(offset))
                        if len(rows) < TABLE_ROW_GROUP and number < len(offsets):
                            continue
                        frame = predictions_to_frame(rows)
                        rows = []
                        table = pa.Table.from_pandas(frame, preserve_index=False)
                        writer.write_table(table.cast(schema))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                self.predictions_frame().to_parquet(tmp, index=False)
        return len(offsets)


def _json_line(prediction: Prediction) -> str:
    """One JSONL line that reads back as exactly `prediction`.

    `json.dumps` rather than `model_dump_json`: pydantic writes inf/NaN scores as `null`
    (which then fails validation, so the line would be dropped as corrupt) and refuses lone
    surrogates, which valid JSON answers ("\\ud800") and non-UTF-8 file names both produce.
    ASCII output with escapes round-trips both.
    """
    return json.dumps(prediction.model_dump(mode="json"), allow_nan=True) + "\n"


def _read_line(line: str) -> Prediction:
    try:
        return Prediction.model_validate_json(line)
    except ValidationError:
        # pydantic's JSON parser rejects lone-surrogate escapes; the stdlib's accepts them.
        return Prediction.model_validate(json.loads(line))


PREDICTION_COLUMNS = list(Prediction.model_fields)
# Rows per parquet row group when the table is written from the JSONL: what is held in
# memory at once while writing it (~10 kB a row with its copies: ~10 MB a group).
TABLE_ROW_GROUP = 1024


def predictions_to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A predictions DataFrame with every `Prediction` column, even when empty."""
    frame: pd.DataFrame = pd.DataFrame(rows, columns=PREDICTION_COLUMNS)
    return _offsets_as_integers(frame)


_OFFSET_COLUMNS = ("evidence_start", "evidence_end")


def _offsets_as_integers(frame: pd.DataFrame) -> pd.DataFrame:
    # Nullable integers: a column with one null would otherwise turn every offset into a float.
    for column in _OFFSET_COLUMNS:
        frame[column] = frame[column].astype("Int64")
    return frame


def load_predictions(run_dir: str | Path) -> pd.DataFrame:
    """The latest prediction of every record stored in a run directory.

    The JSONL is the truth: the parquet cache is read only while the manifest's `table`
    stamp matches the JSONL's current size, so an interrupted, resumed or extended run is
    never read from an older table. A directory holding only a parquet file (copied
    without its JSONL) is read from the parquet.

    Raises:
        RunStoreError: `run_dir` holds no predictions.
    """
    run_dir = Path(run_dir)
    table = run_dir / PREDICTIONS_TABLE
    store = RunStore(run_dir)
    if not store.predictions_path.exists():
        if table.exists():
            return _with_every_column(pd.read_parquet(table))
        raise RunStoreError(
            f"{run_dir} is not a medbatch run directory (no {PREDICTIONS_TABLE} or {PREDICTIONS})"
        )
    if table.exists() and _table_is_fresh(store):
        return _with_every_column(pd.read_parquet(table))
    return store.predictions_frame()


def _with_every_column(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with the `Prediction` columns a table written by an older version lacks, null."""
    for column in PREDICTION_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    return _offsets_as_integers(frame)


def _table_is_fresh(store: RunStore) -> bool:
    try:
        manifest = store.read_manifest()
    except RunStoreError:
        return False
    if manifest is None:
        return False
    stamp = manifest.table.get("jsonl_bytes")
    return isinstance(stamp, int) and stamp == store.jsonl_size()
