"""Snowflake plumbing for `SnowflakeBatchRunner`: identifiers, sessions, stages, the
`run_batch` API seam and the output reader.

```
identifiers.py  validate and quote names and stage locations before any SQL
session.py      take the user's Session, or build one from connections.toml / SNOWFLAKE_* env
stage.py        content-addressed, idempotent wildcard upload (one PUT per folder, one LS)
api.py          snowflake-ml-python 1.x vs 2.x `ModelVersion.run_batch`, params translation
inputs.py       the job's input rows (images uploaded or inlined), chunked for large runs
jobs.py         wait for a submitted job's end, cancel it, fail its records with the log tail
results.py      read the job's output parquet and join it back to record ids
```

Importing this package imports no Snowflake SDK: every module loads `snowflake.*` lazily,
inside the function that needs it. Nothing here imports `medbatch.runners` (the runner
imports this package).
"""

from __future__ import annotations

from medbatch.errors import RunnerError

__all__ = [
    "SnowflakeConnectionError",
    "SnowflakeIdentifierError",
    "SnowflakeJobError",
    "SnowflakeParamsError",
    "SnowflakeResultsError",
    "SnowflakeStageError",
]


class SnowflakeIdentifierError(RunnerError, ValueError):
    """A database, schema, stage, pool or model name is not a plain Snowflake identifier."""


class SnowflakeConnectionError(RunnerError):
    """No Snowflake session could be opened (the message never carries credentials)."""


class SnowflakeStageError(RunnerError):
    """Listing, creating or uploading to a stage failed."""


class SnowflakeParamsError(RunnerError, ValueError):
    """Generation parameters do not fit the model function's signature."""


class SnowflakeJobError(RunnerError):
    """A batch inference job could not be submitted, watched or re-attached."""


class SnowflakeResultsError(RunnerError):
    """The job's output cannot be read or joined back to the records."""
