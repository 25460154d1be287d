"""Read a batch job's output parquet and turn each row into an `InferenceResponse`.

Layout on the output stage (both API versions; 2.x adds the per-job folder):

```
<output>/                         1.x: results here      2.x: <output>/<JOB_NAME>/ results
├── _temporary/ | _snowflake_temporary/   the job's copy of the input rows: skipped
├── _SUCCESS                      completion marker: skipped
└── *.parquet                     one row per input row: OpenAI chat completion columns
                                  (id, object, created, model, choices, usage) + our
                                  pass-through MEDBATCH_RECORD_ID column
```

The seed notebook parsed the answer from the `id` column (the completion's id) and so
classified nothing; here the text comes from `choices[0].message.content`.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from medbatch.records import InferenceResponse, Usage
from medbatch.snowflake import SnowflakeResultsError
from medbatch.snowflake.identifiers import StageLocation
from medbatch.snowflake.stage import StageFile, list_stage

__all__ = ["RECORD_ID_COLUMN", "is_result_file", "read_results", "row_to_response"]

logger = logging.getLogger(__name__)

RECORD_ID_COLUMN = "MEDBATCH_RECORD_ID"
"""Pass-through column carrying our record id (the output's own `id` is the completion's)."""

_SKIPPED_FOLDERS = ("_temporary", "_snowflake_temporary")


def is_result_file(relative_path: str) -> bool:
    """True for output parquet files; False for markers, temporaries and anything else."""
    parts = relative_path.split("/")
    if any(part in _SKIPPED_FOLDERS for part in parts[:-1]):
        return False
    name = parts[-1]
    return name != "_SUCCESS" and not name.startswith(".") and name.lower().endswith(".parquet")


def _as_json(value: Any) -> Any:
    if isinstance(value, str | bytes):
        text = value.decode() if isinstance(value, bytes) else value
        return json.loads(text) if text.strip() else None
    if hasattr(value, "tolist"):  # numpy arrays from nested parquet columns
        return value.tolist()
    return value


def _lookup(row: Mapping[str, Any], name: str) -> Any:
    if name in row:
        return row[name]
    lowered = {str(k).lower(): v for k, v in row.items()}
    return lowered.get(name.lower())


def row_to_response(row: Mapping[str, Any], record_id: str, job: str) -> InferenceResponse:
    """One output row → one response; a malformed row is that record's error, not a crash."""
    metadata = {"snowflake_job": job}
    try:
        choices = _as_json(_lookup(row, "choices"))
        usage = _as_json(_lookup(row, "usage")) or {}
        choice = choices[0] if choices else None
        if choice is None:
            return InferenceResponse.failure(
                record_id, "empty_response", f"job {job} returned no choices", metadata=metadata
            )
        message = _as_json(choice.get("message")) or {}
        return InferenceResponse(
            record_id=record_id,
            text=message.get("content"),
            finish_reason=choice.get("finish_reason"),
            usage=Usage(
                prompt_tokens=usage.get("prompt_tokens"),
                completion_tokens=usage.get("completion_tokens"),
            ),
            metadata={**metadata, "completion_id": _lookup(row, "id")},
        )
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        return InferenceResponse.failure(
            record_id,
            "bad_response",
            f"job {job} wrote an unreadable row ({type(exc).__name__}: {exc})",
            retryable=False,
            metadata=metadata,
        )


def read_results(
    session: Any,
    location: StageLocation,
    record_ids: Sequence[str],
    *,
    job: str,
    id_column: str = RECORD_ID_COLUMN,
    lister: Callable[[Any, StageLocation], list[StageFile]] = list_stage,
) -> Iterator[InferenceResponse]:
    """Yield one response per id in `record_ids`, joined on `id_column`.

    Rows for unknown ids are ignored; a second row for an id is dropped; an id with no row
    becomes a `missing_response` error naming the job.

    Raises:
        SnowflakeResultsError: No output file, or a file lacks `id_column` (the join key).
    """
    import pyarrow.parquet as pq

    wanted = set(record_ids)
    files = [f for f in lister(session, location) if is_result_file(f.path)]
    if not files:
        raise SnowflakeResultsError(
            f"job {job} finished but wrote no parquet under {location.url}; see its logs"
        )
    answered: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="medbatch-get-") as scratch:
        for index, stage_file in enumerate(files):
            # One folder per file: GET flattens paths, and two workers may reuse a name.
            target = Path(scratch) / str(index)
            target.mkdir()
            try:
                session.file.get(stage_file.url, str(target))
            except Exception as exc:
                raise SnowflakeResultsError(
                    f"cannot download {stage_file.url}: {type(exc).__name__}: {exc}"
                ) from exc
            for local in sorted(target.rglob("*.parquet")):
                table = pq.read_table(local)
                column = next(
                    (c for c in table.column_names if c.upper() == id_column.upper()), None
                )
                if column is None:
                    raise SnowflakeResultsError(
                        f"{stage_file.url} has no {id_column} column (columns: "
                        f"{', '.join(table.column_names)}); the record ids did not pass "
                        "through the job, so answers cannot be matched to images"
                    )
                for row in table.to_pylist():
                    record_id = str(row[column])
                    if record_id not in wanted or record_id in answered:
                        continue
                    answered.add(record_id)
                    yield row_to_response(row, record_id, job)
    for record_id in record_ids:
        if record_id not in answered:
            yield InferenceResponse.failure(
                record_id,
                "missing_response",
                f"job {job} wrote no output row for record {record_id!r}; see the job logs",
                metadata={"snowflake_job": job},
            )
