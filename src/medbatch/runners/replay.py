"""`ReplayRunner`: answers from a recorded JSONL of responses.

Useful to re-parse a run offline with a better parser, to test pipelines without a model,
and to import answers produced elsewhere (another tool, a batch API).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from pydantic import Field, ValidationError

from medbatch.errors import ConfigError
from medbatch.records import InferenceRequest, InferenceResponse
from medbatch.runners.base import BatchRunner, RunnerCapabilities, RunnerConfig

__all__ = ["ReplayRunner", "ReplayRunnerConfig", "read_recorded_responses"]


_Recordings: TypeAlias = str | Path | Iterable[InferenceResponse] | Mapping[str, str]


class ReplayRunnerConfig(RunnerConfig):
    """Settings of `ReplayRunner`."""

    path: Path = Field(description="JSONL file: one recorded response per line, by record_id.")
    model_id: str = Field(default="replay", description="Model id to report in results.")


def read_recorded_responses(path: str | Path) -> Iterator[InferenceResponse]:
    """Read a JSONL of responses.

    Each line is an `InferenceResponse` object (at least `record_id` and `text`). A line
    that is not valid JSON or lacks `record_id` raises `ConfigError` naming the line.
    """
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read recorded responses {path}: {exc}") from exc
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield InferenceResponse.model_validate(json.loads(line))
            except (json.JSONDecodeError, ValidationError) as exc:
                raise ConfigError(f"{path}:{number}: not a recorded response: {exc}") from exc


class ReplayRunner(BatchRunner):
    """Answers each request with the recorded response of the same record id.

    Args:
        responses: A `ReplayRunnerConfig`, a JSONL path, or responses (or
            `{record_id: text}`) in memory. Recordings in memory are not settings, so this
            runner takes them in place of a config.
        model_id: The model the recordings came from (default `replay`).

    Ids without a recording are answered with `RecordError(kind="missing_recording")`.
    """

    name = "replay"
    config_class = ReplayRunnerConfig
    batch_size = 256
    capabilities = RunnerCapabilities(
        batching=True, image_inputs=frozenset({"bytes", "url", "stage"})
    )

    def __init__(
        self,
        responses: ReplayRunnerConfig
        | str
        | Path
        | Iterable[InferenceResponse]
        | Mapping[str, str],
        /,
        *,
        model_id: str | None = None,
    ) -> None:
        if isinstance(responses, ReplayRunnerConfig):
            config = responses
            if model_id is not None:
                config = self._settings(config, {"model_id": model_id})
            responses, model_id = config.path, config.model_id
        self.model_id = model_id or "replay"
        self._responses: dict[str, InferenceResponse] = {}
        items: Iterable[InferenceResponse]
        if isinstance(responses, (str, Path)):
            self.source: str = str(responses)
            items = read_recorded_responses(responses)
        elif isinstance(responses, Mapping):
            self.source = "memory"
            items = (InferenceResponse(record_id=k, text=v) for k, v in responses.items())
        else:
            self.source = "memory"
            items = responses
        for response in items:
            self._responses[response.record_id] = response

    @classmethod
    def from_config(cls, config: RunnerConfig) -> ReplayRunner:
        """Build from a `ReplayRunnerConfig` (its `path` is the recorded responses)."""
        if not isinstance(config, ReplayRunnerConfig):
            return super().from_config(config)  # raises the one-line ConfigError
        return cls(config)

    def describe(self) -> dict[str, Any]:
        """Runner facts for the manifest."""
        return {**super().describe(), "source": self.source}

    def _run_batch(self, requests: Sequence[InferenceRequest]) -> Iterable[InferenceResponse]:
        for request in requests:
            recorded = self._responses.get(request.record_id)
            if recorded is None:
                yield InferenceResponse.failure(
                    request.record_id,
                    "missing_recording",
                    f"no recorded response for record {request.record_id!r}",
                    retryable=False,
                )
            else:
                yield recorded
