"""OpenAI Batch API files: send a run through any batch API and bring the answers back.

```
requests ──write_batch_input──▶ batch_input.jsonl   one line per record: {"custom_id": record
                                                     id, "method": "POST", "url":
                                                     "/v1/chat/completions", "body": {…}}
        (upload, create the batch, wait, download: OpenAI, Azure, vLLM's run_batch, …)
batch_output.jsonl (+ errors.jsonl) ──read_batch_output──▶ InferenceResponse per record
        ──▶ ReplayRunner(responses) ──▶ classify(dataset, task, runner)   parsed, evaluated
```

Images travel inside the body as base64 data URLs, so the files are large: inputs are split
at `max_requests_per_file` lines (OpenAI: 50,000) or `max_file_bytes` (OpenAI: 200 MB).
Failed lines (`error` set, or a status other than 200) become per-record `request_failed`
errors; records of the input that have no output line become `missing_response` errors.

Example:
    ```python
    requests = build_requests(dataset, task, constrained=True)
    export = write_batch_input(requests, "batch/in.jsonl", model="gpt-4.1-mini")
    # … run the batch, download batch/out.jsonl …
    responses = read_batch_output("batch/out.jsonl", input_paths=export.files)
    runner = ReplayRunner([*export.failures, *responses], model_id="gpt-4.1-mini")
    result = classify(dataset, task, runner, constrained=True)
    ```
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from medbatch.datasets.base import Dataset
from medbatch.errors import ConfigError, ImageLoadError
from medbatch.openai_wire import (
    chat_completion_body,
    completion_to_response,
    status_may_pass_later,
)
from medbatch.records import (
    GenerationParams,
    InferenceRequest,
    InferenceResponse,
    LabelConstraint,
)
from medbatch.runners.openai import OpenAICompatibleRunnerConfig
from medbatch.tasks.base import Task

__all__ = [
    "BatchExport",
    "build_requests",
    "constraint_from_body",
    "read_batch_output",
    "write_batch_input",
]

logger = logging.getLogger(__name__)

OPENAI_MAX_REQUESTS_PER_FILE = 50_000
OPENAI_MAX_FILE_BYTES = 200 * 1024 * 1024


@dataclass
class BatchExport:
    """What `write_batch_input` wrote.

    Attributes:
        files: The input files, in order (one unless the requests had to be split).
        count: Requests written.
        failures: Records that could not be exported (unreadable image), as error
            responses: pass them to the `ReplayRunner` with the imported answers.
    """

    files: list[Path] = field(default_factory=list)
    count: int = 0
    failures: list[InferenceResponse] = field(default_factory=list)


def build_requests(
    dataset: Dataset,
    task: Task,
    *,
    params: GenerationParams | None = None,
    constrained: bool | LabelConstraint = False,
) -> Iterator[InferenceRequest]:
    """The requests `classify` would send for `dataset`, for exporting.

    Uses the same prompt, parameters and constraint choice as `classify(..., constrained=)`
    so that the answers come back to a run with matching fingerprints.
    """
    constraint: LabelConstraint | None = None
    if constrained:
        constraint = constrained if isinstance(constrained, LabelConstraint) else task.constraint()
        task = task.for_constrained_decoding()
    for record in dataset:
        yield InferenceRequest(
            record_id=record.id,
            messages=task.prompt.render(record),
            params=params or task.params,
            constraint=constraint,
        )


def write_batch_input(
    requests: Iterable[InferenceRequest],
    path: str | Path,
    *,
    url: str = "/v1/chat/completions",
    max_requests_per_file: int = OPENAI_MAX_REQUESTS_PER_FILE,
    max_file_bytes: int = OPENAI_MAX_FILE_BYTES,
    **settings: Any,
) -> BatchExport:
    """Write OpenAI Batch API input JSONL, one line per request.

    Args:
        requests: The requests; record ids become `custom_id`s (they must be unique).
        path: The file to write. If the requests need several files, they are
            `<stem>-0001<suffix>`, `<stem>-0002<suffix>`, ….
        url: The endpoint in each line (Azure OpenAI's v1 batches use
            `/chat/completions`).
        max_requests_per_file: Start a new file after this many lines.
        max_file_bytes: Start a new file before one grows past this size.
        **settings: `OpenAICompatibleRunnerConfig` fields that shape the body: `model`
            (required), `structured_outputs`, `logprobs`, `top_logprobs`,
            `max_image_side`, `max_tokens_field`, `extra_body`.

    Returns:
        The files written, the count, and the records that could not be exported.

    Raises:
        ValueError: Two requests share a record id.
        ConfigError: Invalid settings (e.g. no `model`).
    """
    config = OpenAICompatibleRunnerConfig(base_url="https://batch.invalid/v1", **settings)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    export = BatchExport()
    seen: set[str] = set()
    writer = _ShardWriter(path, max_requests_per_file, max_file_bytes)
    try:
        for request in requests:
            if request.record_id in seen:
                raise ValueError(f"duplicate request for record {request.record_id!r}")
            seen.add(request.record_id)
            try:
                body = chat_completion_body(request, config)
            except ImageLoadError as exc:
                export.failures.append(
                    InferenceResponse.failure(
                        request.record_id, "image_error", str(exc), retryable=False
                    )
                )
                continue
            line = {"custom_id": request.record_id, "method": "POST", "url": url, "body": body}
            writer.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
            export.count += 1
    finally:
        writer.close()
    export.files = writer.finish()
    return export


class _ShardWriter:
    """Writes lines to `path`, or to numbered shards once one file is not enough."""

    def __init__(self, path: Path, max_lines: int, max_bytes: int) -> None:
        if max_lines < 1 or max_bytes < 1:
            raise ConfigError("max_requests_per_file and max_file_bytes must be positive")
        self.path = path
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.shards: list[Path] = []
        self.handle: IO[bytes] | None = None
        self.lines = 0
        self.size = 0

    def _shard_path(self, number: int) -> Path:
        return self.path.with_name(f"{self.path.stem}-{number:04d}{self.path.suffix}")

    def write(self, line: str) -> None:
        data = line.encode("utf-8")
        if len(data) > self.max_bytes:
            raise ConfigError(
                f"one request is {len(data)} bytes, more than max_file_bytes={self.max_bytes}; "
                "shrink the images (max_image_side)"
            )
        full = self.lines >= self.max_lines or self.size + len(data) > self.max_bytes
        if self.handle is None or full:
            self.close()
            self.shards.append(self._shard_path(len(self.shards) + 1))
            self.handle = self.shards[-1].open("wb")
            self.lines = self.size = 0
        self.handle.write(data)
        self.lines += 1
        self.size += len(data)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def finish(self) -> list[Path]:
        """Name a single shard `path` itself; return the files."""
        if not self.shards:
            self.path.write_bytes(b"")
            return [self.path]
        if len(self.shards) == 1:
            self.shards[0].replace(self.path)
            return [self.path]
        return self.shards


def constraint_from_body(body: Mapping[str, Any]) -> LabelConstraint | None:
    """The label constraint a chat-completions body carries, if any.

    Read from vLLM's `structured_outputs` (`choice` or a `json` schema) or a
    `response_format` json schema whose `label` property is an enum (choice mode when
    `label` is its only property, as `to_openai_response_format` writes it).
    """
    structured = body.get("structured_outputs")
    if isinstance(structured, dict):
        if isinstance(structured.get("choice"), list) and structured["choice"]:
            return LabelConstraint(labels=tuple(structured["choice"]), mode="choice")
        if isinstance(structured.get("json"), dict):
            return _from_schema(structured["json"], single_field_is_choice=False)
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            return _from_schema(schema, single_field_is_choice=True)
    return None


def _from_schema(
    schema: Mapping[str, Any], *, single_field_is_choice: bool
) -> LabelConstraint | None:
    properties = schema.get("properties") or {}
    labels = (properties.get("label") or {}).get("enum")
    if not isinstance(labels, list) or not labels:
        return None
    if single_field_is_choice and set(properties) == {"label"}:
        return LabelConstraint(labels=tuple(labels), mode="choice")
    return LabelConstraint(labels=tuple(labels), mode="json", reasoning="reasoning" in properties)


def read_batch_output(
    paths: str | Path | Sequence[str | Path],
    *,
    input_paths: str | Path | Sequence[str | Path] | None = None,
    structured_outputs: Literal["response_format", "vllm", "none"] | None = None,
) -> Iterator[InferenceResponse]:
    """Read OpenAI Batch API output JSONL (and error files) as one response per record.

    Args:
        paths: Output file(s), and the batch's error file(s) if any.
        input_paths: The input file(s) that were submitted. With them, each answer is read
            with its request's constraint (choice answers unwrapped from JSON, label scores
            from logprobs), and every input record without an output line becomes a
            `missing_response` error.
        structured_outputs: How constraints were sent; guessed from each input body when
            None.

    Yields:
        One response per `custom_id` (the first line wins if a batch repeated one).

    Raises:
        ConfigError: A file cannot be read.
    """
    expected: dict[str, dict[str, Any]] = {}
    for number, line in _lines(input_paths):
        custom_id = line.get("custom_id")
        body = line.get("body")
        if isinstance(custom_id, str) and isinstance(body, dict):
            expected[custom_id] = body
        else:
            logger.warning("batch input line %s has no custom_id/body; ignored", number)
    answered: set[str] = set()
    for number, line in _lines(paths):
        custom_id = line.get("custom_id")
        if not isinstance(custom_id, str):
            logger.warning("batch output line %s has no custom_id; ignored", number)
            continue
        if custom_id in answered:
            logger.warning(
                "batch output repeats record %r (line %s); kept the first", custom_id, number
            )
            continue
        if expected and custom_id not in expected:
            logger.warning("batch output line %s answers unknown record %r", number, custom_id)
        answered.add(custom_id)
        yield _line_to_response(custom_id, line, expected.get(custom_id), structured_outputs)
    for custom_id in expected:
        if custom_id not in answered:
            yield InferenceResponse.failure(
                custom_id, "missing_response", "the batch output has no line for this record"
            )


def _line_to_response(
    custom_id: str,
    line: dict[str, Any],
    body: dict[str, Any] | None,
    structured_outputs: Literal["response_format", "vllm", "none"] | None,
) -> InferenceResponse:
    metadata: dict[str, Any] = {}
    if isinstance(line.get("id"), str):
        metadata["batch_line_id"] = line["id"]
    error = line.get("error")
    if error:
        code = error.get("code") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else str(error)
        return InferenceResponse.failure(
            custom_id,
            "request_failed",
            f"batch error {code or ''}: {_short(message)}".replace("  ", " "),
            metadata=metadata,
        )
    response = line.get("response")
    if not isinstance(response, dict):
        return InferenceResponse.failure(
            custom_id, "request_failed", "the batch line has neither response nor error"
        )
    status = response.get("status_code")
    payload = response.get("body")
    if status != 200:
        reason = payload.get("error") if isinstance(payload, dict) else payload
        if isinstance(reason, dict):
            reason = reason.get("message")
        return InferenceResponse.failure(
            custom_id,
            "request_failed",
            f"HTTP {status}: {_short(reason)}",
            retryable=status_may_pass_later(status),
            metadata={**metadata, "status": status},
        )
    constraint = constraint_from_body(body) if body is not None else None
    style = structured_outputs
    if style is None:
        style = "vllm" if body is not None and "structured_outputs" in body else "response_format"
    return completion_to_response(
        custom_id, payload, constraint=constraint, structured_outputs=style, metadata=metadata
    )


def _short(value: Any, limit: int = 200) -> str:
    text = " ".join(str(value or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _lines(
    paths: str | Path | Sequence[str | Path] | None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    if paths is None:
        return
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    for item in items:
        path = Path(item)
        try:
            handle = path.open(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read batch file {path}: {exc}") from exc
        with handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    line = json.loads(raw)
                except json.JSONDecodeError:
                    # A download cut short ends in half a line: that record counts as missing.
                    logger.warning("%s:%d is not JSON; ignored", path, number)
                    continue
                if isinstance(line, dict):
                    yield f"{path}:{number}", line
