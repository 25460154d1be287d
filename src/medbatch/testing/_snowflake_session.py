"""`FakeSession`: Snowpark local testing plus the statements it lacks, with counters.

The session half of the fake Snowflake (`medbatch.testing.snowflake` re-exports it):
`create_dataframe`, `to_pandas` and stage files go to Snowpark's own local testing;
`LS` and stage DDL are emulated over the same local files; every round trip is counted.
Also the server's answers every fake shares: `sql_error` (the real `SnowparkSQLException`
with its code) and `qualified_name` (how an unquoted name resolves).

It must not import `medbatch.testing.snowflake` (the jobs and model version) or any runner.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["FakeSession", "qualified_name", "sql_error"]


def sql_error(message: str, code: int) -> Exception:
    """The real `SnowparkSQLException` the server answers with (`sql_error_code` set)."""
    from snowflake.snowpark.exceptions import SnowparkSQLException

    return SnowparkSQLException(message, sql_error_code=code)


def qualified_name(name: str, database: str, schema: str) -> str:
    """`name` as the server resolves it: upper-case, completed with database and schema."""
    # Unquoted identifiers resolve upper-case; unqualified job names to the model's namespace.
    parts = name.upper().split(".")
    return ".".join([database.upper(), schema.upper(), *parts][-3:])


class _Rows:
    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def collect(self) -> list[Any]:
        return self._rows


class _CountingFile:
    def __init__(self, owner: FakeSession) -> None:
        self._owner = owner

    def put(self, local_file_name: str, stage_location: str, **kwargs: Any) -> Any:
        self._owner.calls["put"] += 1
        self._owner.put_kwargs.append(dict(kwargs))
        return self._owner.local.file.put(local_file_name, stage_location, **kwargs)

    def get(self, stage_location: str, target_directory: str, **kwargs: Any) -> Any:
        self._owner.calls["get"] += 1
        return self._owner.local.file.get(stage_location, target_directory, **kwargs)

    def put_stream(self, stream: Any, stage_location: str, **kwargs: Any) -> Any:
        self._owner.calls["put_stream"] += 1
        return self._owner.local.file.put_stream(stream, stage_location, **kwargs)


class FakeSession:
    """Snowpark local testing plus `LS` and stage DDL, with round-trip counters.

    Attributes:
        calls: Counts of `put`, `get`, `put_stream`, `ls`, `sql` (every statement).
        queries: Every SQL text received, in order.
    """

    def __init__(self, database: str = "MEDBATCH_DB", schema: str = "PUBLIC") -> None:
        from snowflake.snowpark import Session

        self.local = Session.builder.config("local_testing", True).create()
        self.database = database
        self.schema = schema
        self.calls: Counter[str] = Counter()
        self.queries: list[str] = []
        self.put_kwargs: list[dict[str, Any]] = []
        self.directory_stages: set[str] = set()
        self.file = _CountingFile(self)

    def create_dataframe(self, data: Any, schema: Any = None) -> Any:
        return self.local.create_dataframe(data, schema=schema)

    def table(self, name: str) -> Any:
        return self.local.table(name)

    def get_current_database(self) -> str:
        return f'"{self.database}"'

    def get_current_schema(self) -> str:
        return f'"{self.schema}"'

    def get_current_warehouse(self) -> str:
        return '"MEDBATCH_WH"'

    def _stage_dir(self, stage: str) -> Path | None:
        registry = self.local._conn.stage_registry._stage_registry
        entity = registry.get(stage)
        return Path(entity._working_directory) if entity is not None else None

    def stage_files(self, location: str) -> list[tuple[str, int, str]]:
        """`(path relative to the stage, size, md5)` of every file under `location`."""
        from snowflake.snowpark.mock._stage_registry import extract_stage_name_and_prefix

        stage, prefix = extract_stage_name_and_prefix(location)
        root = self._stage_dir(stage)
        if root is None:
            return []
        found = []
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root).as_posix()
            if path.is_file() and (not prefix or relative.startswith(prefix.rstrip("/") + "/")):
                data = path.read_bytes()
                found.append((relative, len(data), hashlib.md5(data).hexdigest()))  # noqa: S324
        return found

    def remove(self, location: str, *, keep: str | None = None) -> int:
        """Delete every file under `location` (what `REMOVE @location` does); returns the count.

        Args:
            location: `@STAGE/path/`.
            keep: A sub-folder name under `location` whose files are left alone.
        """
        from snowflake.snowpark.mock._stage_registry import extract_stage_name_and_prefix

        stage, prefix = extract_stage_name_and_prefix(location)
        root = self._stage_dir(stage)
        kept = f"{prefix.rstrip('/')}/{keep}/".lstrip("/") if keep else None
        removed = 0
        for relative, _, _ in self.stage_files(location):
            if root is not None and not (kept and relative.startswith(kept)):
                (root / relative).unlink()
                removed += 1
        return removed

    def sql(self, query: str, params: Sequence[Any] | None = None) -> _Rows:
        from snowflake.snowpark import Row

        self.calls["sql"] += 1
        self.queries.append(query)
        text = query.strip()
        if match := re.fullmatch(r"LS\s+'?(@[^']+?)'?", text, flags=re.IGNORECASE):
            self.calls["ls"] += 1
            location = match.group(1)
            stage = location[1:].split("/", 1)[0]
            stage_name = stage.rsplit(".", 1)[-1].lower()
            return _Rows(
                [
                    Row(name=f"{stage_name}/{rel}", size=size, md5=md5, last_modified="")
                    for rel, size, md5 in self.stage_files(location)
                ]
            )
        if match := re.match(r"CREATE STAGE IF NOT EXISTS (\S+)", text, flags=re.IGNORECASE):
            if "DIRECTORY = (ENABLE = TRUE)" in text.upper():
                self.directory_stages.add(match.group(1))
            return _Rows([Row(status="Stage area successfully created.")])
        if match := re.fullmatch(r"DESC(?:RIBE)? STAGE (\S+)", text, flags=re.IGNORECASE):
            enabled = str(match.group(1) in self.directory_stages).lower()
            return _Rows(
                [Row(parent_property="DIRECTORY", property="ENABLE", property_value=enabled)]
            )
        if re.fullmatch(r"ALTER STAGE \S+ REFRESH", text, flags=re.IGNORECASE):
            self.calls["refresh"] += 1
            return _Rows([])
        raise NotImplementedError(f"FakeSession does not emulate: {query!r}")


# -- a server that honours response_format ---------------------------------------------------
