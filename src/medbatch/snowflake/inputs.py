"""The input table of a `run_batch` job: one row per record, images uploaded or inlined.

```
MEDBATCH_RECORD_ID | MESSAGES (OpenAI chat JSON; images as stage paths, URLs or data URLs)
```

Local images go to the image stage first (one content-addressed PUT per folder); stage
paths and URLs pass through; in-memory images are inlined as data URLs. Past `chunk_rows`
rows the frame is appended to a temporary table in chunks, so no single statement (or
local list) holds every prompt.

It must not import the runner (`medbatch.runners.snowflake` imports it) or a Snowflake SDK
at module level.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from medbatch.records import ImageRef, InferenceRequest
from medbatch.snowflake.identifiers import StageLocation
from medbatch.snowflake.results import RECORD_ID_COLUMN
from medbatch.snowflake.stage import StageUploader

__all__ = ["MESSAGES_COLUMN", "input_frame"]

MESSAGES_COLUMN = "MESSAGES"


def input_frame(
    session: Any,
    requests: Sequence[InferenceRequest],
    *,
    key: str,
    image_location: StageLocation,
    upload_parallel: int,
    chunk_rows: int,
) -> Any:
    """A Snowpark DataFrame of the requests' rows, images uploaded to `image_location`.

    Args:
        session: The Snowpark session.
        requests: The records of one job.
        key: The job's batch key (names the temporary table of a large input).
        image_location: Where local images are uploaded.
        upload_parallel: Threads per PUT.
        chunk_rows: Rows per statement; more go through a temporary table.
    """
    local = sorted({image.path for r in requests for image in r.images if image.path})
    uploaded: dict[Path, str] = {}
    if local:
        uploader = StageUploader(session, image_location, parallel=upload_parallel)
        uploaded = uploader.upload((path, "") for path in local).stage_paths

    def image_url(ref: ImageRef) -> str:
        if ref.stage_path is not None:
            return ref.stage_path
        if ref.url is not None:
            return ref.url
        if ref.path is not None:
            return uploaded[ref.path]
        encoded = base64.b64encode(ref.read_bytes()).decode()
        return f"data:{ref.resolved_media_type};base64,{encoded}"

    schema = [RECORD_ID_COLUMN, MESSAGES_COLUMN]
    rows = (
        (r.record_id, json.dumps([m.to_openai(image_url=image_url) for m in r.messages]))
        for r in requests
    )
    return _dataframe(session, rows, schema, len(requests), key, chunk_rows)


def _dataframe(
    session: Any,
    rows: Iterable[tuple[Any, ...]],
    schema: list[str],
    n: int,
    key: str,
    size: int,
) -> Any:
    if n <= size:
        return session.create_dataframe(list(rows), schema=schema)
    # 100k+ rows: append chunks to a temporary table so no single statement (or local
    # list) has to hold every prompt at once.
    table = f"MEDBATCH_INPUT_{key.upper()}"
    chunk: list[tuple[Any, ...]] = []
    first = True
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            _append(session, chunk, schema, table, first)
            chunk, first = [], False
    if chunk:
        _append(session, chunk, schema, table, first)
    return session.table(table)


def _append(
    session: Any, chunk: list[tuple[Any, ...]], schema: list[str], table: str, first: bool
) -> None:
    frame = session.create_dataframe(chunk, schema=schema)
    frame.write.save_as_table(
        table, mode="overwrite" if first else "append", table_type="temporary"
    )
